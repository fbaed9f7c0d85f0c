"""QRESYNC's expunge records stay bounded, and resyncs from before the oldest kept
one are still right (issue 23 item 2; RFC 7162 §3.2.5.1 and §3.2.5.2)."""

from __future__ import annotations

import imaplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.protocols.imap.harness import ThreadTwin

KEEP = 5
MSG = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: s\r\n\r\nbody\r\n"


@pytest.fixture
def twin(tmp_path: Path) -> Iterator[ThreadTwin]:
    t = ThreadTwin(tmp_path, sets={"mail.vanished_keep": KEEP})
    yield t
    t.close()


def uid_set(text: bytes) -> set[int]:
    out: set[int] = set()
    for part in text.decode().split(","):
        lo, _, hi = part.partition(":")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def qresync_select(twin: ThreadTwin, login: str, password: str, validity: int,
                   since: int) -> set[int]:
    c = imaplib.IMAP4("127.0.0.1", twin.port)
    c.login(login, password)
    assert c._simple_command("ENABLE", "QRESYNC")[0] == "OK"
    typ, _ = c._simple_command("SELECT", "INBOX", f"(QRESYNC ({validity} {since}))")
    assert typ == "OK"
    vanished = c.untagged_responses.get("VANISHED", [])
    c.state = "SELECTED"
    c.logout()
    if not vanished:
        return set()
    text = vanished[0]
    assert isinstance(text, bytes) and text.startswith(b"(EARLIER) ")
    return uid_set(text[len(b"(EARLIER) "):])


def test_expunge_records_are_bounded_and_old_resyncs_stay_correct(twin: ThreadTwin) -> None:
    login, password = twin.new_user()
    for _ in range(40):
        twin.deliver(login, MSG)
    mail = twin.service.mail
    mb = twin.call(mail.mailbox(login, "INBOX"))
    validity, start = mb.uidvalidity, mb.modseq

    c = imaplib.IMAP4("127.0.0.1", twin.port)
    c.login(login, password)
    c.select("INBOX")
    expunged: list[int] = []
    marks: dict[int, int] = {}  # after how many expunges -> the mailbox's modseq then
    for uid in [*range(2, 30, 2), 31, 33, 35, 37]:  # one expunge (one modseq) each
        c.uid("STORE", str(uid), "+FLAGS", "(\\Deleted)")
        c.expunge()
        expunged.append(uid)
        marks[len(expunged)] = twin.call(mail.mailbox(login, "INBOX")).modseq
    c.logout()

    rows = twin.call(mail.reads.run(lambda db: db.execute(
        "SELECT count(*) FROM mail_vanished").fetchone()[0]))
    assert rows <= KEEP, f"{rows} expunge records kept for a bound of {KEEP}"
    existing = set(range(1, 41)) - set(expunged)

    # from before any expunge (far below the oldest kept record): every one of them
    assert qresync_select(twin, login, password, validity, start) == set(expunged)
    # from inside the kept window: exactly those after it
    recent = marks[len(expunged) - 3]
    assert qresync_select(twin, login, password, validity, recent) == set(expunged[-3:])
    # from between: every uid expunged since, and no uid that exists
    middle = marks[6]
    got = qresync_select(twin, login, password, validity, middle)
    assert set(expunged[6:]) <= got and not got & existing
    # UID FETCH ... (CHANGEDSINCE VANISHED) answers the same way
    c = imaplib.IMAP4("127.0.0.1", twin.port)
    c.login(login, password)
    c._simple_command("ENABLE", "QRESYNC")
    c.select("INBOX")
    typ, _ = c._simple_command("UID", "FETCH", "1:*", "(FLAGS)",
                               f"(CHANGEDSINCE {start} VANISHED)")
    assert typ == "OK"
    text = c.untagged_responses["VANISHED"][0]
    assert isinstance(text, bytes)
    assert uid_set(text[len(b"(EARLIER) "):]) == set(expunged)
    c.logout()
