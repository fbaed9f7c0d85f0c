"""A large mailbox's sort keys kept packed (core.mail.keptkeys).

What a SORT or THREAD reads through the packed copy must be exactly what it
reads from the rows: for the messages filed after the copy was taken (the
tail), without the messages expunged since, for any subset of uids, and
never a copy of another UIDVALIDITY or keys version.
"""

from __future__ import annotations

import pytest

from core.mail import indexfile, keptkeys, sortkeys
from core.mail import store as mail_store
from core.service import Service

ALL = list(sortkeys.COLUMNS)


@pytest.fixture(autouse=True)
def small_min(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keptkeys, "MIN_MESSAGES", 3)
    monkeypatch.setattr(indexfile, "MIN_MESSAGES", 3)


HEADERS = [
    b"Subject: Re: plain\r\nDate: Mon, 01 Jan 2024 10:00:00 +0000\r\nMessage-ID: <a@x>\r\n",
    b"Subject: =?utf-8?q?Zo=C3=AB_=22quoted=22_\\_back?=\r\nMessage-ID: <b@x>\r\n"
    b"References: <a@x>\r\nFrom: Zo\xc3\xab <z@x.org>\r\n",  # no Date: sent is None
    b"Subject: =?utf-8?b?AGN0bAA=?=\r\nDate: Tue, 02 Jan 2024 10:00:00 +0100\r\n"
    b"In-Reply-To: <b@x>\r\nTo: team: a@x.org;\r\nCc: c@y.org\r\n",  # NULs in the subject
    b"Subject: Fwd: four\r\nDate: yesterday\r\nMessage-ID: <d@x>\r\n",
]


async def _fill(svc: Service, login: str, headers: list[bytes]) -> list[int]:
    return [await svc.mail.deliver(login, h + b"\r\nbody\r\n", internal_date=1000.0 + n)
            for n, h in enumerate(headers)]


async def _from_rows(svc: Service, mailbox_id: int, uids: list[int],
                     fields: list[str] = ALL) -> sortkeys.KeyColumns:
    """The keys read from rows alone (the packed copy set aside, then put back)."""
    saved = await svc.db.run(lambda c: c.execute(
        "SELECT * FROM mail_sort_kept WHERE mailbox = ?", (mailbox_id,)).fetchall())
    await svc.db.run(keptkeys.drop, mailbox_id)
    found = await svc.mail.sort_keys(mailbox_id, uids, fields)
    for row in saved:
        await svc.db.run(lambda c, r=row: c.execute(
            f"INSERT INTO mail_sort_kept VALUES ({', '.join('?' * len(r))})", r).close())
    return found


def _same(a: sortkeys.KeyColumns, b: sortkeys.KeyColumns) -> None:
    assert (a.uids, a.size, a.internal_date, a.keys) == (b.uids, b.size, b.internal_date, b.keys)


async def test_the_packed_copy_reads_back_what_the_rows_hold(
        service: tuple[Service, str]) -> None:
    svc, login = service
    uids = await _fill(svc, login, HEADERS)
    mb = await svc.mail.mailbox(login, "INBOX")
    assert await svc.mail.keep_keys(mb.id) is True
    rows = await _from_rows(svc, mb.id, uids)
    packed = await svc.mail.sort_keys(mb.id, uids, ALL)
    _same(packed, rows)
    assert packed.unkept == 0 and rows.unkept == len(uids)
    assert packed.keys["sent"][1] is None and "\0" in packed.keys["subject"][2]
    assert packed.keys["reply"][:2] == [True, False]

    assert set(keptkeys.KEY_FIELDS) == set(sortkeys.COLUMNS)  # every kept key is packed
    _same(await svc.mail.sort_keys(mb.id, uids, []), await _from_rows(svc, mb.id, uids, []))
    # a subset and a range inside the copy
    _same(await svc.mail.sort_keys(mb.id, uids[1:3], ALL),
          await _from_rows(svc, mb.id, uids[1:3]))
    _same(await svc.mail.sort_keys(mb.id, [uids[0], uids[3]], ["subject"]),
          await _from_rows(svc, mb.id, [uids[0], uids[3]], ["subject"]))

    # filed after the copy (the tail), and expunged since: still what the rows say
    more = await _fill(svc, login, [b"Subject: five\r\nMessage-ID: <e@x>\r\n"])
    await svc.mail.set_flags(mb.id, uids[1:2], "+", ["\\Deleted"])
    await svc.mail.expunge(mb.id)
    now = [uids[0], *uids[2:], *more]
    got = await svc.mail.sort_keys(mb.id, now, ALL)
    assert got.unkept == 1 and got.uids == now
    _same(got, await _from_rows(svc, mb.id, now))


