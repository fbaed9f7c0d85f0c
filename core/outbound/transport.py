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
import dns.exception

from core.outbound import dane
from core.outbound.dnsq import DnsTemporary, OutboundDns, Tlsa, is_ip
from core.outbound.mtasts import MtaSts, Policy

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


async def mx_hosts(domain: str, lifetime: float, resolve: MxResolver) -> list[str]:
    """MX hosts by preference; the domain itself when it has none (RFC 5321 §5.1)."""
    records = sorted(await resolve(domain, lifetime))
    if not records:
        return [domain]
    hosts = [exchange.rstrip(".") for _, exchange in records]
    if hosts == [""]:  # null MX, RFC 7505: this domain takes no mail
        raise LookupError(f"domain {domain} accepts no mail (null MX)")
    return hosts


@dataclass(frozen=True)
class TlsPolicies:
    """What decides how much TLS a delivery to an MX host must have.

    ``dns`` finds addresses and TLSA records; ``mtasts`` is the MTA-STS policy
    source (None: off); ``verify`` is the context that checks a certificate
    chain and host name against the configured CAs (``smtp.outbound_ca_file``);
    ``dane`` switches DANE off when false."""

    dns: OutboundDns
    mtasts: MtaSts | None
    verify: ssl.SSLContext
    dane: bool = True


@dataclass(frozen=True)
class Plan:
    """The TLS policy that applies to one MX host."""

    kind: str  # dane | mta-sts enforce | mta-sts testing | opportunistic
    tlsa: tuple[Tlsa, ...] = ()
    note: str = ""  # testing mode: what enforce would have refused

    @property
    def requires_tls(self) -> bool:
        return self.kind in ("dane", "mta-sts enforce")


OPPORTUNISTIC = Plan("opportunistic")


