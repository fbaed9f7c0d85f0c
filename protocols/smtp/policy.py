"""What the inbound port does with a message, given its authentication results.

Applied only to mail from outside: the inbound port's unauthenticated
sessions (submission and twin-to-twin envelopes never come here), and not to
loopback clients left unchecked (``AuthResults.checked_client``).

1. Mail whose From is one of this twin's own domains comes from outside only
   when forged (the twin's users submit, other twins use envelopes), unless
   it is authenticated as that domain: DMARC pass, or a DKIM signature or SPF
   pass aligned with it (RFC 7489 §3.1, relaxed). Otherwise it is refused,
   whatever DNS says about DMARC: 550, or 451 when a check could not finish.
2. DMARC (RFC 7489 §6.6.4, §6.3 p=/sp=/pct=): a failing message from a
   domain asking ``reject`` is refused with 550 at the end of DATA (§10.3 of
   RFC 7489: refusing in SMTP is what lets the sender learn of it);
   ``quarantine`` files it into the recipient's Junk; ``none`` delivers.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from protocols.smtp.dmarc import aligned
from protocols.smtp.verify import AuthResults


@dataclass(frozen=True)
class Decision:
    action: str  # deliver | junk | reject | defer
    reason: str = ""


DELIVER = Decision("deliver")


def _own(domain: str, own_domains: Collection[str]) -> bool:
    return any(domain == d or domain.endswith("." + d) for d in own_domains)


def authenticated_as(results: AuthResults, domain: str) -> bool:
    """DMARC passed for ``domain``, or an identifier aligned with it passed (relaxed)."""
    if results.dmarc.result == "pass" and results.dmarc.domain == domain:
        return True
    return any(aligned(v.domain, domain, "r") for v in results.passed())


def decide(results: AuthResults, from_domains: Sequence[str],
           own_domains: Collection[str]) -> Decision:
    if not results.checked_client:
        return DELIVER
    for domain in dict.fromkeys(from_domains):
        if not _own(domain, own_domains) or authenticated_as(results, domain):
            continue
        unsure = results.spf.result == "temperror" or any(
            r.result == "temperror" for r in results.dkim)
        if unsure:
            return Decision("defer", f"cannot check yet that mail from {domain} is "
                                     "authentic (DNS temperror); try again later")
        return Decision("reject", f"mail from {domain} (this server's own domain) must come "
                                  "through it: no aligned DKIM signature or SPF pass")
    d = results.dmarc
    if d.result == "fail" and d.policy == "reject":
        return Decision("reject", f"rejected by the DMARC policy of {d.domain} (p=reject): "
                                  "no aligned DKIM signature or SPF pass")
    if d.result == "fail" and d.policy == "quarantine":
        return Decision("junk", f"DMARC policy of {d.domain} is quarantine")
    return DELIVER
