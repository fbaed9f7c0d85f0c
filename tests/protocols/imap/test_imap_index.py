"""The shared mailbox index seen through IMAP: sessions agree after concurrent changes."""

from __future__ import annotations

import imaplib
import random
import re
import threading
import time

from tests.protocols.imap.conftest import Account
from tests.protocols.imap.test_imap_commands import MSG, connect

_FETCH = re.compile(rb"(\d+) \(UID (\d+) FLAGS \(([^)]*)\)\)")


def view(c: imaplib.IMAP4) -> list[tuple[int, int, frozenset[bytes]]]:
    """(seq, uid, flags without \\Recent) of every message, as this session numbers them."""
    c.noop()  # take every pending update first
    typ, data = c.fetch("1:*", "(UID FLAGS)")
    assert typ == "OK"
    out = []
    for item in data:
        raw = item[0] if isinstance(item, tuple) else item
        m = _FETCH.match(raw or b"")
        if m is None:
            continue  # "EXISTS 0" gives [None]
        flags = frozenset(m.group(3).split()) - {b"\\Recent"}
        out.append((int(m.group(1)), int(m.group(2)), flags))
    c.untagged_responses.clear()
    return sorted(out)


def indexes(account: Account) -> dict[int, object]:
    async def get() -> dict[int, object]:
        return dict(account.twin.service.mail._indexes)
    return account.twin.call(get())


def watched(account: Account) -> set[int]:
    async def get() -> set[int]:
        return {k for k, idx in account.twin.service.mail._indexes.items() if idx.watches}
    return account.twin.call(get())


def test_sessions_agree_after_concurrent_store_expunge_append(account: Account) -> None:
    for _ in range(30):
        account.deliver(MSG)
    sessions = [connect(account) for _ in range(3)]
    for c in sessions:
        c.select("INBOX")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        c = sessions[n]
        rng = random.Random(n)
        try:
            for step in range(40):
                op = rng.randrange(5)
                uid = str(rng.randrange(1, 40))
                if op == 0:
                    c.uid("STORE", uid, "+FLAGS", rng.choice(["(\\Seen)", "(\\Flagged)", "($W)"]))
                elif op == 1:
                    c.uid("STORE", uid, "-FLAGS", "(\\Seen \\Flagged)")
                elif op == 2:
                    c.uid("STORE", uid, "+FLAGS.SILENT", "(\\Deleted)")
                    c.expunge() if step % 2 else c.uid("EXPUNGE", uid)
                elif op == 3:
                    c.append("INBOX", "(\\Seen)" if step % 2 else None, None, MSG)
                else:
                    account.deliver(MSG)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    views = [view(c) for c in sessions]
    fresh = connect(account)
    fresh.select("INBOX")
    truth = view(fresh)
    assert len(truth) > 10
    assert [seq for seq, _, _ in truth] == list(range(1, len(truth) + 1))
    for v in views:
        assert v == truth
    for c in [*sessions, fresh]:
        c.logout()


def test_reselect_shares_one_index_kept_after_the_last_session_leaves(account: Account) -> None:
    for _ in range(5):
        account.deliver(MSG)
    a, b = connect(account), connect(account)
    a.select("INBOX")
    [inbox] = watched(account)
    idx = indexes(account)[inbox]
    a.select("INBOX")  # the same mailbox again: served from the same index
    b.select("INBOX", readonly=True)
    assert watched(account) == {inbox} and indexes(account)[inbox] is idx
    account.deliver(MSG)
    a.store("1", "+FLAGS", "(\\Flagged)")
    typ, data = b.store("2", "+FLAGS", "(\\Flagged)")
    assert typ == "NO" and b"READ-ONLY" in data[0]
    assert view(a) == view(b) and len(view(b)) == 6
    a.select("Archive")
    assert len(watched(account)) == 2
    kept = set(indexes(account))
    a.logout()
    b.logout()
    deadline = time.monotonic() + 5  # the server lets go just after answering LOGOUT
    while watched(account) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert watched(account) == set()  # kept for the next session, watched by nobody
    assert set(indexes(account)) == kept and indexes(account)[inbox] is idx
