"""The shared in-memory mailbox index and the bounded change queues (core.mail.index)."""

from __future__ import annotations

import asyncio
import random

import pytest

import core.mail.live as store_module
from core.mail import Snapshot, Watch
from core.mail.messages import load_index as _load_index
from core.service import Service

MSG = b"From: a@x\r\nSubject: s\r\n\r\nbody\r\n"


async def truth(svc: Service, mailbox_id: int) -> tuple[list[int], list[frozenset[str]],
                                                        list[int]]:
    """The mailbox as SQLite has it (what a fresh load reads)."""
    data = await svc.db.run(_load_index, mailbox_id)
    return data.uids, data.flags, data.modseqs


def state(snap: Snapshot) -> tuple[list[int], list[frozenset[str]], list[int]]:
    return snap.uids, snap.flags, snap.modseqs


async def test_one_index_shared_and_kept_a_while_after_the_last_watch(
        service: tuple[Service, str]) -> None:
    svc, login = service
    for _ in range(3):
        await svc.mail.deliver(login, MSG)
    mail = svc.mail
    snap1, w1 = await mail.open(login, "INBOX", read_only=False)
    idx = mail._indexes[snap1.mailbox.id]
    assert snap1.recent == {1, 2, 3}
    snap2, w2 = await mail.open(login, "INBOX", read_only=True)
    assert mail._indexes[snap1.mailbox.id] is idx  # shared, not loaded again
    assert state(snap2) == state(snap1) and snap2.recent == set()
    assert snap2.uids is idx.uids  # shared until either side writes (copied then)
    snap3, w3 = await mail.open(login, "INBOX", read_only=False)
    assert snap3.recent == set()  # \Recent was claimed by the first read-write open
    mail.close(w1)
    mail.close(w2)
    assert snap1.mailbox.id in mail._indexes
    mail.close(w3)
    assert mail._indexes == {snap1.mailbox.id: idx}  # kept for the next session
    snap4, w4 = await mail.open(login, "INBOX", read_only=False)
    assert mail._indexes[snap1.mailbox.id] is idx and state(snap4) == state(snap1)
    mail.close(w4)


async def test_a_kept_index_follows_changes_made_while_nobody_watches(
        service: tuple[Service, str]) -> None:
    """Every commit reaches a kept index, so the next session sees exactly what a
    fresh load would: deliveries (one and many), flags, expunges, copies, moves."""
    svc, login = service
    mail = svc.mail
    uids = [await mail.deliver(login, MSG) for _ in range(4)]
    snap, watch = await mail.open(login, "INBOX", read_only=False)
    mid = snap.mailbox.id
    idx = mail._indexes[mid]
    mail.close(watch)
    uids.append(await mail.deliver(login, MSG, flags=["\\Flagged"]))
    await mail.set_flags(mid, uids[:2], "+", ["\\Seen", "$Later"])
    await mail.expunge(mid, [uids[0]])
    await mail.copy(mid, uids[1:3], login, "INBOX")
    await mail.copy(mid, [uids[3]], login, "Archive", move=True)
    stored = await svc.store.put(MSG)
    from core.mail.store import _describe
    header, structure = _describe(MSG)
    await mail.bulk_insert(login, "INBOX", [(str(stored), header, structure, len(MSG), 0.0,
                                            ["\\Answered"])] * 2)
    assert mail._indexes[mid] is idx and not idx.watches
    assert (idx.uids, idx.flags, idx.modseqs) == await truth(svc, mid)
    snap2, watch2 = await mail.open(login, "INBOX", read_only=False)
    assert state(snap2) == await truth(svc, mid)
    assert snap2.recent == set(snap2.uids) - set(snap.uids)  # arrived since the last open
    mail.close(watch2)


async def test_kept_indexes_are_bounded_in_messages_and_time(
        service: tuple[Service, str], monkeypatch: pytest.MonkeyPatch) -> None:
    svc, login = service
    mail = svc.mail
    for _ in range(3):
        await mail.deliver(login, MSG)
    await mail.deliver(login, MSG, mailbox="Archive")
    monkeypatch.setattr(store_module, "IDLE_INDEX_MESSAGES", 3)
    inbox, w1 = await mail.open(login, "INBOX", read_only=True)
    archive, w2 = await mail.open(login, "Archive", read_only=True)
    mail.close(w1)
    assert inbox.mailbox.id in mail._indexes  # 3 messages kept: within the budget
    mail.close(w2)  # 4 > 3: the oldest kept goes
    assert set(mail._indexes) == {archive.mailbox.id}
    monkeypatch.setattr(store_module, "IDLE_KEEP", 0.0)
    _, w3 = await mail.open(login, "INBOX", read_only=True)  # past its time: dropped
    assert set(mail._indexes) == {inbox.mailbox.id}
    mail.close(w3)
    assert mail._indexes == {}
    monkeypatch.setattr(store_module, "IDLE_KEEP", 600.0)
    _, w4 = await mail.open(login, "Archive", read_only=True)
    mail.close(w4)
    assert set(mail._indexes) == {archive.mailbox.id}
    await mail.delete_mailbox(login, "Archive")  # a kept index goes with its mailbox
    assert mail._indexes == {} and not mail._idle and mail._idle_messages == 0


