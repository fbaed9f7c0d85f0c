"""MTA-STS (RFC 8461): a recipient domain's published demand for verified TLS.

A domain D that publishes TXT ``_mta-sts.D`` = ``v=STSv1; id=...`` serves its
policy at ``https://mta-sts.D/.well-known/mta-sts.txt``. The policy says
which MX host names are genuine and whether senders must refuse anything less
than STARTTLS with a certificate valid for those names (``enforce``), only
report (``testing``), or stop applying a former policy (``none``).

``MtaSts.policy(domain)`` gives the policy to apply, from a cache kept in
twin.db (table ``mta_sts_policies``) so that one unreachable web server, or a
TXT record an attacker strips from the path, does not switch verification off
while an earlier policy is still within its max_age (§5.1). Everything read
from the network is bounded: the TXT record (dnsq.MAX_TXT), the policy body
(``MAX_POLICY``), the number of mx lines (``MAX_MX``), the fetch time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import ssl
import time
from dataclasses import dataclass

import httpx

from core.db import Database
from core.outbound.dnsq import DnsTemporary, OutboundDns, is_ip

log = logging.getLogger("twin.outbound")

MIGRATIONS = [
    """
    CREATE TABLE mta_sts_policies (
        domain   TEXT PRIMARY KEY,
        id       TEXT NOT NULL,
        mode     TEXT NOT NULL,
        mx       TEXT NOT NULL,
        max_age  INTEGER NOT NULL,
        fetched  REAL NOT NULL
    );
    """,
]
MAX_POLICY = 64 * 1024  # §3.3: "senders SHOULD impose a limit on the response size" (64 KiB)
MAX_AGE = 31557600  # §3.2: max_age "up to 31557600" (about one year)
MAX_MX = 64
FETCH_TIMEOUT = 30.0  # §3.3: a timeout, 60 s suggested; we retry from the queue anyway
_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_MODES = ("enforce", "testing", "none")


class PolicyError(ValueError):
    """A policy (or TXT record) that does not parse: as if the domain had none."""


@dataclass(frozen=True)
class Policy:
    domain: str
    id: str
    mode: str  # enforce | testing | none
    mx: tuple[str, ...]
    max_age: int
    fetched: float

    def expired(self, now: float) -> bool:
        return now >= self.fetched + self.max_age

    def allows(self, host: str) -> bool:
        return any(mx_matches(pattern, host) for pattern in self.mx)


def parse_txt(records: list[str]) -> str | None:
    """The policy id from the ``_mta-sts`` TXT records; None when there is no valid one.

    §3.1: records not starting with ``v=STSv1;`` are discarded; if not exactly one is
    left, or it does not parse, the domain has no available policy."""
    sts = [r for r in records if r.startswith("v=STSv1;") or r == "v=STSv1"]
    if len(sts) != 1:
        return None
    fields: dict[str, str] = {}
    for part in sts[0].split(";"):
        key, sep, value = part.strip().partition("=")
        if not part.strip():
            continue
        if not sep:
            return None
        fields.setdefault(key.strip(), value.strip())
    ident = fields.get("id", "")
    return ident if _ID.fullmatch(ident) else None


def parse_policy(domain: str, ident: str, text: str, now: float) -> Policy:
    """Parse a policy body (§3.2); raises PolicyError. A max_age above a year is clamped."""
    fields: dict[str, str] = {}
    mx: list[str] = []
    for raw in text.splitlines():  # §3.2: lines end with CRLF, LF tolerated
        line = raw.strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise PolicyError(f"not a 'key: value' line: {line[:60]!r}")
        key, value = key.strip(), value.strip()
        if key == "mx":
            if len(mx) >= MAX_MX:
                raise PolicyError(f"more than {MAX_MX} mx lines")
            if not _valid_pattern(value):
                raise PolicyError(f"bad mx pattern {value[:60]!r}")
            mx.append(value.lower().rstrip("."))
        else:
            fields.setdefault(key, value)  # unknown keys are ignored (§3.2)
    if fields.get("version") != "STSv1":
        raise PolicyError("version is not STSv1")
    mode = fields.get("mode", "")
    if mode not in _MODES:
        raise PolicyError(f"mode {mode[:20]!r} is not enforce, testing or none")
    age = fields.get("max_age", "")
    if not age.isdigit() or len(age) > 10:
        raise PolicyError(f"max_age {age[:20]!r} is not a plain integer of at most 10 digits")
    if mode != "none" and not mx:
        raise PolicyError("no mx line")
    return Policy(domain, ident, mode, tuple(mx), min(int(age), MAX_AGE), now)


def _valid_pattern(pattern: str) -> bool:
    name = pattern[2:] if pattern.startswith("*.") else pattern
    labels = name.rstrip(".").split(".")
    return (0 < len(name) <= 253 and len(labels) >= 2
            and all(re.fullmatch(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?", label)
                    for label in labels))


def mx_matches(pattern: str, host: str) -> bool:
    """§4.1: an exact name, or ``*.example.com`` matching exactly one more leftmost label
    (``mail.example.com``, not ``example.com`` nor ``a.b.example.com``); case-insensitive."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        first, dot, rest = host.partition(".")
        return bool(first) and bool(dot) and rest == pattern[2:]
    return host == pattern


