"""The selected mailbox as one session sees it (RFC 3501 §2.3.1, §5.2, §7.4.1).

A session keeps its own copy of the mailbox's index (uids ascending, and the
flags and modseq at the same positions), taken from the shared in-memory index
(``core.mail.index``) at SELECT, because message sequence numbers are per
session: they change only when this session has been told of an expunge.
Changes made by others arrive as ``core.mail.Change`` on the session's
``Watch`` and are turned into untagged EXISTS / FETCH / EXPUNGE (or VANISHED)
responses when the rules allow: EXPUNGE is held back after FETCH, STORE and
SEARCH (non-UID), because the client may be using sequence numbers in a
command still in flight. If the watch overflowed (the session fell too far
behind), ``resync`` turns the difference between this copy and the mailbox
as it is now into the same kind of changes.

``flags`` and ``modseqs`` are uid-keyed views over the position lists, so
callers can say ``sel.flags[uid]``; bulk paths walk ``flag_list`` directly.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

from core.mail import Change, Mailbox, Snapshot, Watch
from protocols.imap import render
from protocols.imap.errors import Bad

if TYPE_CHECKING:
    from protocols.imap.commands.updates import Update

MAX_SET_PARTS = 10_000
SMALL_LOOKUP = 256  # fewer uids than this: a binary search each (``seqs_of``)
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
V = TypeVar("V")


class ByUid(Generic[V]):
    """A uid-keyed view of one of a ``Selected``'s position lists."""

    def __init__(self, sel: Selected, attr: str) -> None:
        self._sel = sel
        self._attr = attr

    def _values(self) -> list[V]:
        values: list[V] = getattr(self._sel, self._attr)
        return values

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, int) and self._sel.pos(uid) >= 0

    def __getitem__(self, uid: int) -> V:
        i = self._sel.pos(uid)
        if i < 0:
            raise KeyError(uid)
        return self._values()[i]

    def __setitem__(self, uid: int, value: V) -> None:
        i = self._sel.pos(uid)
        if i < 0:
            raise KeyError(uid)
        self._sel.own()
        self._values()[i] = value

    def get(self, uid: int, default: V) -> V:
        i = self._sel.pos(uid)
        return self._values()[i] if i >= 0 else default