def verify_context(ca_file: str = "") -> ssl.SSLContext:
    """Chain and host name checks against ``ca_file``, else certifi's CAs, else the system's."""
    if not ca_file:
        try:
            import certifi

            ca_file = certifi.where()
        except ImportError:
            ca_file = ""
    ctx = ssl.create_default_context(cafile=ca_file or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _unverified_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def send(relay: Relay, mail_from: str, rcpts: Sequence[str],
               message: bytes, resolve: MxResolver,
               policies: TlsPolicies | None = None) -> dict[str, Verdict]:
    """Try once; every recipient gets a verdict. ``resolve`` finds MX records;
    ``policies`` (None: opportunistic STARTTLS only) adds MTA-STS and DANE."""
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
        except (dns.exception.DNSException, DnsTemporary) as exc:
            verdicts.update({r: _temporary(f"DNS lookup of {domain} failed: {exc}")
                             for r in group})
            continue
        verdicts.update(await _to_domain(relay, domain, hosts, mail_from, group, message,
                                         policies))
    return verdicts


async def _to_domain(relay: Relay, domain: str, hosts: list[str], mail_from: str,
                     group: list[str], message: bytes, policies: TlsPolicies | None
                     ) -> dict[str, Verdict]:
    """Try the MX hosts in order until one takes or refuses the message for good."""
    sts = None
    if policies is not None and policies.mtasts is not None:
        sts = await policies.mtasts.policy(domain)
    result: dict[str, Verdict] = {}
    skipped: list[str] = []
    for host in hosts[:5]:
        plan, refusal = await _plan(policies, domain, host, sts)
        if refusal:
            skipped.append(refusal)
            log.warning("delivery to %s via %s: policy %s, not tried: %s", domain, host,
                        plan.kind, refusal)
            continue
        result = await _attempt(relay, host, relay.mx_port, mail_from, group, message,
                                smarthost=False, plan=plan, policies=policies)
        log.info("delivery to %s via %s: policy %s, %s", domain, host, plan.kind,
                 _outcome(result))
        if any(v.ok or v.permanent for v in result.values()):
            break
    if not result:  # every MX host was ruled out by the policy: stay queued
        detail = f"no MX host of {domain} can be used: " + "; ".join(skipped)
        result = {r: Verdict(False, False, "4.7.5", detail[:900]) for r in group}
    return result


def _outcome(result: dict[str, Verdict]) -> str:
    ok = sum(v.ok for v in result.values())
    failed = [v for v in result.values() if not v.ok]
    if not failed:
        return f"delivered ({ok} recipient(s))"
    kind = "refused" if all(v.permanent for v in failed) else "deferred"
    return f"{ok} delivered, {len(failed)} {kind}: {failed[0].detail[:300]}"


async def _plan(policies: TlsPolicies | None, domain: str, host: str, sts: Policy | None
                ) -> tuple[Plan, str]:
    """The policy for ``host`` and, when the host must not be tried, why.

    DANE first: RFC 8461 §2, "senders who implement DANE ... SHOULD NOT apply
    MTA-STS" where authenticated usable TLSA records exist."""
    if policies is None:
        return OPPORTUNISTIC, ""
    if policies.dane and not is_ip(host) and policies.dns.ad_trusted:
        try:
            answer = await policies.dns.tlsa(f"_25._tcp.{host}")
        except DnsTemporary as exc:
            # RFC 7672 §2.1.1: a failed TLSA lookup at a secure host must not become
            # a quiet downgrade to cleartext; this host waits for a later attempt.
            return Plan("dane"), f"TLSA lookup failed: {exc}"
        records = tuple(dane.usable(answer.records)) if answer.authenticated else ()
        if records:
            return Plan("dane", records), ""
        if answer.records and not answer.authenticated:
            log.info("TLSA records of %s are not DNSSEC-authenticated (no AD bit): "
                     "DANE not used", host)
    if sts is None:
        return OPPORTUNISTIC, ""
    if not sts.allows(host):
        why = f"{host} is not among the MTA-STS mx of {domain} ({', '.join(sts.mx)})"
        if sts.mode == "enforce":  # RFC 8461 §4.1: only hosts the policy names
            return Plan("mta-sts enforce"), why
        return Plan("mta-sts testing", note=why), ""
    return Plan(f"mta-sts {sts.mode}"), ""


def _tls_context(relay: Relay, smarthost: bool) -> ssl.SSLContext:
    if not smarthost or not relay.verify:  # MX STARTTLS is opportunistic (RFC 3207 §4.1)
        return _unverified_context()
    return ssl.create_default_context()


async def _attempt(relay: Relay, host: str, port: int, mail_from: str, rcpts: Sequence[str],
                   message: bytes, *, smarthost: bool, plan: Plan = OPPORTUNISTIC,
                   policies: TlsPolicies | None = None) -> dict[str, Verdict]:
    if not smarthost and policies is not None:
        return await _attempt_mx(relay, host, port, mail_from, rcpts, message, plan, policies)
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
    except aiosmtplib.SMTPAuthenticationError as exc:
        log.warning("smarthost %s:%d refused our login: %s", host, port, exc.code)
        return {r: _temporary(f"smarthost refused login ({exc.code})") for r in rcpts}
    except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
        return _failed(exc, host, port, rcpts)
    finally:
        await _quit(client)
    return _accepted(rcpts, refused)


def _failed(exc: Exception, host: str, port: int, rcpts: Sequence[str]) -> dict[str, Verdict]:
    """Each recipient's verdict after a transaction failed with ``exc``."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return {r.recipient: _from_reply(r.code, r.message) for r in exc.recipients}
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return {r: _from_reply(exc.code, exc.message) for r in rcpts}
    return {r: _temporary(f"{host}:{port}: {exc}") for r in rcpts}


def _accepted(rcpts: Sequence[str], refused: dict[str, aiosmtplib.SMTPResponse]
              ) -> dict[str, Verdict]:
    """Each recipient's verdict after DATA was accepted (some RCPTs may have been refused)."""
    out = {r: OK for r in rcpts}
    for rcpt, reply in refused.items():
        out[rcpt] = _from_reply(reply.code, reply.message)
    return out


async def _quit(client: aiosmtplib.SMTP) -> None:
    if client.is_connected:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()


class _PolicyFailure(Exception):
    """The TLS this host must offer was not there: a temporary failure."""


async def _attempt_mx(relay: Relay, host: str, port: int, mail_from: str,
                      rcpts: Sequence[str], message: bytes, plan: Plan,
                      policies: TlsPolicies) -> dict[str, Verdict]:
    """One SMTP transaction with an MX host under ``plan``.

    The connection goes to the address our resolver gives (the configured
    ``smtp.nameserver`` when set); the TLS handshake names ``host`` (SNI, and
    the name the certificate must carry under MTA-STS, RFC 8461 §4.2, and
    DANE-TA, RFC 7672 §3.2.2). Nothing of the message is sent before the
    policy's checks pass."""
    try:
        addresses = await policies.dns.addresses(host)
    except DnsTemporary as exc:
        return {r: _temporary(f"address of {host}: {exc}") for r in rcpts}
    if not addresses:
        return {r: _temporary(f"{host} has no address") for r in rcpts}
    client = aiosmtplib.SMTP(hostname=addresses[0], port=port, local_hostname=relay.helo,
                             timeout=relay.timeout, use_tls=False, start_tls=False)
    try:
        await client.connect()
        await client.ehlo()
        await _starttls(client, host, plan, policies)
        refused, _ = await client.sendmail(mail_from, list(rcpts), message)
    except _PolicyFailure as exc:
        if plan.kind == "mta-sts testing":  # RFC 8461 §5: report, deliver as before
            log.warning("MTA-STS testing: enforce would refuse %s: %s", host, exc)
            return await _attempt_mx(relay, host, port, mail_from, rcpts, message,
                                     OPPORTUNISTIC, policies)
        return {r: Verdict(False, False, "4.7.5", f"{host}: {exc}") for r in rcpts}
    except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
        return _failed(exc, host, port, rcpts)
    finally:
        await _quit(client)
    if plan.note:
        log.warning("MTA-STS testing: enforce would refuse %s: %s", host, plan.note)
    return _accepted(rcpts, refused)


async def _starttls(client: aiosmtplib.SMTP, host: str, plan: Plan,
                    policies: TlsPolicies) -> None:
    """STARTTLS as ``plan`` demands; raises _PolicyFailure when it cannot be met."""
    if not client.supports_extension("starttls"):
        if plan.kind in ("dane", "mta-sts enforce", "mta-sts testing"):
            # RFC 7672 §2.2 and RFC 8461 §4.2: no STARTTLS, no delivery
            raise _PolicyFailure("does not offer STARTTLS")
        return  # opportunistic: cleartext, as before (RFC 3207 §4.1)
    pkix = plan.kind.startswith("mta-sts")
    ctx = policies.verify if pkix else _unverified_context()
    try:
        await client.starttls(server_hostname=host, tls_context=ctx)
    except (ssl.SSLError, ssl.CertificateError) as exc:
        if pkix:  # RFC 8461 §4.2: a chain to a trusted CA, valid for the MX host name
            raise _PolicyFailure(f"certificate not valid for {host}: {exc}") from exc
        raise
    except aiosmtplib.SMTPConnectError as exc:
        if pkix and isinstance(exc.__cause__, ssl.SSLError | ssl.CertificateError):
            raise _PolicyFailure(f"certificate not valid for {host}: {exc.__cause__}") \
                from exc
        raise
    if plan.kind == "dane":
        tls = client.get_transport_info("ssl_object")
        problem = dane.check(plan.tlsa, dane.peer_chain(tls), host)
        if problem is not None:  # RFC 7672 §2.2: authenticated TLSA records must match
            raise _PolicyFailure(f"DANE: {problem}")
