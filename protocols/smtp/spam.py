"""Spam scanning at the end of DATA on the inbound port, before the 250.

Refusing in SMTP (RFC 5321 §4.2.5: the reply to the final dot) is what lets
a sender learn its mail was not taken, so a filter's ``reject`` is a 550
5.7.1 and its ``defer`` a 451 4.7.1 (RFC 3463 X.7.1: delivery not
authorized, message refused), never a silent drop. ``junk`` files into the
recipients' \\Junk mailbox like DMARC's quarantine; ``deliver`` delivers.

Only the inbound port scans (unauthenticated mail from outside): the owner's
own submissions and other twins' envelopes never pass here. Scanning comes
after our SPF/DKIM/DMARC checks and their policy (``protocols.smtp.policy``),
so mail already refused for them costs no scan; the built-in filter weighs
their results, rspamd makes its own.

Every delivered scanned message carries ``X-Spam-Status`` (SpamAssassin's
long-standing header name, which mail clients' rules know) with the score,
the action and the filter, or "Unknown, not scanned" and why when rspamd
could not answer, plus rspamd's own suggested headers (milter
``add_headers``). Look-alikes that came from outside are removed first: a
sender must not be able to write "X-Spam-Status: No" into a recipient's
mail (the same rule as RFC 8601 §5 for Authentication-Results).
"""

from __future__ import annotations

from collections.abc import Iterable

from core.routing import drop_fields, header_name
from core.spam import Verdict
from protocols.smtp.errors import SmtpError

SPAM_HEADERS = frozenset({b"x-spam-status", b"x-spam-score", b"x-spam", b"x-spam-flag",
                          b"x-spam-level", b"x-spamd-result", b"x-spamd-bar",
                          b"x-rspamd-server", b"x-rspamd-queue-id", b"x-rspamd-action",
                          b"x-rspamd-score"})


def strip_spam_headers(message: bytes, also: Iterable[str] = ()) -> bytes:
    """``message`` without spam-verdict headers someone else wrote."""
    names = SPAM_HEADERS | {n.lower().encode() for n in also}
    return drop_fields(message, lambda f: header_name(f) in names)


def summary(verdict: Verdict) -> str:
    """The verdict in the transaction's one log line (``handler.transaction_line``)."""
    symbols = ",".join(verdict.symbols[:8]) or "-"
    text = f"{verdict.action}/{verdict.score:.2f}/{verdict.filter}/{symbols}"
    text = text if verdict.scanned else f"{text}/unscanned:{verdict.reason[:100]}"
    return text.replace('"', "'")  # it is one quoted field of the line


def refuse(verdict: Verdict) -> None:
    """``SmtpError`` for reject (550 5.7.1) and defer (451 4.7.1); nothing otherwise."""
    if verdict.action == "reject":
        raise SmtpError(550, "5.7.1", f"Message refused as spam: {verdict.reason}")
    if verdict.action == "defer":
        reason = verdict.reason if verdict.scanned else "spam filter unavailable"
        raise SmtpError(451, "4.7.1", f"Try again later: {reason}")


def verdict_headers(verdict: Verdict) -> list[tuple[str, str]]:
    """``X-Spam-Status`` and the filter's suggestions (ours win on our name)."""
    headers = [("X-Spam-Status", verdict.status)]
    headers += [(n, v) for n, v in verdict.add_headers if n.lower() != "x-spam-status"]
    return headers