class MtaSts:
    """The policy source: TXT lookup, HTTPS fetch, cache in twin.db."""

    def __init__(self, db: Database, dns: OutboundDns, ca: ssl.SSLContext) -> None:
        self.db, self.dns, self.ca = db, dns, ca
        db.migrate("mta_sts", MIGRATIONS)
        # Port of the policy servers: always 443 (§3.3); only tests change it, because
        # they cannot count on binding 443 on loopback.
        self.https_port = 443

    async def policy(self, domain: str) -> Policy | None:
        """The policy to apply to ``domain`` now, or None (no MTA-STS).

        The TXT record is asked on every delivery (DNS caches it): a new id means a new
        policy to fetch (§5.1), the same id means the cached one is still current."""
        domain = domain.lower().rstrip(".")
        if is_ip(domain) or "." not in domain:
            return None
        now = time.time()
        cached = await self._cached(domain)
        if cached is not None and cached.expired(now):
            cached = None
        try:
            ident = parse_txt(await self.dns.txt(f"_mta-sts.{domain}"))
        except DnsTemporary as exc:
            log.info("MTA-STS: TXT _mta-sts.%s failed (%s); %s", domain, exc,
                     "using the cached policy" if cached else "no policy")
            return _effective(cached)
        if ident is None:
            # §5.1: a cached, unexpired policy still applies when the record is gone
            # (or stripped by an attacker); it lapses at its max_age.
            return _effective(cached)
        if cached is not None and cached.id == ident:
            return _effective(cached)
        try:
            fresh = parse_policy(domain, ident, await self._fetch(domain), now)
        except (PolicyError, httpx.HTTPError, OSError, ssl.SSLError, DnsTemporary,
                UnicodeDecodeError) as exc:
            log.warning("MTA-STS: cannot use the policy of %s (id %s): %s%s", domain, ident,
                        exc, "; keeping the cached one" if cached else "")
            return _effective(cached)
        await self._store(fresh)
        log.info("MTA-STS: policy of %s id %s: mode %s, mx %s, max_age %d", domain, ident,
                 fresh.mode, ",".join(fresh.mx), fresh.max_age)
        return _effective(fresh)

    async def _fetch(self, domain: str) -> str:
        """GET the policy (§3.3): verified HTTPS, no redirects, 200 and text/plain only,
        at most MAX_POLICY bytes, FETCH_TIMEOUT in all."""
        host = f"mta-sts.{domain}"
        addresses = await self.dns.addresses(host)
        if not addresses:
            raise PolicyError(f"{host} has no address")
        address = addresses[0]
        netloc = f"[{address}]" if ":" in address else address
        url = f"https://{netloc}:{self.https_port}/.well-known/mta-sts.txt"
        body = bytearray()
        # connect to the address our resolver found, verify the certificate for the name
        async with (asyncio.timeout(FETCH_TIMEOUT),
                    httpx.AsyncClient(verify=self.ca, timeout=FETCH_TIMEOUT, trust_env=False,
                                      follow_redirects=False) as client,
                    client.stream("GET", url, headers={"Host": host},
                                  extensions={"sni_hostname": host}) as response):
            if response.status_code != 200:  # a 3xx too: §3.3, redirects are not followed
                raise PolicyError(f"{host} answered HTTP {response.status_code}")
            ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "text/plain":  # §3.2: the policy is served as text/plain
                raise PolicyError(f"{host} served {ctype[:40]!r}, not text/plain")
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_POLICY:
                    raise PolicyError(f"the policy of {domain} is over {MAX_POLICY} bytes")
        return body.decode("utf-8")

    async def _cached(self, domain: str) -> Policy | None:
        row = await self.db.run(lambda c: c.execute(
            "SELECT id, mode, mx, max_age, fetched FROM mta_sts_policies WHERE domain = ?",
            (domain,)).fetchone())
        if row is None:
            return None
        ident, mode, mx, max_age, fetched = row
        return Policy(domain, ident, mode, tuple(json.loads(mx)), int(max_age), float(fetched))

    async def _store(self, policy: Policy) -> None:
        def write(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR REPLACE INTO mta_sts_policies VALUES (?, ?, ?, ?, ?, ?)",
                      (policy.domain, policy.id, policy.mode, json.dumps(policy.mx),
                       policy.max_age, policy.fetched))
        await self.db.run(write)


def _effective(policy: Policy | None) -> Policy | None:
    """A policy in mode none is kept in the cache (it replaces an older one) but not applied."""
    return None if policy is None or policy.mode == "none" else policy