async def test_index_follows_every_kind_of_change(service: tuple[Service, str]) -> None:
    svc, login = service
    mail = svc.mail
    snap, watch = await mail.open(login, "INBOX", read_only=True)
    mid = snap.mailbox.id
    uids = [await mail.deliver(login, MSG, flags=["\\Seen"] if i % 2 else []) for i in range(6)]
    await mail.set_flags(mid, uids[:3], "+", ["\\Deleted", "$Work"])
    await mail.expunge(mid, uids[:2])
    await mail.copy(mid, uids[2:5], login, "INBOX")  # copies keep their flags
    await mail.copy(mid, [uids[5]], login, "Archive", move=True)
    await mail.bulk_insert(login, "INBOX", [])
    idx = mail._indexes[mid]
    assert (idx.uids, idx.flags, idx.modseqs) == await truth(svc, mid)
    assert "$Work" in idx.keywords
    assert idx.uidnext == (await mail.status(mid)).uidnext
    assert idx.modseq == (await mail.status(mid)).highestmodseq
    mail.close(watch)


async def test_load_during_concurrent_commits_misses_nothing(
        service: tuple[Service, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Opens race deliveries, flag changes and expunges; every view ends up exact."""
    svc, login = service
    mail = svc.mail
    monkeypatch.setattr(store_module, "IDLE_INDEX_MESSAGES", 0)  # closing drops: loads race
    mb = await mail.mailbox(login, "INBOX")
    for _ in range(20):
        await mail.deliver(login, MSG)
    rng = random.Random(7)

    async def writer() -> None:
        for n in range(40):
            op = n % 3
            if op == 0:
                await mail.deliver(login, MSG)
            elif op == 1:
                uids = (await truth(svc, mb.id))[0]
                await mail.set_flags(mb.id, rng.sample(uids, min(3, len(uids))), "+",
                                     [rng.choice(["\\Seen", "\\Deleted", "$x"])])
            else:
                await mail.expunge(mb.id)

    async def reader() -> list[tuple[Snapshot, Watch]]:
        opened: list[tuple[Snapshot, Watch]] = []
        for _ in range(15):
            opened.append(await mail.open(login, "INBOX", read_only=True))
            if rng.random() < 0.5:  # sometimes the index is dropped and loaded again
                mail.close(opened.pop(0)[1])
            await asyncio.sleep(0)
        return opened

    _, one, two = await asyncio.gather(writer(), reader(), reader())
    want = await truth(svc, mb.id)
    for opened in (one, two):
        for snap, watch in opened:
            # a session's copy plus the changes queued since equals the committed state
            uids, flags, modseqs = list(snap.uids), list(snap.flags), list(snap.modseqs)
            for ch in watch.take():
                if ch.kind == "exists":
                    for u in ch.uids:
                        if u not in uids:
                            uids.append(u)
                            flags.append(ch.flags)
                            modseqs.append(ch.modseq)
                elif ch.kind == "flags" and ch.uids[0] in uids:
                    i = uids.index(ch.uids[0])
                    if ch.modseq > modseqs[i]:
                        flags[i], modseqs[i] = ch.flags, ch.modseq
                elif ch.kind == "expunge":
                    for u in ch.uids:
                        if u in uids:
                            i = uids.index(u)
                            del uids[i], flags[i], modseqs[i]
            assert (uids, flags, modseqs) == want
            mail.close(watch)
    assert mail._indexes == {}


async def test_change_queue_is_bounded_and_current_resyncs(
        service: tuple[Service, str]) -> None:
    svc, login = service
    mail = svc.mail
    for _ in range(10):
        await mail.deliver(login, MSG)
    snap, watch = await mail.open(login, "INBOX", read_only=True, max_pending=4)
    mid = snap.mailbox.id
    for uid in range(1, 11):  # ten changes for a queue of four
        await mail.set_flags(mid, [uid], "+", ["\\Flagged"])
        assert len(watch.pending) <= 4
    assert watch.overflowed and watch.pending == [] and watch.wake.is_set()
    await mail.deliver(login, MSG)
    assert watch.pending == []  # nothing queues until the session resyncs
    now = mail.current(watch)
    assert now is not None and state(now) == await truth(svc, mid)
    assert not watch.overflowed
    await mail.deliver(login, MSG)
    assert [c.kind for c in watch.take()] == ["exists"]  # queuing again
    mail.close(watch)


def test_changes_published_during_a_load_are_replayed_once() -> None:
    """Whichever side of the load's read a commit landed on, it counts exactly once."""
    from core.mail import Change
    from core.mail.index import Loaded, MailboxIndex

    seen, flagged = frozenset({"\\Seen"}), frozenset({"\\Flagged"})
    idx = MailboxIndex(1)
    for change in (Change("exists", (3,), seen, 9),        # before the read: in the rows
                   Change("exists", (4,), flagged, 11),    # after the read
                   Change("flags", (2,), flagged, 8),      # older than the row's modseq
                   Change("flags", (1,), flagged, 12),
                   Change("expunge", (3,), modseq=13),
                   Change("exists", (5,), frozenset(), 14)):
        idx.apply(change)
    assert idx.loading and idx.uids == []  # buffered, not applied
    idx.fill(Loaded(uidvalidity=7, uidnext=4, modseq=10, recent_uid=0, uids=[1, 2, 3],
                    flags=[frozenset(), seen, seen], modseqs=[5, 9, 9]))
    assert not idx.loading
    assert idx.uids == [1, 2, 4, 5]
    assert idx.flags == [flagged, seen, flagged, frozenset()]
    assert idx.modseqs == [12, 9, 11, 14]
    assert (idx.uidnext, idx.modseq) == (6, 14)
    idx.apply(Change("exists", (4,), seen, 11))  # published twice: no duplicate
    idx.apply(Change("flags", (1,), seen, 12))  # same modseq again: no change
    assert idx.uids == [1, 2, 4, 5] and idx.flags[0] == flagged


def test_distinct_flag_sets_stay_bounded() -> None:
    from core.mail import Change
    from core.mail import index as index_mod
    from core.mail.index import Loaded, MailboxIndex

    idx = MailboxIndex(1)
    idx.fill(Loaded(1, 3, 1, 0, [1, 2], [frozenset(), frozenset({"$keep"})], [1, 1]))
    for n in range(3 * index_mod.MAX_INTERNED):  # a client cycling through keywords
        idx.apply(Change("flags", (1,), frozenset({f"$k{n}"}), n + 2))
    assert len(idx.interned) <= index_mod.MAX_INTERNED
    assert len(idx.keywords) <= index_mod.MAX_INTERNED + 1
    assert "$keep" in idx.keywords and idx.flags == [frozenset({f"$k{n}"}), {"$keep"}]


def test_a_view_shares_the_lists_and_no_change_reaches_it() -> None:
    """SELECT takes the index's lists without copying; every kind of change to the
    index afterwards (a delivery, flags, a small and a large expunge) leaves the
    view as it was, and a later view sees the change."""
    from core.mail import Change, Mailbox
    from core.mail.index import SMALL_EXPUNGE, Loaded, MailboxIndex

    n = 3 * SMALL_EXPUNGE
    seen = frozenset({"\\Seen"})
    idx = MailboxIndex(1)
    idx.fill(Loaded(7, n + 1, 1, n, list(range(1, n + 1)), [frozenset()] * n, [1] * n))
    box = Mailbox(1, "alice", "INBOX", 7, n + 1, 1, None, True)
    changes = [Change("exists", (n + 1,), seen, 2), Change("flags", (1,), seen, 3),
               Change("expunge", (2,), modseq=4),
               Change("expunge", tuple(range(3, 3 + 2 * SMALL_EXPUNGE)), modseq=5)]
    for change in changes:
        view = idx.view(box, claim_recent=False)
        assert view.uids is idx.uids  # shared, not copied
        before = (list(view.uids), list(view.flags), list(view.modseqs))
        idx.apply(change)
        assert (view.uids, view.flags, view.modseqs) == before
        assert idx.view(box, claim_recent=False).modseqs[-1] >= 1
    assert idx.uids == [1, *range(3 + 2 * SMALL_EXPUNGE, n + 2)]
    assert idx.flags[0] == seen and idx.flags[-1] == seen
