"""Mail end to end with real twin processes: twin-to-twin, and crash safety."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from core.service import Service
from tests.protocols.smtp.helpers import client_tls, inbox, submit
from tests.twins import TwinProcess


async def read_inbox(data: Path, login: str) -> list[bytes]:
    """Read a twin's Inbox from its data dir, as another process (the CLI) would."""
    service = Service.open(data)
    try:
        async with service.opened_store():
            return await inbox(service, login)
    finally:
        service.close()


async def test_twin_to_twin_mail_is_verified_and_skips_smtp(
        twins: Callable[..., TwinProcess]) -> None:
    alice = twins("alice", sets=["log.level=debug"])  # the per-message lines are debug
    bob = twins("bob", sets=["log.level=debug"])
    message = (f"From: Alice <{alice.login}>\r\nTo: {bob.login}\r\nSubject: twin to twin\r\n"
               f"X-Twin-Verified: forged by alice's client\r\n\r\nHi Bob!\r\n").encode()
    await submit(alice, alice.login, [bob.login], message)
    for _ in range(150):  # the store is read after bob stops: one process per store
        if "mail from twin alice" in bob.log():
            break
        await asyncio.sleep(0.2)
    bob.stop()
    found = [m for m in await read_inbox(bob.data, bob.login) if b"twin to twin" in m]
    [stored] = found
    head = stored.split(b"\r\n\r\n")[0]
    assert re.search(rb"X-Twin-Verified: alice \(key [0-9a-f]{16}", head)
    assert b"forged" not in head
    assert b"Authentication-Results: bob.localhost; twin=pass" in head
    assert b"X-Twin-Warning" not in head
    assert b"Hi Bob!" in stored
    # no SMTP between the twins: bob's SMTP listeners never saw a connection
    assert "routed mail from" not in bob.log() and "mail from twin alice" in bob.log()
    assert "1 twin(s)" in alice.log()


async def test_an_unknown_recipient_at_a_twin_bounces_from_the_senders_own_twin(
        twins: Callable[..., TwinProcess]) -> None:
    # #15 item 6: bob's twin sent the DSN itself, to whatever mail_from the envelope named
    alice = twins("alice")
    bob = twins("bob")
    message = (f"From: <{alice.login}>\r\nTo: {bob.login}, nobody@bob.localhost\r\n"
               f"Subject: half known\r\n\r\nHi\r\n").encode()
    await submit(alice, alice.login, [bob.login, "nobody@bob.localhost"], message)
    dsn = await asyncio.to_thread(_imap_search, alice, "Undelivered Mail")
    assert b"Reporting-MTA: dns; alice.localhost" in dsn  # alice's twin told alice
    assert b"Final-Recipient: rfc822; nobody@bob.localhost" in dsn
    assert b"X-Twin-Verified" not in dsn  # it did not come from bob's twin
    assert "1 unknown (refused in the ack)" in bob.log()
    assert "routed mail from <>" not in bob.log()  # bob's twin sent no bounce anywhere


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_mail_goes_through_on_either_event_loop(
        twins: Callable[..., TwinProcess], loop: str) -> None:
    """uvloop is the default (serve.event_loop); the standard loop stays a working fallback."""
    alice = twins("alice", sets=[f"serve.event_loop={loop}"])
    assert f"event loop: {loop}" in alice.log()
    message = (f"From: <{alice.login}>\r\nTo: <{alice.login}>\r\nSubject: on {loop}\r\n"
               f"\r\nHello\r\n").encode()
    await submit(alice, alice.login, [alice.login], message)  # STARTTLS + AUTH
    found = await asyncio.to_thread(_imap_search, alice, f"on {loop}")
    assert found.endswith(b"\r\n\r\nHello\r\n")


def _imap_search(twin: TwinProcess, subject: str, timeout: float = 60) -> bytes:
    """The one message with ``subject`` in the twin's Inbox, read over IMAPS."""
    import imaplib

    with imaplib.IMAP4_SSL("127.0.0.1", twin.port("imaps"), ssl_context=client_tls()) as imap:
        imap.login(twin.login, twin.password)
        deadline = time.monotonic() + timeout
        while True:
            imap.select("INBOX")
            _, [uids] = imap.uid("SEARCH", "SUBJECT", f'"{subject}"')
            if uids or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        [uid] = uids.split()
        _, data = imap.uid("FETCH", uid, "(BODY.PEEK[])")
        return bytes(data[0][1])


def _blast(port: int, count: int, acked: list[str], stop: threading.Event,
           prefix: str) -> None:
    """Send ``count`` messages on reused connections; record the ones that got 250."""
    import smtplib

    sent = 0
    while sent < count and not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                while sent < count:
                    subject = f"{prefix}-{sent}"
                    body = f"Subject: {subject}\r\nFrom: load@example.com\r\n\r\nx\r\n"
                    client.sendmail("load@example.com", ["bob@bob.localhost"], body)
                    acked.append(subject)  # only after the 250
                    sent += 1
        except (OSError, smtplib.SMTPException):
            if stop.is_set():
                return
            time.sleep(0.05)


@pytest.mark.slow
async def test_kill_9_under_load_keeps_every_acked_message_once(
        twins: Callable[..., TwinProcess]) -> None:
    bob = twins("bob")
    port = bob.port("smtp")
    acked: list[str] = []
    stop = threading.Event()
    workers = [threading.Thread(target=_blast, args=(port, 100, acked, stop, f"w{i}"))
               for i in range(20)]  # 20 x 100 = 2,000 messages
    for w in workers:
        w.start()
    deadline = time.monotonic() + 60
    while len(acked) < 600 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    bob.kill9()
    stop.set()
    for w in workers:
        await asyncio.to_thread(w.join, 30)
    assert len(acked) >= 600, "the load did not get going"
    bob.start()
    bob.stop()
    stored = await read_inbox(bob.data, bob.login)
    subjects = Counter(m.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode()
                       for m in stored if b"Subject: w" in m)
    missing = [s for s in acked if subjects[s] == 0]
    doubled = [s for s, n in subjects.items() if n > 1]
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:5]}"
    assert not doubled, f"stored twice: {doubled[:5]}"
    assert len(subjects) >= len(acked)  # some un-acked ones may be there (at most once)
