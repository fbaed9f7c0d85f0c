"""NOTIFY (RFC 5465): news arrives unasked, between commands, and only what was asked for."""

from __future__ import annotations

import re
import time

import pytest

from tests.protocols.imap.conftest import Account
from tests.protocols.imap.test_imap_catenate import cmd, login
from tests.protocols.imap.test_imap_hostile import Raw

MSG = b"From: a@example.org\r\nSubject: s\r\n\r\nbody\r\n"


def unasked(r: Raw, count: int) -> list[bytes]:
    """Lines the server sends while no command is in progress."""
    return [r.line() for _ in range(count)]


def test_status_of_other_mailboxes_arrives_between_commands(account: Account) -> None:
    account.deliver(MSG)
    r = login(account)
    assert cmd(r, "a", b"CREATE Lists")[-1].startswith(b"a OK")
    assert cmd(r, "b", b"SELECT Lists")[-1].startswith(b"b OK")
    lines = cmd(r, "n", b"NOTIFY SET STATUS (PERSONAL (MessageNew MessageExpunge))")
    assert lines[-1].startswith(b"n OK"), lines
    status = [x for x in lines if x.startswith(b"* STATUS")]
    assert not any(b"Lists" in x for x in status), lines  # the selected one: not by STATUS
    inbox = [x for x in status if x.startswith(b"* STATUS INBOX ")]
    assert len(inbox) == 1 and re.match(
        rb"\* STATUS INBOX \(MESSAGES 1 UIDNEXT 2 UIDVALIDITY \d+\)$", inbox[0]), lines
    account.deliver(MSG)  # no command in progress: the news comes anyway
    assert re.match(rb"\* STATUS INBOX \(MESSAGES 2 UIDNEXT 3 UIDVALIDITY \d+\)$",
                    unasked(r, 1)[0])
    o = login(account)
    assert cmd(o, "s", b"SELECT INBOX")[-1].startswith(b"s OK")
    assert cmd(o, "e", b"STORE 1 +FLAGS (\\Deleted)")[-1].startswith(b"e OK")
    assert cmd(o, "x", b"EXPUNGE")[-1].startswith(b"x OK")
    assert unasked(r, 1) == [b"* STATUS INBOX (MESSAGES 1)"]  # §5.3: the count
    # FlagChange was not asked for: a flag change says nothing
    assert cmd(o, "f", b"STORE 1 +FLAGS (\\Flagged)")[-1].startswith(b"f OK")
    assert cmd(r, "z", b"NOOP") == [b"z OK NOOP completed"]
    # NOTIFY NONE: nothing more
    assert cmd(r, "q", b"NOTIFY NONE")[-1].startswith(b"q OK")
    account.deliver(MSG)
    assert cmd(r, "z2", b"NOOP") == [b"z2 OK NOOP completed"]


def test_mailbox_names_and_subscriptions_as_list(account: Account) -> None:
    r = login(account)
    assert cmd(r, "n", b"NOTIFY SET (PERSONAL (MailboxName SubscriptionChange))")[-1] \
        .startswith(b"n OK")
    o = login(account)
    assert cmd(o, "a", b"CREATE Projects")[-1].startswith(b"a OK")
    assert unasked(r, 1) == [b'* LIST () "/" Projects']
    assert cmd(o, "b", b"SUBSCRIBE Projects")[-1].startswith(b"b OK")
    assert unasked(r, 1) == [b'* LIST (\\Subscribed) "/" Projects']
    assert cmd(o, "c", b"RENAME Projects Old")[-1].startswith(b"c OK")
    line = unasked(r, 1)[0]
    assert line.startswith(b'* LIST (') and line.endswith(b'"/" Old ("OLDNAME" (Projects))')
    assert cmd(o, "d", b"DELETE Old")[-1].startswith(b"d OK")
    assert unasked(r, 1)[0].startswith(b"* LIST (\\NonExistent")


def test_selected_mailbox_news_with_fetch_attributes(account: Account) -> None:
    r = login(account)
    assert cmd(r, "s", b"SELECT INBOX")[-1].startswith(b"s OK")
    lines = cmd(r, "n", b"NOTIFY SET (SELECTED (MessageNew (UID FLAGS) MessageExpunge))")
    assert lines[-1].startswith(b"n OK"), lines
    account.deliver(MSG)
    got = unasked(r, 3)
    assert got == [b"* 1 EXISTS", b"* 1 RECENT", b"* 1 FETCH (UID 1 FLAGS (\\Recent))"], got


@pytest.mark.parametrize("text", [
    b"NOTIFY", b"NOTIFY SET", b"NOTIFY SET STATUS", b"NOTIFY BOGUS",
    b"NOTIFY SET (NOWHERE (MessageNew))", b"NOTIFY SET (PERSONAL (Bogus))",
    b"NOTIFY SET (PERSONAL MessageNew)", b"NOTIFY SET (MAILBOXES (MessageNew))",
    b"NOTIFY SET (PERSONAL (MessageNew (UID)))",  # FETCH attributes: selected only
    b"NOTIFY SET (SELECTED (MessageNew (BOGUS[)))",
    b"NOTIFY SET " + b" ".join([b"(PERSONAL (MessageNew))"] * 65),
    b"NOTIFY SET (MAILBOXES (" + b" ".join([b"x"] * 1001) + b") (MessageNew))",
])
def test_malformed_notify_is_bad(account: Account, text: bytes) -> None:
    r = login(account)
    assert cmd(r, "a", text)[-1].startswith(b"a BAD"), text
    r.alive()


def test_unsupported_events_are_named(account: Account) -> None:
    r = login(account)
    line = cmd(r, "a", b"NOTIFY SET (PERSONAL (MessageNew AnnotationChange))")[-1]
    assert line.startswith(b"a NO [BADEVENT (MessageNew MessageExpunge FlagChange "
                           b"MailboxName SubscriptionChange)]"), line


def test_sessions_leave_no_observer_behind(account: Account) -> None:
    observers = account.twin.service.mail.observers
    before = len(observers)
    for _ in range(3):
        r = login(account)
        assert cmd(r, "n", b"NOTIFY SET (INBOXES (MessageNew))")[-1].startswith(b"n OK")
        assert cmd(r, "n2", b"NOTIFY SET (INBOXES (MessageNew))")[-1].startswith(b"n2 OK")
        assert len(observers) == before + 1
        r.send(b"l LOGOUT\r\n")
        r.until(b"l")
        r.sock.close()
    for _ in range(100):
        if len(observers) == before:
            break
        time.sleep(0.05)
    assert len(observers) == before
