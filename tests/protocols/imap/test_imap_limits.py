"""Limits that protect the server from idle or slow clients, with small configured values.

``imap.max_pending_changes`` bounds the changes queued for a session that does
not read them (it then resyncs), ``imap.autologout`` and ``imap.idle_timeout``
end silent sessions with BYE (RFC 3501 §5.4, RFC 2177 §3).
"""

from __future__ import annotations

import imaplib
import time
from collections.abc import Iterator

import pytest

from core.mail import Watch
from tests.protocols.imap.harness import ThreadTwin
from tests.protocols.imap.test_imap_commands import MSG
from tests.protocols.imap.test_imap_hostile import Raw
from tests.protocols.imap.test_imap_index import view


@pytest.fixture(scope="module")
def small_queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadTwin]:
    twin = ThreadTwin(tmp_path_factory.mktemp("queue"), {"imap.max_pending_changes": 5})
    yield twin
    twin.close()


@pytest.fixture(scope="module")
def short_timeouts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadTwin]:
    twin = ThreadTwin(tmp_path_factory.mktemp("timeouts"),
                      {"imap.autologout": 2, "imap.idle_timeout": 1})
    yield twin
    twin.close()


def login(twin: ThreadTwin, user: tuple[str, str]) -> Raw:
    r = Raw(twin.port)
    r.send(f'a LOGIN "{user[0]}" "{user[1]}"\r\n'.encode())
    assert r.until(b"a")[-1].startswith(b"a OK")
    return r


def watches(twin: ThreadTwin) -> list[Watch]:
    async def get() -> list[Watch]:
        return [w for idx in twin.service.mail._indexes.values() for w in idx.watches]
    return twin.call(get())


def test_a_session_that_never_reads_is_capped_then_resyncs(small_queue: ThreadTwin) -> None:
    twin = small_queue
    user = twin.new_user()
    for _ in range(12):
        twin.deliver(user[0], MSG)
    quiet = login(twin, user)
    quiet.send(b"s SELECT INBOX\r\n")
    assert quiet.until(b"s")[-1].startswith(b"s OK")
    busy = imaplib.IMAP4("127.0.0.1", twin.port)
    busy.login(*user)
    busy.select("INBOX")
    for uid in range(1, 11):  # ten flag changes, more than the five the queue holds
        busy.uid("STORE", str(uid), "+FLAGS", "(\\Flagged)")
    busy.uid("STORE", "2:3", "+FLAGS.SILENT", "(\\Deleted)")
    busy.expunge()
    busy.append("INBOX", "(\\Seen)", None, MSG)
    quiet_watch = [w for w in watches(twin) if w.overflowed]
    assert len(quiet_watch) == 1  # the quiet session's, and only it
    assert len(quiet_watch[0].pending) == 0  # nothing queued beyond the cap
    assert all(len(w.pending) <= 5 for w in watches(twin))
    quiet.send(b"n NOOP\r\n")
    lines = quiet.until(b"n")
    assert lines[-1].startswith(b"n OK")
    assert b"* 3 EXPUNGE" in lines and b"* 2 EXPUNGE" in lines  # from the top down
    assert b"* 11 EXISTS" in lines  # 12 - 2 + 1
    flagged = [ln for ln in lines if b"FETCH" in ln and b"\\Flagged" in ln]
    assert len(flagged) == 8  # uids 1 and 4..10 (2 and 3 are gone)
    assert not any(w.overflowed for w in watches(twin))
    quiet.send(b"f FETCH 1:* (UID FLAGS)\r\n")
    mine = [ln for ln in quiet.until(b"f") if ln.startswith(b"* ")]
    theirs = view(busy)
    assert len(mine) == len(theirs) == 11
    for line, (seq, uid, flags) in zip(mine, theirs, strict=True):
        assert line.startswith(b"* %d FETCH (UID %d " % (seq, uid))
        assert all(f in line for f in flags)
    busy.logout()


def test_autologout_says_bye_and_closes(short_timeouts: ThreadTwin) -> None:
    r = login(short_timeouts, short_timeouts.new_user())
    t0 = time.monotonic()
    assert r.line().startswith(b"* BYE autologout")
    assert 1.5 < time.monotonic() - t0 < 10
    with pytest.raises(ConnectionError):
        r.line()  # and the server closed the connection


def test_a_command_resets_the_autologout_timer(short_timeouts: ThreadTwin) -> None:
    r = login(short_timeouts, short_timeouts.new_user())
    for _ in range(3):
        time.sleep(1)
        r.alive()  # 3 s in all, never 2 s silent
    r.send(b"z LOGOUT\r\n")
    assert r.until(b"z")[-1].startswith(b"* BYE")


def test_idle_timeout_says_bye_and_closes(short_timeouts: ThreadTwin) -> None:
    r = login(short_timeouts, short_timeouts.new_user())
    r.send(b"s SELECT INBOX\r\n")
    assert r.until(b"s")[-1].startswith(b"s OK")
    r.send(b"i IDLE\r\n")
    assert r.line().startswith(b"+ ")
    t0 = time.monotonic()
    assert r.line() == b"* BYE IDLE lasted too long"
    assert 0.8 < time.monotonic() - t0 < 10
    rest = []
    with pytest.raises(ConnectionError):
        while True:
            rest.append(r.line())
    assert all(not ln.startswith(b"*") for ln in rest)  # at most the tagged end of IDLE
