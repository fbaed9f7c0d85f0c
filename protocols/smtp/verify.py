"""Inbound authentication checks: SPF, DKIM, ARC and DMARC, for Authentication-Results.

Each check is a maintained library on our resolver: SPF by pyspf
(``spfcheck``), DKIM and ARC by dkimpy, DMARC by ``dmarc`` on authheaders'
parser and suffix list; the header is rendered by authres. This module runs
them on the message as it arrived, within one DNS time budget per message
(``smtp.dns_budget``), and turns whatever a hostile message makes a library
raise into a verdict (``permerror``, ``temperror``, ARC ``fail``): a checker
never fails the SMTP transaction. What to do with the results is
``protocols.smtp.policy``'s.

Loopback clients (a local fetcher or MTA handing mail on) are not SPF-checked
unless ``smtp.check_loopback`` is on: the IP says nothing about the sender
there. Their DMARC is then not evaluated either (it would fail for want of
SPF) and no policy is applied to them; DKIM and ARC still are.

Everything here is blocking (RSA, hashing, DNS): call ``check`` in a thread.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import dkim
from authres import DKIMAuthenticationResult, SPFAuthenticationResult
from authres.arc import ARCAuthenticationResult
from authres.dmarc import DMARCAuthenticationResult

from core.errors import Invalid
from core.routing import domain_of, from_addresses, header_name, split_message
from protocols.smtp.dmarc import DmarcResult, Verdict, evaluate
from protocols.smtp.dns import DnsTempError, Resolver, budget
from protocols.smtp.spfcheck import SpfResult, check_host

log = logging.getLogger("twin.smtp")
MAX_SIGNATURES = 5  # DKIM signatures verified per message; more get no verdict
MAX_ARC_SETS = 50  # RFC 8617 §4.2.1: more instances than this and the chain fails
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.@]+")


@dataclass(frozen=True)
class DkimResult:
    result: str  # pass | fail | neutral | temperror | permerror | none
    domain: str = ""
    selector: str = ""


@dataclass
class AuthResults:
    dkim: list[DkimResult] = field(default_factory=list)
    spf: SpfResult = field(default_factory=lambda: SpfResult("none"))
    arc: str = "none"  # none | pass | fail (RFC 8617 §4.4)
    arc_comment: str = ""
    dmarc: DmarcResult = field(default_factory=lambda: DmarcResult("none"))
    mail_from: str = ""
    helo: str = ""
    checked_client: bool = True  # False: a loopback client, no SPF, no DMARC, no policy

    def dkim_passed_for(self, domain: str) -> bool:
        domain = domain.lower()
        return any(r.result == "pass" and (domain == r.domain or domain.endswith("." + r.domain))
                   for r in self.dkim)

    def passed(self) -> list[Verdict]:
        """The authenticated identifiers DMARC may align with the From domain."""
        out = [Verdict(r.domain, "dkim") for r in self.dkim if r.result == "pass"]
        if self.spf.result == "pass":
            out.append(Verdict(domain_of(self.mail_from) if self.mail_from
                                     else self.helo.lower(), "spf"))
        return out

    def header(self, authserv_id: str) -> str:
        """The Authentication-Results value (RFC 8601 §2.2), one result per folded line."""
        results: list[object] = []
        for r in self.dkim or [DkimResult("none")]:
            results.append(DKIMAuthenticationResult(
                result=r.result, header_d=_value(r.domain) if r.result != "none" else None,
                header_s=_value(r.selector) if r.selector else None))
        spf_comment = _comment(self.spf.comment) if self.spf.result != "pass" else None
        if self.spf.identity == "helo" or not self.mail_from:
            results.append(SPFAuthenticationResult(result=self.spf.result,
                                                   result_comment=spf_comment,
                                                   smtp_helo=_value(self.helo)))
        else:
            results.append(SPFAuthenticationResult(result=self.spf.result,
                                                   result_comment=spf_comment,
                                                   smtp_mailfrom=_value(self.mail_from)))
        d = self.dmarc
        results.append(DMARCAuthenticationResult(
            result=d.result, result_comment=_comment(d.comment) or None,
            header_from=_value(d.domain) if d.domain else None,
            policy=d.policy or None))
        results.append(ARCAuthenticationResult(result=self.arc,
                                               result_comment=_comment(self.arc_comment) or None))
        return f"{authserv_id};\r\n\t" + ";\r\n\t".join(str(r) for r in results)


def _value(text: str) -> str:
    """An RFC 8601 §2.2 pvalue: as is when plain, else a quoted-string (RFC 5322 §3.2.4)."""
    text = "".join(c for c in text[:200] if c.isprintable())
    if _PLAIN_VALUE.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str) -> str:
    """Text safe inside a CFWS comment: printable, no parentheses or backslashes."""
    return "".join(c for c in text[:120] if c.isprintable() and c not in "()\\")


class Verifier:
    def __init__(self, resolver: Resolver | None, *, dns_timeout: float = 5.0,
                 dns_budget: float = 20.0, skip_loopback: bool = True) -> None:
        """``resolver`` None means DNS checks are off (every result is 'none')."""
        self.resolver = resolver
        self.timeout = dns_timeout
        self.budget = dns_budget
        self.skip_loopback = skip_loopback

    def _dnsfunc(self, failed: list[str]) -> Callable[..., bytes | None]:
        """dkimpy's lookup: the first TXT record of a key's name, or None.

        dkimpy catches its own DnsTimeoutError and answers a plain False
        (dkimpy 1.1.8 ``DKIM.verify``), so a temporary failure is also noted
        in ``failed``: that is what makes the result temperror, not fail."""
        resolver = self.resolver
        assert resolver is not None

        def lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
            text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
            try:
                records = resolver(text, "TXT")
            except DnsTempError as exc:
                failed.append(text)
                raise dkim.DnsTimeoutError(str(exc)) from exc
            return records[0].encode() if records else None
        return lookup

    def needs_work(self, message: bytes, client_ip: str) -> bool:
        """False when ``check`` would do no crypto and no DNS (then it can run inline)."""
        if self.resolver is None:
            return False
        head = message.split(b"\r\n\r\n", 1)[0].lower()
        return (b"dkim-signature:" in head or b"arc-seal:" in head
                or not self.loopback_skipped(client_ip))

    def loopback_skipped(self, client_ip: str) -> bool:
        return self.skip_loopback and _is_loopback(client_ip)

    def check(self, message: bytes, client_ip: str, helo: str, mail_from: str) -> AuthResults:
        results = AuthResults(mail_from=mail_from, helo=helo)
        if self.resolver is None:
            results.spf = SpfResult("none", "DNS checks disabled")
            results.checked_client = False
            return results
        with budget(self.budget):
            results.dkim = self._dkim(message)
            results.arc, results.arc_comment = self._arc(message)
            if self.loopback_skipped(client_ip):
                results.spf = SpfResult("none", "local client")
                results.dmarc = DmarcResult("none", comment="local client: not evaluated")
                results.checked_client = False
                return results
            # RFC 7208 §2.4: MAIL FROM, or the HELO identity for a null sender
            results.spf = check_host(self.resolver, client_ip, mail_from, helo)
            results.dmarc = self._dmarc(message, results)
        return results

    # RFC 6376 §6 (verifier actions), at most MAX_SIGNATURES of them
    def _dkim(self, message: bytes) -> list[DkimResult]:
        out: list[DkimResult] = []
        try:
            checker = dkim.DKIM(message, minkey=1024, timeout=int(self.timeout))
        except Exception:  # dkimpy raises more than DKIMException on hostile input
            return [DkimResult("permerror")]
        count = sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature")
        for idx in range(min(count, MAX_SIGNATURES)):
            failed: list[str] = []
            try:
                ok = checker.verify(idx=idx, dnsfunc=self._dnsfunc(failed))
                result = "pass" if ok else "temperror" if failed else "fail"
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

    # RFC 8617 §5.2 (validator actions)
    def _arc(self, message: bytes) -> tuple[str, str]:
        head = message.split(b"\r\n\r\n", 1)[0].lower()
        if b"arc-seal:" not in head:
            return "none", ""
        if head.count(b"arc-seal:") > MAX_ARC_SETS:
            return "fail", f"more than {MAX_ARC_SETS} ARC sets"
        failed: list[str] = []
        try:
            cv, _, comment = dkim.ARC(message, minkey=1024, timeout=int(self.timeout)).verify(
                dnsfunc=self._dnsfunc(failed))
        except dkim.DnsTimeoutError:
            return "fail", "DNS temperror"
        except Exception as exc:  # dkimpy on a hostile ARC set: the chain fails (§5.2)
            log.info("ARC chain unusable: %s: %s", type(exc).__name__, exc)
            return "fail", type(exc).__name__
        if failed and _text(cv).lower() != "pass":
            return "fail", "DNS temperror"
        verdict = _text(cv).lower()
        if verdict not in ("none", "pass", "fail"):
            return "fail", verdict[:40]
        return verdict, "" if verdict == "pass" else _text(comment)[:120]

    # RFC 7489 §6.6.2: the From domain(s), the passing identifiers, the policy
    def _dmarc(self, message: bytes, results: AuthResults) -> DmarcResult:
        assert self.resolver is not None
        try:
            domains = from_domains(message)
        except Invalid:
            return DmarcResult("permerror", comment="unreadable From")
        return evaluate(self.resolver, domains, results.passed())


def from_domains(message: bytes) -> list[str]:
    """The domains of the RFC5322.From addresses (DMARC's identifier; not Sender, §3.1)."""
    fields, _ = split_message(message)
    only_from = b"\r\n".join(f for f in fields if header_name(f) == b"from")
    return [domain_of(a) for a in from_addresses(only_from + b"\r\n\r\n")]


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