class Selected:
    def __init__(self, snap: Snapshot, watch: Watch, read_only: bool) -> None:
        self.mailbox: Mailbox = snap.mailbox
        self.watch = watch
        self.read_only = read_only
        self.uids = snap.uids
        self.flag_list = snap.flags
        self.modseq_list = snap.modseqs
        self.shared = True  # the three lists are the shared index's until ``own``
        self.recent = snap.recent
        self.highestmodseq = snap.mailbox.modseq
        self.held: list[int] = []
        self.gone = False
        self.told_exists = len(self.uids)
        self.told_recent = len(self.recent)
        self.keywords: set[str] = set(snap.keywords)
        self.saved: list[int] = []  # RFC 5182 SEARCHRES: the uids ``$`` names
        self.updates: list[Update] = []  # RFC 5267 §4.2: searches kept up to date
        self.no_recent = False  # IMAP4rev2 (RFC 9051 Appendix E): no \Recent at all

    # Views made on each use, not kept: a kept view would point back here, and
    # that cycle left every closed selection (three lists of a mailbox's size)
    # to the cyclic collector, whose young-generation passes then walked them all.
    @property
    def flags(self) -> ByUid[frozenset[str]]:
        return ByUid(self, "flag_list")

    @property
    def modseqs(self) -> ByUid[int]:
        return ByUid(self, "modseq_list")

    def own(self) -> None:
        """Copy the position lists before the first change to them.

        Why not at SELECT: a copy of three lists of 100,000 was most of a
        warm SELECT, and a client that opens a mailbox, lists it and leaves
        never changes them. The shared index copies its side the same way
        (``core.mail.index``), so neither ever writes a list the other holds."""
        if self.shared:
            self.uids, self.flag_list = list(self.uids), list(self.flag_list)
            self.modseq_list = list(self.modseq_list)
            self.shared = False

    # -- numbers

    def pos(self, uid: int) -> int:
        """The position of a uid in this session's index, or -1."""
        i = bisect_left(self.uids, uid)
        return i if i < len(self.uids) and self.uids[i] == uid else -1

    def seq_of(self, uid: int) -> int:
        return self.pos(uid) + 1

    def seqs_of(self, uids: list[int]) -> list[int]:
        """``seq_of`` of each uid, in the order given (0 for one not here).

        A SORT of a whole large mailbox maps every uid: a table built once is
        ~10 times cheaper than a binary search per message."""
        if uids == self.uids:
            return list(range(1, len(uids) + 1))
        if len(uids) < SMALL_LOOKUP:
            return [self.pos(u) + 1 for u in uids]
        seq = dict(zip(self.uids, range(1, len(self.uids) + 1), strict=True))
        get = seq.get
        return [get(u, 0) for u in uids]

    def parse_set(self, text: str, *, uid: bool, strict: bool = True) -> list[int]:
        """Uids named by a sequence set (RFC 3501 §9 sequence-set), ascending.

        ``$`` is the result saved by ``SEARCH RETURN (SAVE)`` (RFC 5182 §2.1),
        less the messages expunged since.
        """
        if text == "$":
            return [u for u in self.saved if self.pos(u) >= 0]
        if not text or len(text) > 100_000:
            raise Bad("invalid sequence set")
        ranges: list[tuple[int, int]] = []
        largest = (self.uids[-1] if self.uids else 0) if uid else len(self.uids)
        parts = text.split(",")
        if len(parts) > MAX_SET_PARTS:
            raise Bad("sequence set too long")
        for part in parts:
            lo_s, _, hi_s = part.partition(":")
            lo, hi = _number(lo_s, largest), _number(hi_s or lo_s, largest)
            if lo > hi:
                lo, hi = hi, lo
            if not uid and not strict:  # SEARCH: numbers beyond the end match nothing
                hi = min(hi, len(self.uids))
                if lo > hi:
                    continue
            elif not uid and (lo == 0 or hi > len(self.uids)):
                if not (self.uids or "*" in part):
                    raise Bad("message sequence number out of range")
                if self.uids:
                    raise Bad("message sequence number out of range")
            ranges.append((lo, hi))
        if uid:
            if len(ranges) == 1:
                lo, hi = ranges[0]
                return self.uids[bisect_left(self.uids, lo):bisect_right(self.uids, hi)]
            out: set[int] = set()
            for lo, hi in ranges:
                out.update(self.uids[bisect_left(self.uids, lo):bisect_right(self.uids, hi)])
            return sorted(out)
        if not self.uids:
            return []
        if len(ranges) == 1:
            lo, hi = ranges[0]
            return self.uids[lo - 1:hi]
        seqs: set[int] = set()
        for lo, hi in ranges:
            seqs.update(range(lo, hi + 1))
        return [self.uids[s - 1] for s in sorted(seqs)]

    # -- updates

    def apply(self, changes: list[Change], *, expunge_ok: bool, condstore: bool,
              qresync: bool) -> Iterator[bytes]:
        """Fold changes into the index; yield the untagged responses they call for.

        The order keeps the client's view consistent at every line (what
        imaptest's stress run checks): a FETCH never names a sequence number
        beyond the last EXISTS, a keyword is announced by FLAGS before any
        FETCH uses it, an EXPUNGE goes out only for a message the client was
        told of (one that came and went unseen is dropped silently), and the
        EXISTS with the new count comes last.
        """
        for change in changes:
            if change.kind == "exists":
                for uid in change.uids:
                    if not self.uids or uid > self.uids[-1]:
                        self.own()
                        self.uids.append(uid)
                        self.flag_list.append(change.flags)
                        self.modseq_list.append(change.modseq)
                        if self.watch.take_recent(uid) and not self.no_recent:
                            self.recent.add(uid)
                yield from self.announce(change.flags)
                self.highestmodseq = max(self.highestmodseq, change.modseq)
            elif change.kind == "flags":
                uid = change.uids[0]
                i = self.pos(uid)
                if i >= 0 and change.modseq > self.modseq_list[i]:
                    self.own()
                    self.flag_list[i] = change.flags
                    self.modseq_list[i] = change.modseq
                    self.highestmodseq = max(self.highestmodseq, change.modseq)
                    yield from self.announce(change.flags)
                    if uid not in self.held:
                        if i >= self.told_exists:
                            yield from self.tell_exists()
                        yield self.fetch_flags(uid, condstore, with_uid=qresync)
            elif change.kind == "expunge":
                self.held.extend(u for u in change.uids if self.pos(u) >= 0)
                self.highestmodseq = max(self.highestmodseq, change.modseq)
            elif change.kind == "deleted":
                self.gone = True
        if self.held and expunge_ok:
            yield from self.flush_expunges(qresync)
        if len(self.uids) != self.told_exists:
            yield from self.tell_exists()
        elif len(self.recent) != self.told_recent:
            yield b"* %d RECENT" % len(self.recent)
            self.told_recent = len(self.recent)

    def tell_exists(self) -> Iterator[bytes]:
        yield b"* %d EXISTS" % len(self.uids)
        self.told_exists = len(self.uids)
        if len(self.recent) != self.told_recent:
            yield b"* %d RECENT" % len(self.recent)
            self.told_recent = len(self.recent)

    def announce(self, flags: frozenset[str]) -> Iterator[bytes]:
        """FLAGS and PERMANENTFLAGS for keywords this session has not announced yet.

        RFC 3501 §7.2.6: the client learns the mailbox's flags from FLAGS; a
        FETCH naming a keyword it was not told about is a protocol error.
        """
        new = {f for f in flags if not f.startswith("\\")} - self.keywords
        if not new:
            return
        self.keywords |= new
        listed = render.flags([*SYSTEM_FLAGS, *sorted(self.keywords)])
        yield b"* FLAGS " + listed
        if self.read_only:
            yield b"* OK [PERMANENTFLAGS ()] read-only"
        else:
            yield b"* OK [PERMANENTFLAGS " + listed[:-1] + b" \\*)] flags permitted"

    def flush_expunges(self, qresync: bool) -> Iterator[bytes]:
        held, self.held = sorted(set(self.held)), []
        present = [u for u in held if self.pos(u) >= 0]
        if not present:
            return
        told = [u for u in present if self.pos(u) < self.told_exists]
        if qresync:
            yield b"* VANISHED " + compress(present).encode()
        else:
            for uid in reversed(told):  # from the top: earlier numbers stay valid
                yield b"* %d EXPUNGE" % self.seq_of(uid)
        self.told_exists -= len(told)
        if len(present) <= 64:
            self.own()
            for uid in reversed(present):
                i = self.pos(uid)
                del self.uids[i], self.flag_list[i], self.modseq_list[i]
        else:
            gone = set(present)
            keep = [i for i, u in enumerate(self.uids) if u not in gone]
            self.uids = [self.uids[i] for i in keep]
            self.flag_list = [self.flag_list[i] for i in keep]
            self.modseq_list = [self.modseq_list[i] for i in keep]
            self.shared = False
        self.recent.difference_update(present)

    def resync(self, now: Snapshot | None) -> list[Change]:
        """Changes that take this copy to ``now`` (after the watch overflowed).

        Expunged uids become one ``expunge`` (held back by the usual rules),
        newer flags one ``flags`` change each, new uids ``exists`` changes;
        ``None`` (the mailbox is gone) becomes ``deleted``.
        """
        if now is None:
            return [Change("deleted", ())]
        theirs = {u: i for i, u in enumerate(now.uids)}
        out: list[Change] = []
        gone = tuple(u for u in self.uids if u not in theirs)
        if gone:
            out.append(Change("expunge", gone, modseq=now.mailbox.modseq))
        for uid, modseq in zip(self.uids, self.modseq_list, strict=True):
            j = theirs.get(uid)
            if j is not None and now.modseqs[j] > modseq:
                out.append(Change("flags", (uid,), now.flags[j], now.modseqs[j]))
        last = self.uids[-1] if self.uids else 0
        for j in range(bisect_right(now.uids, last), len(now.uids)):
            out.append(Change("exists", (now.uids[j],), now.flags[j], now.modseqs[j]))
        return out

    def fetch_flags(self, uid: int, condstore: bool, *, with_uid: bool) -> bytes:
        i = self.pos(uid)
        flags = self.flag_list[i] | ({"\\Recent"} if uid in self.recent else set())
        out = b"* %d FETCH (" % (i + 1)
        if with_uid:
            out += b"UID %d " % uid
        out += b"FLAGS " + render.flags(flags)
        if condstore:
            out += b" MODSEQ (%d)" % self.modseq_list[i]
        return out + b")"


def _number(text: str, largest: int) -> int:
    if text == "*":
        return largest
    if not text.isdigit() or len(text) > 10:
        raise Bad(f"invalid number in sequence set: {text[:20]!r}")
    n = int(text)
    if n == 0 or n > 0xFFFFFFFF:
        raise Bad("sequence number out of range")
    return n


def compress(uids: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``1:3,7`` (uids ascending)."""
    out: list[str] = []
    i = 0
    while i < len(uids):
        j = i
        while j + 1 < len(uids) and uids[j + 1] == uids[j] + 1:
            j += 1
        out.append(str(uids[i]) if i == j else f"{uids[i]}:{uids[j]}")
        i = j + 1
    return ",".join(out)
