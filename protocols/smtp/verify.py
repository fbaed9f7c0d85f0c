"""Inbound authentication checks: DKIM (dkimpy) and SPF, for Authentication-Results.

Checks inform, they do not reject: the results go into one
``Authentication-Results`` header (RFC 8601) for the user and their client
to judge. The one policy decision built in is the twin-impersonation
warning, made by the handler: mail whose From claims a twin's domain must
carry a passing DKIM signature of that domain when it arrives over plain SMTP.

Everything here is blocking (RSA, hashing, DNS): call ``check`` in a thread.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field

import dkim

from protocols.smtp import spf
from protocols.smtp.dns import DnsTempError, Resolver

log = logging.getLogger("twin.smtp")
MAX_SIGNATURES = 5


@dataclass(frozen=True)
class DkimResult:
    result: str  # pass | fail | neutral | temperror | permerror
    domain: str = ""
    selector: str = ""


@dataclass
class AuthResults:
    dkim: list[DkimResult] = field(default_factory=list)
    spf: str = "none"
    spf_comment: str = ""
    mail_from: str = ""
    helo: str = ""

    def dkim_passed_for(self, domain: str) -> bool:
        domain = domain.lower()
        return any(r.result == "pass" and (domain == r.domain or domain.endswith("." + r.domain))
                   for r in self.dkim)

    def header(self, authserv_id: str) -> str:
        """The Authentication-Results value (RFC 8601 §2.2)."""
        parts = [authserv_id]
        if not self.dkim:
            parts.append("dkim=none")
        for r in self.dkim:
            parts.append(f"dkim={r.result} header.d={r.domain or 'unknown'}"
                         + (f" header.s={r.selector}" if r.selector else ""))
        comment = f" ({self.spf_comment})" if self.spf_comment else ""
        what = f"smtp.mailfrom={self.mail_from}" if self.mail_from else f"smtp.helo={self.helo}"
        parts.append(f"spf={self.spf}{comment} {what}")
        return "; ".join(parts)


class Verifier:
    def __init__(self, resolver: Resolver | None, *, dns_timeout: float = 5.0,
                 skip_loopback: bool = True) -> None:
        """``resolver`` None means DNS checks are off (every result is 'none')."""
        self.resolver = resolver
        self.timeout = dns_timeout
        self.skip_loopback = skip_loopback

    def _dnsfunc(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        assert self.resolver is not None
        text = name.decode() if isinstance(name, bytes) else name
        try:
            records = self.resolver(text, "TXT")
        except DnsTempError as exc:
            raise dkim.DnsTimeoutError(str(exc)) from exc
        return records[0].encode() if records else None

    def needs_work(self, message: bytes, client_ip: str) -> bool:
        """False when ``check`` would do no crypto and no DNS (then it can run inline)."""
        if self.resolver is None:
            return False
        head = message.split(b"\r\n\r\n", 1)[0].lower()
        return b"dkim-signature:" in head or not (self.skip_loopback and _is_loopback(client_ip))

    def check(self, message: bytes, client_ip: str, helo: str, mail_from: str) -> AuthResults:
        results = AuthResults(mail_from=mail_from, helo=helo)
        if self.resolver is None:
            results.spf_comment = "DNS checks disabled"
            return results
        results.dkim = self._dkim(message)
        if self.skip_loopback and _is_loopback(client_ip):
            results.spf_comment = "local client"
        else:
            results.spf = spf.check_host(self.resolver, client_ip, mail_from, helo)
        return results

    def _dkim(self, message: bytes) -> list[DkimResult]:
        out: list[DkimResult] = []
        try:
            checker = dkim.DKIM(message, minkey=1024, timeout=int(self.timeout))
        except Exception:  # dkimpy raises more than DKIMException on hostile input
            return [DkimResult("permerror")]
        count = sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature")
        for idx in range(min(count, MAX_SIGNATURES)):
            try:
                ok = checker.verify(idx=idx, dnsfunc=self._dnsfunc)
                result = "pass" if ok else "fail"
            except dkim.DnsTimeoutError:
                result = "temperror"
            except Exception as exc:
                # DKIMException, and what dkimpy lets escape on hostile tags
                # (binascii.Error from a bad bh=): a verdict, never a 451 for the message
                log.info("DKIM signature %d unusable: %s: %s", idx, type(exc).__name__, exc)
                result = "permerror"
            domain = _text(checker.domain).lower()
            selector = _text(getattr(checker, "selector", b""))
            out.append(DkimResult(result, domain, selector))
        return out


def _text(value: object) -> str:
    """A tag dkimpy parsed: bytes usually, str after some failures, or None."""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return value if isinstance(value, str) else ""


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False
