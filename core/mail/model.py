"""The mail store's named types: what a mailbox, a message's metadata, a change
and a live session's watch are, as every part of ``core.mail`` and every front
end (IMAP, SMTP, the peer API, JMAP) sees them. No SQL and no I/O here.

Also the rules on names and flags (``check_name``, ``parse_flags``) and their
stored spelling (``flags_text``/``flags_set``: flags are one space-separated
text column).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from core.errors import Invalid
from core.mail import mime

log = logging.getLogger("twin.mail")

SPECIAL = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk",
           "Archive": "\\Archive"}
SPECIAL_USES = frozenset(SPECIAL.values()) | {"\\All", "\\Flagged"}
DELIM = "/"
MAX_NAME = 1000
MAX_FLAGS = 100
MAX_FLAG_LEN = 100


class Row(NamedTuple):
    """A message row to insert (``core.mail.messages.insert_rows``): its stored bytes'
    ref (``core.mail.packs``), cached header block and structure (JSON), size,
    internal date and flags."""

    ref: str
    header: bytes
    structure: str
    size: int
    internal_date: float
    flags: frozenset[str]


@dataclass(frozen=True)
class Mailbox:
    id: int
    login: str
    name: str
    uidvalidity: int
    uidnext: int
    modseq: int
    special: str | None
    subscribed: bool


@dataclass(frozen=True)
class Copied:
    """A committed COPY or MOVE, for ``MailStore.copy_hooks``.

    The special uses (RFC 6154) of both mailboxes are read in the copy's own
    transaction, so a hook sees what the user's client saw: a spam filter
    learns from mail moved into or out of ``\\Junk`` (``core.spam.learn``)."""

    login: str
    source_special: str | None
    dest_special: str | None
    refs: tuple[str, ...]  # the stored bytes of each message copied (``read_bytes``)
    move: bool


@dataclass(frozen=True)
class Status:
    messages: int
    recent: int
    unseen: int
    deleted: int
    size: int
    uidnext: int
    uidvalidity: int
    highestmodseq: int


class Meta(NamedTuple):
    """A message as FETCH and SEARCH read it. A tuple: a listing builds one per
    message, and a frozen dataclass took four times as long to make."""

    uid: int
    ref: str
    size: int
    internal_date: float
    flags: frozenset[str]
    modseq: int
    header: bytes
    structure: mime.Part | None


@dataclass
class Extents:
    """What ``FETCH RFC822.SIZE INTERNALDATE`` needs of messages, by column in uid
    order (``MailStore.sizes``)."""

    uids: list[int]
    sizes: list[int]
    dates: list[float]


@dataclass(frozen=True)
class Change:
    """One committed change of a mailbox, as sessions on it learn of it.

    kind: ``exists`` (uids new), ``flags`` (uids now have ``flags``; one uid
    each), ``expunge`` (uids gone) or ``deleted`` (the mailbox itself).
    ``modseq`` is the mailbox modseq the change's commit produced (0 for
    ``deleted``): the shared index uses it to apply each change exactly once.
    """

    kind: str
    uids: tuple[int, ...]
    flags: frozenset[str] = frozenset()
    modseq: int = 0


@dataclass(eq=False)
class Watch:
    """A live session's subscription to one mailbox's changes.

    The queue is bounded (``limit``): a session that does not read its
    changes (no command, a stalled socket) must not make the server hold an
    unbounded list. On overflow the queue is dropped and ``overflowed`` set;
    the session then asks ``MailStore.current`` for the mailbox as it is now
    and works out the differences itself (a full resync), and nothing queues
    meanwhile.
    """

    mailbox_id: int
    pending: list[Change] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    claims_recent: bool = False
    recent: set[int] = field(default_factory=set)
    limit: int = 10_000
    overflowed: bool = False

    def take_recent(self, uid: int) -> bool:
        """Whether ``uid`` is \\Recent for this session, handing it over: the session
        keeps its own set from here (kept here too, it grew by every message a long
        IDLE saw)."""
        if uid in self.recent:
            self.recent.discard(uid)
            return True
        return False

    def push(self, change: Change) -> None:
        if not self.overflowed:
            if len(self.pending) >= self.limit:
                log.info("a session on mailbox %d is %d changes behind: it will resync",
                         self.mailbox_id, len(self.pending))
                self.pending = []
                self.overflowed = True
            else:
                self.pending.append(change)
        self.wake.set()

    def take(self) -> list[Change]:
        out, self.pending = self.pending, []
        self.wake.clear()
        return out


def parse_flags(flags: Iterable[str]) -> frozenset[str]:
    out = set()
    for f in flags:
        body = f[1:] if f.startswith("\\") else f
        if not body or len(f) > MAX_FLAG_LEN or any(c in body for c in ' ()"{%*]\\\r\n'):
            raise Invalid(f"invalid flag {f[:40]!r}")
        if f.lower() == "\\recent":
            continue
        out.add(_canonical_flag(f))
    if len(out) > MAX_FLAGS:
        raise Invalid("too many flags")
    return frozenset(out)


_SYSTEM = {f.lower(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")}


def _canonical_flag(flag: str) -> str:
    if flag.startswith("\\"):
        canon = _SYSTEM.get(flag.lower())
        if canon is None:
            raise Invalid(f"unknown system flag {flag[:40]}")
        return canon
    return flag


def flags_text(flags: Iterable[str]) -> str:
    return " ".join(sorted(flags))


def flags_set(text: str) -> frozenset[str]:
    return frozenset(text.split()) if text else frozenset()


def check_name(name: str) -> str:
    """A mailbox name as stored: INBOX upper-cased, no empty levels, bounded."""
    if not name or len(name) > MAX_NAME or any(ord(c) < 32 or c == "\x7f" for c in name):
        raise Invalid("invalid mailbox name")
    name = name.rstrip(DELIM) if name != DELIM else name
    if name.upper() == "INBOX" or name.upper().startswith("INBOX" + DELIM):
        name = "INBOX" + name[5:]
    if not name or any(not level for level in name.split(DELIM)) or "*" in name or "%" in name:
        raise Invalid(f"invalid mailbox name {name[:60]!r}")
    return name


class Flagged(NamedTuple):
    """A message whose flags a STORE changed (``MailStore.set_flags``)."""

    uid: int
    flags: frozenset[str]
    modseq: int


class Copies(NamedTuple):
    """A committed COPY or MOVE as the client is told of it (RFC 4315 COPYUID):
    the destination's UIDVALIDITY, the source uids and their new uids, in order."""

    uidvalidity: int
    source: list[int]
    new: list[int]


class Unused(NamedTuple):
    """What removing messages left unused: message refs no message has any more
    (``obj@off:len`` inside a pack, or a whole object's id) and the objects
    themselves (a pack only once none of its members is left)."""

    refs: list[str]
    objects: list[str]
