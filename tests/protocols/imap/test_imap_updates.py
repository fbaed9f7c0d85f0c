"""Untagged updates across sessions (RFC 3501 §5.2, §7.4.1) and IDLE push (RFC 2177)."""

from __future__ import annotations

import asyncio
import imaplib
import time

import aioimaplib

from tests.protocols.imap.conftest import Account
from tests.protocols.imap.test_imap_commands import MSG, connect


def untagged(c: imaplib.IMAP4, name: str) -> list[bytes]:
    return [d for d in c.untagged_responses.pop(name, []) if d is not None]  # type: ignore[misc]


def test_exists_flags_expunge_reach_other_session(account: Account) -> None:
    for _ in range(3):
        account.deliver(MSG)
    a, b = connect(account), connect(account)
    a.select("INBOX")
    b.select("INBOX")
    account.deliver(MSG)
    a.store("1", "+FLAGS", "(\\Flagged)")
    a.store("2", "+FLAGS", "(\\Deleted)")
    a.expunge()
    b.untagged_responses.clear()
    b.noop()
    # the expunge first, then the count including the new message: 3 - 1 + 1
    assert untagged(b, "EXPUNGE") == [b"2"]
    assert untagged(b, "EXISTS") == [b"3"]
    assert any(b"\\Flagged" in f for f in untagged(b, "FETCH"))
    a.logout()
    b.logout()


def test_no_expunge_during_fetch_store_search(account: Account) -> None:
    for _ in range(3):
        account.deliver(MSG)
    a, b = connect(account), connect(account)
    a.select("INBOX")
    b.select("INBOX")
    a.store("2", "+FLAGS.SILENT", "(\\Deleted)")
    a.expunge()
    b.untagged_responses.clear()
    typ, data = b.fetch("3", "(UID)")  # sequence numbers still those before the expunge
    assert typ == "OK" and any(b"3 (UID 3)" in d for d in data)  # type: ignore[operator]
    assert untagged(b, "EXPUNGE") == []
    b.search(None, "ALL")
    assert untagged(b, "EXPUNGE") == []
    assert b.search(None, "ALL")[1] == [b"1 2 3"]
    b.uid("FETCH", "1", "(FLAGS)")  # a UID command may announce it
    assert untagged(b, "EXPUNGE") == [b"2"]
    assert b.search(None, "ALL")[1] == [b"1 2"]
    a.logout()
    b.logout()


async def test_idle_push_within_100ms(account: Account) -> None:
    account.deliver(MSG)
    c = aioimaplib.IMAP4(host="127.0.0.1", port=account.port, timeout=10)
    await c.wait_hello_from_server()
    await c.login(account.login, account.password)
    await c.select("INBOX")
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, account.deliver, MSG)  # arrives just before IDLE
    idle = await c.idle_start(timeout=10)
    got = await c.wait_server_push(timeout=5)
    assert any(b"2 EXISTS" in (x if isinstance(x, bytes) else x.encode()) for x in got), got
    lags = []
    for n in (3, 4, 5):
        def deliver() -> float:
            account.deliver(MSG)
            return time.perf_counter()  # durable and committed at this instant
        fut = loop.run_in_executor(None, deliver)
        got = await c.wait_server_push(timeout=5)
        pushed = time.perf_counter()
        lags.append(pushed - await fut)
        assert any(f"{n} EXISTS".encode() in (x if isinstance(x, bytes) else x.encode())
                   for x in got), got
    c.idle_done()
    await asyncio.wait_for(idle, 5)
    assert max(lags) < 0.1, lags  # pushed within 100 ms of the delivery completing
    await c.logout()


async def test_idle_push_of_flags_and_expunge_from_other_session(account: Account) -> None:
    account.deliver(MSG)
    account.deliver(MSG)
    c = aioimaplib.IMAP4(host="127.0.0.1", port=account.port, timeout=10)
    await c.wait_hello_from_server()
    await c.login(account.login, account.password)
    await c.select("INBOX")
    idle = await c.idle_start(timeout=10)
    other = await asyncio.get_running_loop().run_in_executor(None, connect, account)
    other.select("INBOX")
    other.store("1", "+FLAGS", "(\\Deleted)")
    got = await c.wait_server_push(timeout=5)
    assert any(b"FETCH" in x and b"\\Deleted" in x for x in got if isinstance(x, bytes)), got
    other.expunge()
    got = await c.wait_server_push(timeout=5)
    assert any(b"1 EXPUNGE" in x for x in got if isinstance(x, bytes)), got
    c.idle_done()
    await asyncio.wait_for(idle, 5)
    other.logout()
    await c.logout()


def test_body_gone_mid_fetch_gets_a_clean_no(account: Account) -> None:
    """A body that cannot be read (expunged elsewhere, object deleted) fails cleanly.

    The partial FETCH response is dropped, so the tagged NO is not swallowed by an
    announced literal: before, the client waited forever for the literal's bytes.
    """
    uid = account.deliver(MSG)
    account.deliver(MSG)
    twin = account.twin
    mail = twin.service.mail

    async def lose_object() -> None:
        inbox = await mail.mailbox(account.login, "INBOX")
        [meta] = await mail.meta(inbox.id, [uid], structure=False)
        await mail.garbage.delete([meta.ref])  # as an expunge by another session does
    c = connect(account)
    c.sock.settimeout(10)
    c.select("INBOX")
    twin.call(lose_object())
    typ, data = c.fetch("1:2", "(UID BODY.PEEK[])")
    assert typ == "NO"
    assert c.noop()[0] == "OK"  # the stream is still in step
    typ, data = c.fetch("2", "(BODY.PEEK[])")
    assert typ == "OK" and data[0] is not None and data[0][1] == MSG  # type: ignore[index]
    c.logout()
