"""Spam filtering end to end: a real rspamd (tests/rspamd.py) or the built-in filter,
mail over SMTP to an in-process twin, moves over IMAP, what rspamd then knows.

Each rspamd case would fail with the feature off: without scanning GTUBE is
delivered, the probe lands in the Inbox and rspamd's ``learned`` stays put.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from email.utils import make_msgid
from pathlib import Path

import aiosmtplib
import httpx
import imapclient
import pytest

from core.spam.builtin import GTUBE
from tests.protocols.smtp.helpers import Twin, inbox, running_twin
from tests.rspamd import PASSWORD, PROBE, Rspamd, start_rspamd
from tests.servers import free_port

BODY = ("Hello Bob, could we meet tomorrow morning to talk about the garden project and "
        "the vegetables we want to plant this spring? I will bring the seeds and the "
        "drawings of the raised beds. Let me know if ten o'clock works for you.\r\n")


def message(subject: str, sender: str = "carol@example.org", body: str = BODY,
            extra: str = "") -> bytes:
    return (f"From: Carol <{sender}>\r\nTo: alice@alice.localhost\r\nSubject: {subject}\r\n"
            f"Date: Sun, 06 Dec 2026 10:00:00 +0000\r\nMessage-ID: {make_msgid()}\r\n"
            f"{extra}\r\n{body}").encode()


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rspamd]:
    server = start_rspamd(tmp_path_factory.mktemp("rspamd"))
    try:
        yield server
    finally:
        server.close()


def rspamd_sets(server: Rspamd, **more: str) -> dict[str, str]:
    return {"spam.rspamd_url": server.url, "spam.rspamd_controller_url": server.controller_url,
            "spam.rspamd_password": PASSWORD, **more}


async def send(twin: Twin, data: bytes, sender: str = "carol@example.org") -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=twin.port("smtp"),
                               start_tls=False) as client:
        await client.sendmail(sender, [twin.login], data)


async def refused(twin: Twin, data: bytes) -> aiosmtplib.SMTPDataError:
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(twin, data)
    return err.value


def imap_move(twin: Twin, source: str, dest: str, subject: str) -> None:
    """MOVE (RFC 6851) the message with ``subject`` from ``source`` to ``dest``, as a client."""
    c = imapclient.IMAPClient("127.0.0.1", port=twin.port("imap"), ssl=False, timeout=10)
    try:
        c.login(twin.login, twin.password)
        c.select_folder(source)
        uids = c.search(["SUBJECT", subject])
        assert uids, f"no message {subject!r} in {source}"
        c.move(uids, dest)
    finally:
        c.logout()


def header(data: bytes, name: str) -> list[str]:
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    return [line.split(":", 1)[1].strip() for line in head.split("\r\n")
            if line.lower().startswith(name.lower() + ":")]


async def test_rspamd_rejects_gtube_files_spam_into_junk_and_learns_from_moves(
        tmp_path: Path, rspamd: Rspamd) -> None:
    async with running_twin(tmp_path, sets=rspamd_sets(rspamd)) as twin:
        service, login = twin.service, twin.login
        err = await refused(twin, message("test", body=GTUBE.decode() + "\r\n"))
        assert (err.code, err.message[:5]) == (550, "5.7.1")

        await send(twin, message(f"cheap watches {PROBE}"))
        await send(twin, message("garden project", extra="X-Spam-Status: No, forged\r\n"))
        junk, mail = await inbox(service, login, "Junk"), await inbox(service, login)
        assert len(junk) == 1 and b"cheap watches" in junk[0]
        assert header(junk[0], "X-Spam-Status")[0].startswith("Yes, score=")
        assert "filter=rspamd" in header(junk[0], "X-Spam-Status")[0]
        assert len(mail) == 1
        assert header(mail[0], "X-Spam-Status") == [header(mail[0], "X-Spam-Status")[0]]
        assert header(mail[0], "X-Spam-Status")[0].startswith("No, score=")

        # the owner disagrees both ways: each move is one lesson for rspamd's Bayes
        before = rspamd.learned()
        await asyncio.to_thread(imap_move, twin, "Junk", "INBOX", "cheap watches")
        await service.spam.learner.drain()
        assert rspamd.learned() == before + 1
        await asyncio.to_thread(imap_move, twin, "INBOX", "Junk", "garden project")
        await service.spam.learner.drain()
        assert rspamd.learned() == before + 2
        # ... and it learnt them as what they were moved as: a second lesson is refused
        watches, = [m for m in await inbox(service, login) if b"cheap watches" in m]
        garden, = [m for m in await inbox(service, login, "Junk") if b"garden" in m]
        for data, path, already in ((watches, "learnham", "ham"),
                                    (garden, "learnspam", "spam")):
            r = httpx.post(f"{rspamd.controller_url}/{path}", content=data,
                           headers={"Password": PASSWORD}, timeout=10)
            assert f"already learned as {already}" in r.text, r.text

        # deleting spam (Junk -> Trash) is not calling it ham
        await asyncio.to_thread(imap_move, twin, "Junk", "Trash", "garden project")
        await service.spam.learner.drain()
        assert rspamd.learned() == before + 2


async def test_rspamd_down_delivers_with_a_note_or_defers(tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    async with running_twin(tmp_path, sets={"spam.rspamd_url": nowhere}) as twin:
        await send(twin, message("while rspamd is down", body=GTUBE.decode() + "\r\n"))
        mail, = await inbox(twin.service, twin.login)
        assert header(mail, "X-Spam-Status")[0].startswith("Unknown, not scanned (rspamd: ")
    async with running_twin(tmp_path / "defer", sets={"spam.rspamd_url": nowhere,
                                                      "spam.on_failure": "defer"}) as twin:
        err = await refused(twin, message("deferred while rspamd is down"))
        assert (err.code, err.message[:5]) == (451, "4.7.1")
        assert await inbox(twin.service, twin.login) == []


async def test_builtin_filter_rejects_gtube_and_learns_senders_from_moves(
        tmp_path: Path) -> None:
    async with running_twin(tmp_path) as twin:  # no rspamd: the built-in filter
        service, login = twin.service, twin.login
        err = await refused(twin, message("test", body=GTUBE.decode() + "\r\n"))
        assert (err.code, err.message[:5]) == (550, "5.7.1")

        await send(twin, message("first offer", sender="deals@shop.example"))
        assert len(await inbox(service, login)) == 1
        await asyncio.to_thread(imap_move, twin, "INBOX", "Junk", "first offer")
        await service.spam.learner.drain()
        await send(twin, message("second offer", sender="deals@shop.example"))
        junk = await inbox(service, login, "Junk")
        assert [b"second offer" in m for m in junk] == [False, True]
        assert "filter=builtin" in header(junk[1], "X-Spam-Status")[0]

        await asyncio.to_thread(imap_move, twin, "Junk", "INBOX", "second offer")
        await service.spam.learner.drain()
        await send(twin, message("third offer", sender="deals@shop.example"))
        assert any(b"third offer" in m for m in await inbox(service, login))
    # the reputation is in twin.db: a restarted twin still knows the sender
    from core.db import Database
    from core.spam.reputation import TRUSTED, Reputation
    db = Database(tmp_path / "alice" / "twin.db")
    try:
        assert Reputation(db).of("deals@shop.example") == TRUSTED
    finally:
        db.close()


async def test_without_a_filter_gtube_is_delivered(tmp_path: Path) -> None:
    """The control: with spam.builtin off and no rspamd, the cases above would fail."""
    async with running_twin(tmp_path, sets={"spam.builtin": "false"}) as twin:
        await send(twin, message("test", body=GTUBE.decode() + "\r\n"))
        mail, = await inbox(twin.service, twin.login)
        assert header(mail, "X-Spam-Status") == []
