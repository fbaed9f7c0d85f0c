"""One shared in-memory index per open mailbox: uids, flags and modseqs.

Why: a SELECT of a 100,000-message mailbox used to spend most of its time in
SQLite returning 100,000 rows. Now the first session to open a mailbox loads
its index once; every later SELECT/EXAMINE of it (by any session) shares
its three Python lists (copied on write by whichever side changes them
first: ``MailboxIndex.own``, ``Selected.own``), and every committed change
reaches the index through the store's own change path (``core.mail.live``:
``Live.publish``) at the moment it reaches the sessions' ``Watch`` queues,
so the index is always the committed state as the sessions are told of it.

Consistency: a load runs on the database thread while commits may land
around it. Every ``Change`` carries the mailbox modseq its commit produced,
changes published during the load are buffered and replayed after it, and
replay is idempotent (an ``exists`` at or below the loaded modseq is already
in the rows, a ``flags`` change applies only over an older modseq, an
``expunge`` of an absent uid does nothing), so no change is lost or applied
twice whichever side of the load it landed on.

Memory: an index lives while at least one session has the mailbox open, and
after the last one closes it is kept for the next session for a while, within
a budget of messages over all such idle indexes (``Live.close``,
``IDLE_INDEX_MESSAGES``, ``IDLE_KEEP``): a mail client checking mail opens a
new session each time, and loading is what it would wait for. So the number of
indexes is bounded by the number of IMAP sessions plus that budget. Per message it holds three list
slots (24 bytes) plus the uid and modseq ints (about 28 bytes each, shared
with the sessions' copies); flag sets are interned, so a mailbox with a
handful of distinct flag combinations costs about 80 bytes per message:
about 8 MB for 100,000 messages, plus 24 bytes per message for each session
that has it selected once either has changed (its own lists, because its
message sequence numbers move only when it is told of an expunge).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left, insort
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from typing import Any

from core.mail.model import Change, Mailbox, Watch

SEEN = "\\Seen"
SMALL_EXPUNGE = 64  # at most this many uids: delete in place instead of rebuilding
MAX_INTERNED = 10_000  # distinct flag sets kept before the unused ones are dropped
MAX_DERIVED = 8  # results kept per mailbox until its messages change (``MailboxIndex.derived``)


@dataclass
class Loaded:
    """What the database thread returns for a mailbox (one consistent read)."""

    uidvalidity: int
    uidnext: int
    modseq: int
    recent_uid: int
    uids: list[int]
    flags: list[frozenset[str]]
    modseqs: list[int]
    from_disk: bool = False  # read from ``core.mail.indexfile``, not from the rows
    flag_sets: list[frozenset[str]] | None = None  # the distinct sets in ``flags``, if known


@dataclass
class Snapshot:
    """What a session needs at SELECT: the index's lists, shared until either side
    writes them (each copies first), and flag sets shared for good."""

    mailbox: Mailbox  # uidnext and modseq as of this index, not a later row
    uids: list[int]
    flags: list[frozenset[str]]
    modseqs: list[int]
    recent: set[int]
    keywords: frozenset[str] = frozenset()

    def first_unseen(self) -> int:
        """Sequence number of the first message without \\Seen, or 0 (SELECT's UNSEEN)."""
        for i, flags in enumerate(self.flags, 1):
            if SEEN not in flags:
                return i
        return 0


@dataclass(eq=False)
class MailboxIndex:
    mailbox_id: int
    watches: set[Watch] = field(default_factory=set)
    ready: asyncio.Future[None] | None = None
    loaded_modseq: int = -1
    buffered: list[Change] = field(default_factory=list)
    uidvalidity: int = 0
    uidnext: int = 1
    modseq: int = 0
    recent_uid: int = 0
    saved_recent_uid: int = 0
    uids: list[int] = field(default_factory=list)
    flags: list[frozenset[str]] = field(default_factory=list)
    modseqs: list[int] = field(default_factory=list)
    # the three lists are also held by a session's view since ``view``: copied
    # before this index next changes them (``own``), never written in place
    shared: bool = False
    keywords: set[str] = field(default_factory=set)
    interned: dict[frozenset[str], frozenset[str]] = field(default_factory=dict)
    # What a front end computed from the messages of a view of this mailbox (a
    # THREAD or SORT of all of it: never its flags), keyed by the front end
    # including that view's message set; dropped when messages come or go, so
    # it holds only results of sets that may still be current. A flag change
    # keeps them: a client reading its mail would otherwise cost the next
    # session a new THREAD of the whole mailbox (0.5-0.9 s for 100,000).
    derived: dict[Hashable, Any] = field(default_factory=dict)

    @property
    def loading(self) -> bool:
        return self.loaded_modseq < 0

    def fill(self, data: Loaded) -> None:
        """Take the loaded rows, then replay what was published meanwhile."""
        self.uidvalidity, self.uidnext = data.uidvalidity, data.uidnext
        self.modseq = self.loaded_modseq = data.modseq
        self.recent_uid = self.saved_recent_uid = data.recent_uid
        self.uids, self.modseqs = data.uids, data.modseqs
        # a load holds one object per distinct set already: intern those, and copy
        # the column only if one of them was interned as another (100,000 calls
        # to ``intern`` were a third of a cold SELECT's fill)
        distinct = set(data.flags if data.flag_sets is None else data.flag_sets)
        canonical = {f: self.intern(f) for f in distinct}
        self.flags = data.flags if all(canonical[f] is f for f in distinct) \
            else [canonical[f] for f in data.flags]
        for fs in distinct:
            self.keywords.update(k for k in fs if not k.startswith("\\"))
        buffered, self.buffered = self.buffered, []
        for change in buffered:
            self.apply(change)

    def intern(self, flags: frozenset[str]) -> frozenset[str]:
        """One shared object per distinct flag set (memory, and identity-fast compares).

        Flag sets no message uses any more are dropped once there are many, so a
        client cycling through keyword combinations cannot grow this (or
        ``keywords``) without bound.
        """
        if len(self.interned) >= MAX_INTERNED and flags not in self.interned:
            self.interned = {f: f for f in self.flags}
            self.keywords = {k for fs in self.interned for k in fs if not k.startswith("\\")}
        return self.interned.setdefault(flags, flags)

    def pos(self, uid: int) -> int:
        """The position of a uid, or -1."""
        i = bisect_left(self.uids, uid)
        return i if i < len(self.uids) and self.uids[i] == uid else -1

    def apply(self, change: Change) -> None:
        """Fold one committed change in (idempotent; buffered while loading)."""
        if self.loading:
            self.buffered.append(change)
            return
        if change.kind != "flags":
            self.derived.clear()
        self.own()
        if change.kind == "exists":
            if change.modseq <= self.loaded_modseq:
                return  # committed before the load read the rows: already there
            flags = self.intern(change.flags)
            self.keywords.update(k for k in flags if not k.startswith("\\"))
            for uid in change.uids:
                if self.pos(uid) >= 0:
                    continue
                if not self.uids or uid > self.uids[-1]:
                    self.uids.append(uid)
                    self.flags.append(flags)
                    self.modseqs.append(change.modseq)
                else:  # published out of commit order: keep uids ascending
                    insort(self.uids, uid)
                    i = self.pos(uid)
                    self.flags.insert(i, flags)
                    self.modseqs.insert(i, change.modseq)
                self.uidnext = max(self.uidnext, uid + 1)
        elif change.kind == "flags":
            i = self.pos(change.uids[0])
            if i >= 0 and change.modseq > self.modseqs[i]:
                self.flags[i] = self.intern(change.flags)
                self.modseqs[i] = change.modseq
                self.keywords.update(k for k in change.flags if not k.startswith("\\"))
        elif change.kind == "expunge":
            self.remove(change.uids)
        self.modseq = max(self.modseq, change.modseq)

    def keep_derived(self, key: Hashable, value: Any) -> None:
        if len(self.derived) >= MAX_DERIVED:
            self.derived.pop(next(iter(self.derived)))
        self.derived[key] = value

    def share(self) -> tuple[list[int], list[frozenset[str]], list[int]]:
        """The three lists, for a reader that may hold them past the next change
        (a session's view, a copy being kept on disk): never written in place again."""
        self.shared = True
        return self.uids, self.flags, self.modseqs

    def own(self) -> None:
        """Copy the lists a view still shares, before changing them in place."""
        if self.shared:
            self.uids, self.flags, self.modseqs = (
                list(self.uids), list(self.flags), list(self.modseqs))
            self.shared = False

    def remove(self, uids: tuple[int, ...] | list[int]) -> None:
        self.own()
        if len(uids) <= SMALL_EXPUNGE:
            for uid in uids:
                i = self.pos(uid)
                if i >= 0:
                    del self.uids[i], self.flags[i], self.modseqs[i]
            return
        gone = set(uids)
        keep = [i for i, u in enumerate(self.uids) if u not in gone]
        self.uids = [self.uids[i] for i in keep]
        self.flags = [self.flags[i] for i in keep]
        self.modseqs = [self.modseqs[i] for i in keep]

    def view(self, mailbox: Mailbox, *, claim_recent: bool) -> Snapshot:
        """A session's view; a read-write open claims the messages new since the last one."""
        recent: set[int] = set()
        if self.uids and self.uids[-1] > self.recent_uid:
            # RFC 3501 §6.3.2: EXAMINE reports them too, without claiming them
            recent = set(self.uids[bisect_left(self.uids, self.recent_uid + 1):])
        if claim_recent:
            self.recent_uid = max(self.recent_uid, self.uidnext - 1)
        mb = replace(mailbox, uidvalidity=self.uidvalidity, uidnext=self.uidnext,
                     modseq=self.modseq)
        return Snapshot(mb, *self.share(), recent, frozenset(self.keywords))

