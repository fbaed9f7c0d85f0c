"""A session's selected mailbox (``protocols.imap.selected``): numbers and lifetime."""

from __future__ import annotations

import gc
import random
import weakref
from collections.abc import Iterator

import pytest

from core.mail import Mailbox, Snapshot, Watch
from protocols.imap.selected import SMALL_LOOKUP, Selected


def selected(uids: list[int]) -> Selected:
    mailbox = Mailbox(1, "alice", "INBOX", 7, uids[-1] + 1 if uids else 1, 1, None, True)
    snap = Snapshot(mailbox, uids, [frozenset()] * len(uids), [1] * len(uids), set())
    return Selected(snap, Watch(1), read_only=False)


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    yield
    gc.enable()


def test_seqs_of_any_order_and_size_agrees_with_seq_of() -> None:
    rng = random.Random(5)
    uids = sorted(rng.sample(range(1, 10 * SMALL_LOOKUP), 3 * SMALL_LOOKUP))
    sel = selected(uids)
    for asked in (uids, uids[::-1], rng.sample(uids, 10), rng.sample(uids, 2 * SMALL_LOOKUP),
                  [uids[0], 10 * SMALL_LOOKUP + 1, uids[-1]] * SMALL_LOOKUP, []):
        assert sel.seqs_of(asked) == [sel.seq_of(u) for u in asked]
    assert sel.seqs_of([10 * SMALL_LOOKUP + 1] * SMALL_LOOKUP) == [0] * SMALL_LOOKUP


def test_a_dropped_selection_is_freed_at_once(no_collector: None) -> None:
    """Nothing in a selection points back at it: its lists (a mailbox's size
    each) go when the session drops it, not at the cyclic collector's next pass,
    which walked every one of them while they waited."""
    sel = selected(list(range(1, 1001)))
    sel.flags[5] = frozenset({"\\Seen"})
    assert sel.modseqs.get(5, 0) == 1 and 5 in sel.flags
    gone = weakref.ref(sel)
    del sel
    assert gone() is None


def test_a_session_writes_only_its_own_copy_of_the_shared_lists() -> None:
    """A session shares the index's lists until its first change; its changes
    (a delivery it is told of, flags, an expunge) never reach the index."""
    from core.mail import Change
    from core.mail.index import Loaded, MailboxIndex

    n = 10
    idx = MailboxIndex(1)
    idx.fill(Loaded(7, n + 1, 1, n, list(range(1, n + 1)), [frozenset()] * n, [1] * n))
    box = Mailbox(1, "alice", "INBOX", 7, n + 1, 1, None, True)
    kept = (list(idx.uids), list(idx.flags), list(idx.modseqs))
    for change in (Change("exists", (n + 1,), frozenset(), 2),
                   Change("flags", (1,), frozenset({"\\Seen"}), 3),
                   Change("expunge", (2,), modseq=4)):
        sel = Selected(idx.view(box, claim_recent=False), Watch(1), read_only=False)
        assert sel.uids is idx.uids
        list(sel.apply([change], expunge_ok=True, condstore=False, qresync=False))
        assert (idx.uids, idx.flags, idx.modseqs) == kept
    sel = Selected(idx.view(box, claim_recent=False), Watch(1), read_only=False)
    sel.flags[3] = frozenset({"\\Flagged"})
    assert sel.flags[3] == {"\\Flagged"} and idx.flags == kept[1]
