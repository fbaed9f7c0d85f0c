"""One delivery attempt to the legacy world: smarthost or the domain's MX hosts.

Returns a verdict per recipient instead of raising, because one SMTP
transaction can accept some recipients and refuse others, and the queue must
retry only the temporary failures. A reply code of 5xx is permanent; anything
else (4xx, network errors, timeouts, no MX reachable) is temporary.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiosmtplib
import dns.asyncresolver
import dns.exception
import dns.resolver

log = logging.getLogger("twin.outbound")


@dataclass(frozen=True)
class Verdict:
    ok: bool
    permanent: bool
    status: str  # enhanced status code for a bounce
    detail: str


OK = Verdict(True, False, "2.0.0", "delivered")


@dataclass(frozen=True)
class Relay:
    """How to reach the legacy world (the smtp.smarthost* keys)."""

    host: str = ""
    port: int = 25
    tls: str = "starttls"  # starttls | tls | none
    user: str = ""
    password: str = ""
    verify: bool = True
    mx_port: int = 25
    helo: str = "localhost"
    timeout: float = 60.0

    @classmethod
    def parse(cls, hostport: str, **kwargs: object) -> Relay:
        host, port = "", 25
        if hostport:
            host, _, p = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
            port = int(p) if p else 587
        return cls(host=host.strip("[]"), port=port, **kwargs)  # type: ignore[arg-type]


def _temporary(detail: str) -> Verdict:
    return Verdict(False, False, "4.4.1", detail)


def _from_reply(code: int, message: str) -> Verdict:
    text = f"{code} {message}".strip()
    if 200 <= code < 300:
        return OK
    return Verdict(False, code >= 500, "5.0.0" if code >= 500 else "4.0.0", text)


# (domain, lifetime) -> [(preference, exchange)]; [] when the domain has no MX
# records; LookupError when it does not exist; dns.exception.DNSException: try later.
MxResolver = Callable[[str, float], Awaitable[list[tuple[int, str]]]]


async def dns_mx(domain: str, lifetime: float) -> list[tuple[int, str]]:
    """The domain's MX records from the system's DNS servers (dnspython)."""
    resolver = dns.asyncresolver.Resolver()
    resolver.lifetime = lifetime
    try:
        answer = await resolver.resolve(domain, "MX")
    except dns.resolver.NXDOMAIN:
        raise LookupError(f"domain {domain} does not exist") from None
    except dns.resolver.NoAnswer:
        return []
    return [(int(r.preference), str(r.exchange).rstrip(".")) for r in answer]


async def mx_hosts(domain: str, lifetime: float, resolve: MxResolver = dns_mx) -> list[str]:
    """MX hosts by preference; the domain itself when it has none (RFC 5321 §5.1)."""
    records = sorted(await resolve(domain, lifetime))
    if not records:
        return [domain]
    hosts = [exchange.rstrip(".") for _, exchange in records]
    if hosts == [""]:  # null MX, RFC 7505: this domain takes no mail
        raise LookupError(f"domain {domain} accepts no mail (null MX)")
    return hosts


async def send(relay: Relay, mail_from: str, rcpts: Sequence[str],
               message: bytes, resolve: MxResolver = dns_mx) -> dict[str, Verdict]:
    """Try once; every recipient gets a verdict. ``resolve`` finds MX records."""
    if relay.host:
        return await _attempt(relay, relay.host, relay.port, mail_from, rcpts, message,
                              smarthost=True)
    by_domain: dict[str, list[str]] = {}
    for rcpt in rcpts:
        by_domain.setdefault(rcpt.rpartition("@")[2].lower(), []).append(rcpt)
    verdicts: dict[str, Verdict] = {}
    for domain, group in by_domain.items():
        try:
            hosts = await mx_hosts(domain, relay.timeout, resolve)
        except LookupError as exc:
            verdicts.update({r: Verdict(False, True, "5.1.2", str(exc)) for r in group})
            continue
        except dns.exception.DNSException as exc:
            verdicts.update({r: _temporary(f"DNS lookup of {domain} failed: {exc}")
                             for r in group})
            continue
        result: dict[str, Verdict] = {}
        for host in hosts[:5]:
            result = await _attempt(relay, host, relay.mx_port, mail_from, group, message,
                                    smarthost=False)
            if any(v.ok or v.permanent for v in result.values()):
                break
        verdicts.update(result)
    return verdicts


def _tls_context(relay: Relay, smarthost: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if not smarthost or not relay.verify:  # MX STARTTLS is opportunistic (RFC 3207 §4.1)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _attempt(relay: Relay, host: str, port: int, mail_from: str, rcpts: Sequence[str],
                   message: bytes, *, smarthost: bool) -> dict[str, Verdict]:
    tls = relay.tls if smarthost else "starttls"
    client = aiosmtplib.SMTP(
        hostname=host, port=port, local_hostname=relay.helo, timeout=relay.timeout,
        use_tls=tls == "tls",
        start_tls=True if (tls == "starttls" and smarthost) else (None if tls != "none" else False),
        tls_context=_tls_context(relay, smarthost) if tls != "none" else None,
        validate_certs=smarthost and relay.verify,
    )
    try:
        await client.connect()
        if smarthost and relay.user:
            await client.login(relay.user, relay.password)
        refused, _ = await client.sendmail(mail_from, list(rcpts), message)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        return {r.recipient: _from_reply(r.code, r.message) for r in exc.recipients}
    except aiosmtplib.SMTPAuthenticationError as exc:
        log.warning("smarthost %s:%d refused our login: %s", host, port, exc.code)
        return {r: _temporary(f"smarthost refused login ({exc.code})") for r in rcpts}
    except aiosmtplib.SMTPResponseException as exc:
        return {r: _from_reply(exc.code, exc.message) for r in rcpts}
    except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
        return {r: _temporary(f"{host}:{port}: {exc}") for r in rcpts}
    finally:
        if client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
    out = {r: OK for r in rcpts}
    for rcpt, reply in refused.items():
        out[rcpt] = _from_reply(reply.code, reply.message)
    return out
