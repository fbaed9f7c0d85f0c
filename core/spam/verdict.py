"""What a spam filter is told about a message and what it answers.

Protocol-neutral on purpose: the inbound SMTP port is where mail is scanned
today (``protocols.smtp.spam`` turns a ``Verdict`` into a reply), but the
filters, their learning from the owner's moves and the sender reputation do
not depend on SMTP, so they live in core.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

ACTIONS = ("deliver", "junk", "reject", "defer")


@dataclass(frozen=True)
class Transaction:
    """The SMTP facts a filter may weigh (rspamd's protocol headers, RFC 5321 names)."""

    ip: str
    helo: str
    mail_from: str
    rcpts: tuple[str, ...]
    queue_id: str = ""
    hostname: str = ""  # this server's name (rspamd's MTA-Name)
    spf: str = "none"  # our own checks' results (protocols.smtp.verify)
    dmarc: str = "none"


@dataclass(frozen=True)
class Verdict:
    """``action``: deliver | junk | reject | defer (as ``protocols.smtp.policy``).

    ``status`` is the one-line summary written into ``X-Spam-Status``;
    ``add_headers`` / ``remove_headers`` are the filter's own suggestions
    (rspamd's ``milter`` block), already bounded and checked."""

    action: str
    score: float
    reason: str
    filter: str  # rspamd | builtin
    scanned: bool = True  # False: the filter could not answer (down, too slow, too large)
    add_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[str, ...] = ()
    symbols: tuple[str, ...] = field(default=())

    @property
    def status(self) -> str:
        if not self.scanned:
            return f"Unknown, not scanned ({self.filter}: {self.reason})"
        spam = "Yes" if self.action in ("junk", "reject") else "No"
        return f"{spam}, score={self.score:.2f} action={self.action} filter={self.filter}"


class SpamFilter(Protocol):
    async def check(self, message: bytes, tx: Transaction) -> Verdict: ...

    async def close(self) -> None: ...
