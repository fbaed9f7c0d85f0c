"""``twin doctor``: is the domain's DNS what ``twin dns`` asks for, and does
the twin answer where DNS sends clients?

Each record of ``core.zone.plan`` is looked up through a real resolver (the
system's, or ``--nameserver``) and judged record by record: ``ok``,
``missing`` or ``wrong`` with what was found. Judging is by meaning, not
byte equality, where people legitimately differ: an SPF record may list more
senders as long as it names the MX and ends in ``-all``/``~all``; DMARC may
be ``quarantine`` as well as ``reject``. Then the listeners are tried at the
address the domain resolves to: an SMTP banner, an IMAP greeting over TLS,
the HTTPS health answer. Every query and connection has a deadline, so a
broken resolver or a firewall makes the doctor slow by seconds, not hang.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

from core.dnsresolver import async_resolver
from core.zone import Record

TIMEOUT = 5.0


@dataclass(frozen=True)
class Finding:
    """The verdict on one record or listener."""

    what: str
    status: str  # "ok" | "missing" | "wrong" | "unreachable"
    detail: str
    required: bool = True

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, object]:
        return {"what": self.what, "status": self.status, "detail": self.detail,
                "required": self.required}


def resolver(nameserver: str | None) -> dns.asyncresolver.Resolver:
    """The system's resolver, or one that asks only ``HOST[:PORT]``."""
    r = async_resolver(nameserver or "")
    r.lifetime = TIMEOUT
    return r


async def _answers(r: dns.asyncresolver.Resolver, name: str, rtype: str) -> list[str] | None:
    """The records' texts; [] when the name has none of that type; None when
    the lookup itself failed (timeout, SERVFAIL)."""
    try:
        answer = await r.resolve(name, rtype)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException:
        return None
    out = []
    for rdata in answer:
        if rtype == "TXT":
            out.append(b"".join(rdata.strings).decode("utf-8", "replace"))
        else:
            out.append(rdata.to_text().lower())
    return out


def _tags(value: str) -> dict[str, str]:
    """``k=v; k=v`` (DKIM, DMARC, TLSRPT) as a dict, keys lower-cased."""
    tags = {}
    for part in value.split(";"):
        key, sep, val = part.partition("=")
        if sep:
            tags[key.strip().lower()] = "".join(val.split())
    return tags


def _judge_txt(record: Record, found: list[str]) -> tuple[str, str]:
    expected = record.value
    kind = expected.split(";", 1)[0].split(" ", 1)[0].lower()  # v=spf1, v=dkim1, v=dmarc1
    mine = [f for f in found if f.lower().replace(" ", "").startswith(kind.replace(" ", ""))]
    if not mine:
        return "missing", f"no {kind} record (found: {found or 'nothing'})"
    if len(mine) > 1 and kind in ("v=spf1", "v=dmarc1"):
        return "wrong", f"{len(mine)} {kind} records: receivers treat that as none"
    value = mine[0]
    if kind == "v=spf1":
        terms = value.lower().split()
        if "mx" not in terms and "+mx" not in terms:
            return "wrong", f"{value!r} does not let the MX host send"
        if terms[-1] not in ("-all", "~all"):
            return "wrong", f"{value!r} does not end in -all or ~all: anyone may send"
        return "ok", value
    if kind == "v=dkim1":
        if any(_tags(v).get("p") == _tags(expected)["p"] for v in mine):
            return "ok", "the twin's public key"
        return "wrong", "a DKIM key other than the twin's: its signatures will fail"
    if kind == "v=dmarc1":
        policy = _tags(value).get("p")
        if policy in ("reject", "quarantine"):
            return "ok", value
        return "wrong", f"p={policy}: forgeries of the domain are delivered anyway"
    return "ok", value


async def check_record(r: dns.asyncresolver.Resolver, record: Record) -> Finding:
    """Look ``record`` up and judge it."""
    what = f"{record.type} {record.name}"
    rtype = "A" if record.type == "CNAME" else record.type  # a CNAME or an A both do
    found = await _answers(r, record.name, rtype)
    if found is None:
        return Finding(what, "unreachable", "the DNS lookup failed or timed out",
                       record.required)
    if record.type == "TXT":
        status, detail = _judge_txt(record, found)
    elif not found:
        status, detail = "missing", "no such record"
    elif record.type == "MX":
        host = record.value.split()[-1].lower()
        exchanges = [f.split()[-1] for f in found]
        status, detail = ("ok", host) if host in exchanges else \
            ("wrong", f"MX points to {', '.join(exchanges)}, not {host}")
    elif record.type == "SRV":
        want = record.value.split()[-2:]
        got = [f.split()[-2:] for f in found]
        status, detail = ("ok", " ".join(want)) if want in got else \
            ("wrong", f"found {'; '.join(' '.join(g) for g in got)}, want {' '.join(want)}")
    else:  # CNAME, answered as A: it must land where the domain does
        domain_a = await _answers(r, record.value, "A") or []
        status, detail = ("ok", ", ".join(found)) if set(found) & set(domain_a) else \
            ("wrong", f"{', '.join(found)} is not the twin's address {', '.join(domain_a)}")
    return Finding(what, status, detail, record.required)


async def _greeting(host: str, port: int, use_tls: bool, send: bytes | None) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the greeting is the point here
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=ctx if use_tls else None), TIMEOUT)
    try:
        if send:
            writer.write(send)
        return await asyncio.wait_for(reader.readline(), TIMEOUT)
    finally:
        writer.close()


# what a client is sent to, and what it must answer first
LISTENERS = (("SMTP", "smtp.port", False, None, b"220"),
             ("IMAP over TLS", "imap.tls_port", True, None, b"* OK"),
             ("HTTPS", "http.port", True, b"GET /twin/v1/health HTTP/1.0\r\n\r\n", b"HTTP/1."))


async def check_listeners(r: dns.asyncresolver.Resolver, domain: str,
                          ports: dict[str, int]) -> list[Finding]:
    """Connect where the domain's A record points, on each listener's port."""
    addresses = await _answers(r, domain, "A")
    if not addresses:
        return [Finding(f"A {domain}", "missing", "the domain has no address: nobody can "
                        "connect to the twin")]
    host = addresses[0]
    out = [Finding(f"A {domain}", "ok", ", ".join(addresses))]
    for name, key, use_tls, send, expect in LISTENERS:
        what = f"{name} at {host}:{ports[key]}"
        try:
            line = await _greeting(host, ports[key], use_tls, send)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            out.append(Finding(what, "unreachable", f"{type(exc).__name__}: {exc}"))
            continue
        good = line.startswith(expect)
        out.append(Finding(what, "ok" if good else "wrong",
                           line.decode("ascii", "replace").strip()[:120]))
    return out
