"""SORT and THREAD keys: derived from a header once, kept beside it (core.mail.sortkeys)."""

from __future__ import annotations

import pytest

from core.mail import sortkeys
from core.mail.sortkeys import SortKeys, derive
from core.service import Service


def test_derive_reads_what_sort_and_thread_compare() -> None:
    keys = derive(b"From: =?utf-8?q?Zo=C3=AB?= <zoe@example.org>\r\n"
                  b"To: team: a@x.org, b@y.org;\r\n"
                  b"Cc: <c@z.org>\r\n"
                  b"Subject: Re: [list] Fwd: Plans (fwd)\r\n"
                  b"Date: Mon, 01 Jan 2024 12:00:00 +0100\r\n"
                  b"Message-ID: <m1@x>\r\n"
                  b"References: <r1@x>\r\n <r2@x>\r\n"
                  b"In-Reply-To: <ignored@x>\r\n\r\n")
    assert keys == SortKeys(sent=1704106800.0, subject="PLANS", reply=True, message_id="m1@x",
                            parents="r1@x r2@x", from_key="ZOE", to_key="TEAM", cc_key="C",
                            display_from="ZOË", display_to="TEAM")


def test_derive_falls_back_where_a_header_is_missing_or_unreadable() -> None:
    assert derive(b"Subject: hello\r\nIn-Reply-To: <p@x> <q@x>\r\nDate: yesterday\r\n\r\n") \
        == SortKeys(None, "HELLO", False, "", "p@x", "", "", "", "", "")
    assert derive(b"") == sortkeys.NO_KEYS


async def _keys_rows(svc: Service) -> list[tuple[int, int]]:
    return await svc.db.run(lambda c: c.execute(
        "SELECT uid, version FROM mail_sort ORDER BY mailbox, uid").fetchall())


async def test_keys_are_derived_once_kept_and_go_with_their_message(
        service: tuple[Service, str], monkeypatch: pytest.MonkeyPatch) -> None:
    svc, login = service
    mail = svc.mail
    uids = [await mail.deliver(login, b"Subject: %d\r\nDate: Mon, 01 Jan 2024 1%d:00:00 +0000"
                               b"\r\n\r\nx\r\n" % (n, n)) for n in (3, 1, 2)]
    mb = await mail.mailbox(login, "INBOX")
    assert len(await _keys_rows(svc)) == 3  # kept when filed

    def refuse(header: bytes) -> SortKeys:
        raise AssertionError("derived again")

    monkeypatch.setattr(sortkeys, "derive", refuse)
    first = await mail.sort_keys(mb.id, uids, ["sent", "subject"])  # read back, not derived
    assert first.uids == uids and first.keys["subject"] == ["3", "1", "2"]
    again = await mail.sort_keys(mb.id, uids[1:], ["sent"])
    assert again.uids == uids[1:] and again.sent() == first.sent()[1:]
    assert "subject" not in again.keys  # only the columns asked for
    monkeypatch.undo()

    # messages filed before keys were kept at filing: derived at the first SORT, kept
    await svc.db.run(lambda c: c.execute("DELETE FROM mail_sort").close())
    derived = await mail.sort_keys(mb.id, uids, ["sent", "subject"])
    assert derived.keys == first.keys and len(await _keys_rows(svc)) == 3

    monkeypatch.setattr(sortkeys, "KEYS_VERSION", sortkeys.KEYS_VERSION + 1)
    await mail.sort_keys(mb.id, uids, ["subject"])  # a new derivation replaces old rows
    assert {v for _, v in await _keys_rows(svc)} == {sortkeys.KEYS_VERSION}

    await mail.set_flags(mb.id, uids[:1], "+", ["\\Deleted"])
    await mail.expunge(mb.id)
    assert len(await _keys_rows(svc)) == 2  # the expunged message's keys went with it
    assert (await mail.sort_keys(mb.id, uids, ["subject"])).uids == uids[1:]
    await mail.copy(mb.id, uids[1:2], login, "Archive", move=True)
    assert [u for u, _ in await _keys_rows(svc)] == uids[2:]
    archive = await mail.mailbox(login, "Archive")
    moved = await mail.sort_keys(archive.id, [1], ["subject"])  # derived for the copy
    assert moved.keys["subject"] == ["1"] and len(await _keys_rows(svc)) == 2
    await mail.rename_mailbox(login, "INBOX", "Old")  # INBOX's messages move, keys too
    old = await mail.mailbox(login, "Old")
    assert await svc.db.run(lambda c: c.execute(
        "SELECT mailbox, uid FROM mail_sort WHERE uid = ?", (uids[2],)).fetchall()) == \
        [(old.id, uids[2])]
    await mail.delete_mailbox(login, "Archive")
    assert [u for u, _ in await _keys_rows(svc)] == [uids[2]]


async def test_a_message_without_a_date_sorts_by_its_internal_date(
        service: tuple[Service, str]) -> None:
    svc, login = service
    uid = await svc.mail.deliver(login, b"Subject: undated\r\n\r\nx\r\n", internal_date=1234.0)
    mb = await svc.mail.mailbox(login, "INBOX")
    found = await svc.mail.sort_keys(mb.id, [uid], ["sent"])
    assert found.sent() == [1234.0] and found.keys["sent"] == [None]


async def test_a_header_derive_cannot_read_does_not_stop_filing(
        service: tuple[Service, str], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A bug in ``derive`` on a hostile header must not cost the delivery (nor
    the other messages of its filing batch): the keys wait for the first SORT."""
    svc, login = service

    def broken(header: bytes) -> SortKeys:
        raise ValueError("unreadable")

    monkeypatch.setattr(sortkeys, "derive", broken)
    uid = await svc.mail.deliver(login, b"Subject: odd\r\n\r\nx\r\n")
    assert await _keys_rows(svc) == []
    assert "left for the first SORT: ValueError" in caplog.text
    monkeypatch.undo()
    mb = await svc.mail.mailbox(login, "INBOX")
    found = await svc.mail.sort_keys(mb.id, [uid], ["subject"])
    assert found.keys["subject"] == ["ODD"] and len(await _keys_rows(svc)) == 1