async def test_a_copy_of_another_uidvalidity_or_version_is_not_used(
        service: tuple[Service, str], monkeypatch: pytest.MonkeyPatch) -> None:
    svc, login = service
    uids = await _fill(svc, login, HEADERS)
    mb = await svc.mail.mailbox(login, "INBOX")
    assert await svc.mail.keep_keys(mb.id) is True
    await svc.db.run(lambda c: c.execute(
        "UPDATE mail_sort_kept SET subject = ?", (b'["X","X","X","X"]',)).close())
    assert (await svc.mail.sort_keys(mb.id, uids, ["subject"])).keys["subject"] == ["X"] * 4

    version = sortkeys.KEYS_VERSION
    monkeypatch.setattr(sortkeys, "KEYS_VERSION", version + 1)
    fresh = await svc.mail.sort_keys(mb.id, uids, ["subject"])  # derived again from headers
    assert fresh.keys["subject"] == ["PLAIN", "ZOË \"QUOTED\" \\ BACK", "\0CTL\0", "FOUR"]
    monkeypatch.setattr(sortkeys, "KEYS_VERSION", version)

    assert await svc.mail.keep_keys(mb.id) is False  # rows of another version: no copy
    await svc.db.run(lambda c: c.execute("UPDATE mail_sort_kept SET version = ?",
                                         (version,)).close())
    for damage in ("uids = substr(uids, 1, 7)", "subject = X'7b'", "reply = X'01'"):
        await svc.db.run(lambda c, d=damage: c.execute(
            f"UPDATE mail_sort_kept SET {d}").close())  # a damaged copy: the rows
        got = await svc.mail.sort_keys(mb.id, uids, ["subject", "reply"])
        assert got.unkept == len(uids) and got.keys["subject"][0] == "PLAIN", damage
    await svc.db.run(lambda c: c.execute(
        "UPDATE mail_sort_kept SET uidvalidity = uidvalidity + 1").close())
    assert (await svc.mail.sort_keys(mb.id, uids, ["subject"])).unkept == len(uids)


async def test_no_copy_while_a_message_has_no_keys_nor_for_a_small_mailbox(
        service: tuple[Service, str], monkeypatch: pytest.MonkeyPatch) -> None:
    svc, login = service
    uids = await _fill(svc, login, HEADERS)
    mb = await svc.mail.mailbox(login, "INBOX")
    await svc.db.run(lambda c: c.execute(
        "DELETE FROM mail_sort WHERE uid = ?", (uids[2],)).close())
    assert await svc.mail.keep_keys(mb.id) is False
    await svc.mail.sort_keys(mb.id, uids, ["subject"])  # derives the missing keys
    monkeypatch.setattr(keptkeys, "MIN_MESSAGES", len(uids) + 1)
    assert await svc.mail.keep_keys(mb.id) is False
    monkeypatch.setattr(keptkeys, "MIN_MESSAGES", len(uids))
    assert await svc.mail.keep_keys(mb.id) is True


async def test_kept_at_stop_after_a_large_read_and_dropped_with_the_mailbox(
        service: tuple[Service, str], monkeypatch: pytest.MonkeyPatch) -> None:
    svc, login = service
    uids = await _fill(svc, login, HEADERS)
    mb = await svc.mail.mailbox(login, "INBOX")

    async def kept() -> list[tuple[int, int]]:
        return await svc.db.run(lambda c: c.execute(
            "SELECT mailbox, last_uid FROM mail_sort_kept").fetchall())

    await svc.mail.live.index(mb.id)  # a session had it open
    await svc.mail.keep_indexes()  # the clean stop
    assert await kept() == [(mb.id, uids[-1])]

    monkeypatch.setattr(keptkeys, "REKEEP", 1)
    monkeypatch.setattr(mail_store, "KEEP_KEYS_DELAY", 0.0)
    more = await _fill(svc, login, [b"Subject: five\r\n"])
    await svc.mail.sort_keys(mb.id, uids + more, ["subject"])  # one from rows: taken again
    task = svc.mail._keeping_keys.get(mb.id)
    assert task is not None and await task is True
    assert await kept() == [(mb.id, more[0])]

    await svc.mail.rename_mailbox(login, "INBOX", "Old")  # INBOX's messages move out
    assert await kept() == []
    old = await svc.mail.mailbox(login, "Old")
    assert await svc.mail.keep_keys(old.id) is True
    await svc.mail.delete_mailbox(login, "Old")
    assert await kept() == []
