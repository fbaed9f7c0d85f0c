"""The mailbox quarantined mail is filed into: the user's \\Junk one.

DMARC's ``p=quarantine`` (RFC 7489 §6.3: "treat as suspicious") is honoured
by filing into the mailbox the user's clients show as spam: the one with the
``\\Junk`` special use (RFC 6154 §2), whatever the user renamed it to; else
one named "Junk"; else a new "Junk" with that special use (the user deleted
theirs).
"""

from __future__ import annotations

from core.errors import Conflict
from core.mail.store import MailStore

NAME = "Junk"
USE = "\\Junk"


async def junk_mailbox(store: MailStore, login: str) -> str:
    """The name of ``login``'s junk mailbox, created when missing."""
    for attempt in range(2):
        boxes = await store.mailboxes(login)
        for mb in boxes:
            if mb.special == USE:
                return mb.name
        if any(mb.name == NAME for mb in boxes):
            return NAME
        if attempt:
            break
        try:
            await store.create_mailbox(login, NAME, USE)
            return NAME
        except Conflict:  # created meanwhile by a concurrent delivery: look again
            continue
    return NAME
