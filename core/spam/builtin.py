"""The built-in spam filter, used when no rspamd is configured.

Small and local on purpose: no DNS blocklists (they need queries to third
parties, and their verdicts on a home server's traffic cannot be checked),
only what the message and our own SPF/DMARC results show, plus the owner's
per-sender reputation (``core.spam.reputation``):

- the GTUBE test string (the "Generic Test for Unsolicited Bulk Email" every
  filter recognises: SpamAssassin, rspamd) -> reject;
- a sender the owner moved into Junk -> junk; one moved out -> deliver;
- points: SPF fail 2 (softfail 1), DMARC fail 2, a From domain that differs
  from the envelope sender's while SPF or DMARC failed 2, no Message-ID 1,
  no Date 1 (RFC 5322 §3.6: both SHOULD/MUST be there; bulk tools forget).
  ``JUNK_SCORE`` points or more -> junk.
"""

from __future__ import annotations

from core.errors import Invalid
from core.routing import domain_of, from_addresses, header_name, split_message
from core.spam.reputation import JUNK, TRUSTED, Reputation
from core.spam.verdict import Transaction, Verdict

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
JUNK_SCORE = 5.0
MAX_SCAN = 1024 * 1024  # body bytes searched for GTUBE (it is a test string, near the top)


class Builtin:
    def __init__(self, reputation: Reputation) -> None:
        self.reputation = reputation

    async def close(self) -> None:
        return None

    async def check(self, message: bytes, tx: Transaction) -> Verdict:
        if GTUBE in message[:MAX_SCAN]:
            return Verdict("reject", 1000.0, "message matches GTUBE (spam test pattern)",
                           "builtin", symbols=("GTUBE",))
        try:
            senders = from_addresses(message)
        except Invalid:
            senders = []
        for sender in senders:
            if self.reputation.of(sender) == JUNK:
                return Verdict("junk", 100.0, f"the owner marked mail from {sender} as junk",
                               "builtin", symbols=("SENDER_JUNK",))
        if senders and all(self.reputation.of(s) == TRUSTED for s in senders):
            return Verdict("deliver", -100.0, f"the owner trusts {senders[0]}", "builtin",
                           symbols=("SENDER_TRUSTED",))
        points: list[tuple[str, float]] = []
        if tx.spf in ("fail", "softfail"):
            points.append(("SPF_" + tx.spf.upper(), 2.0 if tx.spf == "fail" else 1.0))
        if tx.dmarc == "fail":
            points.append(("DMARC_FAIL", 2.0))
        envelope = domain_of(tx.mail_from) if tx.mail_from else ""
        if (tx.spf == "fail" or tx.dmarc == "fail") and envelope and any(
                domain_of(s) != envelope for s in senders):
            points.append(("FROM_NEQ_ENVFROM", 2.0))
        try:  # one pass over the header block (it is within MAX_SCAN or not worth reading)
            present = {header_name(f) for f in split_message(message[:MAX_SCAN])[0]}
        except Invalid:  # a header block over core.routing.MAX_HEADER_BLOCK
            present = set()
        for name, symbol in ((b"message-id", "MISSING_MID"), (b"date", "MISSING_DATE")):
            if name not in present:
                points.append((symbol, 1.0))
        score = sum(p for _, p in points)
        action = "junk" if score >= JUNK_SCORE else "deliver"
        names = tuple(n for n, _ in points)
        reason = f"built-in checks: {', '.join(names) or 'none'} (score {score:.1f})"
        return Verdict(action, score, reason, "builtin", symbols=names)
