"""A large mailbox's index kept on disk (core.mail.indexfile): used only when exact.

The first session after a restart reads the packed copy instead of every row;
these tests pin when that copy may be used (the mailbox unchanged since), when
not (any change, a re-created mailbox), and that an index which does not match
its rows is never kept.
"""

from __future__ import annotations

import asyncio
import sqlite3
import struct
import time
import zlib
from array import array
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from core.mail import indexfile, live, schema
from core.mail.messages import load_index
from core.service import Service
from tests.protocols.smtp.helpers import make_twin_dir
from tests.twins import PORT_ZERO


@pytest.fixture(autouse=True)
def small_min(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(indexfile, "MIN_MESSAGES", 3)


async def _fill(svc: Service, login: str, n: int) -> list[int]:
    return [await svc.mail.deliver(login, b"Subject: %d\r\n\r\nbody %d\r\n" % (k, k))
            for k in range(n)]


async def _load(svc: Service, mailbox_id: int) -> tuple[bool, list[int], list[frozenset[str]],
                                                         list[int]]:
    got = await svc.db.run(load_index, mailbox_id)
    return got.from_disk, got.uids, got.flags, got.modseqs


async def _restart_view(svc: Service) -> None:
    """What a restart does to the live side: every kept index forgotten."""
    svc.mail.live.indexes.clear()
    svc.mail.live.idle.clear()
    svc.mail.live.idle_messages = 0


async def test_kept_at_stop_and_read_back_exactly(service: tuple[Service, str]) -> None:
    svc, login = service
    uids = await _fill(svc, login, 5)
    mb = await svc.mail.mailbox(login, "INBOX")
    await svc.mail.set_flags(mb.id, uids[1:3], "+", ["\\Seen", "$Work"])
    from_rows = await _load(svc, mb.id)
    assert from_rows[0] is False
    idx = await svc.mail.live.index(mb.id)
    await svc.mail.keep_indexes()
    assert await svc.mail.live.keep(idx) is True
    again = await _load(svc, mb.id)
    assert again == (True, *from_rows[1:])
    assert again[2][1] == frozenset({"\\Seen", "$Work"}) and again[1] == uids

    await _restart_view(svc)
    snap, watch = await svc.mail.open(login, "INBOX", read_only=True)
    assert snap.uids == uids and snap.flags == from_rows[2]
    svc.mail.close(watch)


@pytest.mark.parametrize("change", ["flags", "expunge", "deliver"])
async def test_any_change_makes_the_copy_unused(service: tuple[Service, str],
                                                change: str) -> None:
    svc, login = service
    uids = await _fill(svc, login, 4)
    mb = await svc.mail.mailbox(login, "INBOX")
    assert await svc.mail.live.keep(await svc.mail.live.index(mb.id)) is True
    if change == "flags":
        await svc.mail.set_flags(mb.id, uids[:1], "+", ["\\Flagged"])
    elif change == "expunge":
        await svc.mail.set_flags(mb.id, uids[:1], "+", ["\\Deleted"])
        await svc.mail.expunge(mb.id)
    else:
        await _fill(svc, login, 1)
    loaded = await _load(svc, mb.id)
    assert loaded[0] is False  # read from the rows: the copy is not this state
    index = await svc.mail.live.index(mb.id)
    assert (index.uids, index.flags, index.modseqs) == loaded[1:]


async def test_an_index_that_differs_from_its_rows_is_not_kept(
        service: tuple[Service, str]) -> None:
    svc, login = service
    await _fill(svc, login, 4)
    mb = await svc.mail.mailbox(login, "INBOX")
    idx = await svc.mail.live.index(mb.id)
    assert await svc.mail.live.keep(idx) is True
    idx.modseqs[0] += 1  # drifted: same mailbox counters, different rows
    assert await svc.mail.live.keep(idx) is False
    assert (await _load(svc, mb.id))[0] is False  # and the older copy went with it


async def test_a_deleted_mailbox_takes_its_copy_along(service: tuple[Service, str]) -> None:
    svc, login = service
    await svc.mail.create_mailbox(login, "Big")
    for k in range(4):
        await svc.mail.append(login, "Big", b"Subject: %d\r\n\r\nx\r\n" % k)
    mb = await svc.mail.mailbox(login, "Big")
    assert await svc.mail.live.keep(await svc.mail.live.index(mb.id)) is True
    await svc.mail.delete_mailbox(login, "Big")
    assert await svc.db.run(lambda c: c.execute(
        "SELECT count(*) FROM mail_index_kept").fetchone()[0]) == 0


async def test_a_load_from_rows_keeps_a_copy_for_the_next_start(
        service: tuple[Service, str]) -> None:
    svc, login = service
    uids = await _fill(svc, login, 3)
    mb = await svc.mail.mailbox(login, "INBOX")
    await _restart_view(svc)
    await svc.mail.live.index(mb.id)  # loaded from the rows: a copy is kept behind
    for _ in range(100):
        if (await _load(svc, mb.id))[0]:
            break
        await svc.mail.live.index(mb.id)
    assert (await _load(svc, mb.id))[:2] == (True, uids)


async def test_a_damaged_copy_is_read_from_the_rows(service: tuple[Service, str]) -> None:
    svc, login = service
    uids = await _fill(svc, login, 4)
    mb = await svc.mail.mailbox(login, "INBOX")
    assert await svc.mail.live.keep(await svc.mail.live.index(mb.id)) is True
    assert (await _load(svc, mb.id))[:2] == (True, uids)
    for damage in ("uids = X'00'", "modseqs = substr(modseqs, 1, 5)", "flag_texts = '{'",
                   "flag_texts = '[]'", "flag_texts = '[1]'"):
        await svc.db.run(lambda c, d=damage: c.execute(
            f"UPDATE mail_index_kept SET {d}").close())
        assert (await _load(svc, mb.id))[:2] == (False, uids), damage


SEEN, WORK, NONE = frozenset({"\\Seen"}), frozenset({"\\Seen", "$Work"}), frozenset[str]()
N = 20_000
SHAPES = {
    "empty": ([], [], []),
    "one": ([7], [2**62], [WORK]),
    "filed in order, read but the newest": (
        list(range(1, N + 1)), list(range(5, N + 5)), [SEEN] * (N - 50) + [NONE] * 50),
    "a few expunged, some flags changed": (
        [u for u in range(1, N + 1) if u % 1000], [3 * u if u % 500 == 0 else u
                                                   for u in range(1, N + 1) if u % 1000],
        [WORK if u % 700 == 0 else SEEN for u in range(1, N + 1) if u % 1000]),
    "every other one expunged, flags alternating": (
        list(range(1, 2 * N, 2)), list(range(N, 0, -1)), [SEEN, NONE] * (N // 2)),
}


def _kept_table() -> sqlite3.Connection:
    c = sqlite3.connect(":memory:")
    c.execute(next(m for m in schema.MIGRATIONS if "CREATE TABLE mail_index_kept" in m))
    return c


def _store(c: sqlite3.Connection, packed: indexfile.Packed) -> None:
    c.execute("INSERT OR REPLACE INTO mail_index_kept VALUES (1, 1, 2, 3, ?, ?, ?, ?)",
              (packed.uids, packed.modseqs, packed.flag_ids, packed.flag_texts))


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_of_column_reads_back_exactly(shape: str) -> None:
    """Columns are kept as runs where those are few, else as arrays: either way
    a copy reads back exactly what was packed, and a large mailbox filed in
    order (the common case) takes a few hundred bytes instead of 18 per message."""
    uids, modseqs, flags = SHAPES[shape]
    packed = indexfile.pack(indexfile.Columns(1, 2, 3, uids, flags, modseqs))
    assert packed is not None
    c = _kept_table()
    _store(c, packed)
    got = indexfile.load(c, 1, 1, 2, 3)
    assert got is not None
    assert (got.uids, got.modseqs, got.flags) == (uids, modseqs, flags)
    assert set(got.flag_sets or []) == set(flags)
    size = len(packed.uids) + len(packed.modseqs) + len(packed.flag_ids)
    if shape.startswith("filed in order"):
        assert size < 500, size
    if shape.startswith("every other"):
        assert packed.uids[:1] == packed.modseqs[:1] == packed.flag_ids[:1] == b"A"


def test_runs_that_do_not_add_up_are_not_used() -> None:
    """A copy whose columns decode but disagree in length, a run of no messages,
    or a copy in the older raw form: the rows are read instead."""
    uids, modseqs, flags = SHAPES["filed in order, read but the newest"]
    packed = indexfile.pack(indexfile.Columns(1, 2, 3, uids, flags, modseqs))
    shorter = indexfile.pack(indexfile.Columns(1, 2, 3, uids[:-1], flags[:-1], modseqs[:-1]))
    assert packed is not None and shorter is not None
    c = _kept_table()
    for bad in (replace(packed, uids=shorter.uids), replace(packed, flag_ids=shorter.flag_ids),
                replace(packed, modseqs=b"R" + zlib.compress(
                    struct.pack("<I", 2) + array("q", [1, 9]).tobytes()
                    + array("q", [N, 0]).tobytes())),
                replace(packed, uids=array("q", uids).tobytes())):
        _store(c, bad)
        assert indexfile.load(c, 1, 1, 2, 3) is None
    _store(c, packed)
    assert indexfile.load(c, 1, 1, 2, 3) is not None


async def test_a_start_warms_the_kept_indexes_within_the_idle_budget(
        service: tuple[Service, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """After a restart the indexes kept at the stop are loaded before any SELECT
    (INBOX first), as idle indexes within the budget; a copy that is no longer
    exact is not loaded (that would read every row)."""
    svc, login = service
    await _fill(svc, login, 5)
    await svc.mail.create_mailbox(login, "Big")
    for k in range(4):
        await svc.mail.append(login, "Big", b"Subject: %d\r\n\r\nx\r\n" % k)
    await svc.mail.create_mailbox(login, "Changed")
    for k in range(3):
        await svc.mail.append(login, "Changed", b"Subject: %d\r\n\r\nx\r\n" % k)
    ids = {name: (await svc.mail.mailbox(login, name)).id for name in ("INBOX", "Big", "Changed")}
    for mailbox_id in ids.values():
        await svc.mail.live.index(mailbox_id)
    await svc.mail.keep_indexes()
    await svc.mail.append(login, "Changed", b"Subject: late\r\n\r\nx\r\n")  # its copy is stale

    await _restart_view(svc)
    monkeypatch.setattr(live, "IDLE_INDEX_MESSAGES", 6)  # room for INBOX (5), not for Big too
    assert await svc.mail.live.warm() == 1
    assert set(svc.mail.live.indexes) == {ids["INBOX"]} == set(svc.mail.live.idle)
    assert svc.mail.live.idle_messages == 5

    await _restart_view(svc)
    monkeypatch.setattr(live, "IDLE_INDEX_MESSAGES", 100)
    assert await svc.mail.live.warm() == 2
    assert set(svc.mail.live.indexes) == {ids["INBOX"], ids["Big"]}
    snap, watch = await svc.mail.open(login, "Big", read_only=True)
    assert len(snap.uids) == 4 and ids["Big"] not in svc.mail.live.idle
    svc.mail.close(watch)
    assert svc.mail.live.idle_messages == 9


@pytest.mark.parametrize("warm", [True, False])
async def test_a_restarted_twin_has_its_inbox_index_before_any_session(
        tmp_path: Path, warm: bool) -> None:
    """The whole path: a clean stop keeps the index, the next ``Service.start``
    loads it with no session asking, unless ``mail.warm_indexes`` is off."""
    info = make_twin_dir(tmp_path, "alice")
    sets: dict[str, Any] = {k: "0" for k in PORT_ZERO}
    sets.update({"smtp.verify_dns": "false", "mail.warm_indexes": str(warm).lower()})
    service = Service.open(tmp_path / "alice", sets)
    await service.start()
    try:
        await _fill(service, info["login"], 4)
        inbox = (await service.mail.mailbox(info["login"], "INBOX")).id
        await service.mail.live.index(inbox)
    finally:
        await service.stop()  # keeps the index of INBOX (MIN_MESSAGES is 3 here)
        service.close()
    service = Service.open(tmp_path / "alice", sets)
    await service.start()
    try:
        deadline = time.monotonic() + (10 if warm else 1)
        while inbox not in service.mail.live.indexes and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert (inbox in service.mail.live.indexes) is warm
        if warm:
            assert len(service.mail.live.indexes[inbox].uids) == 4
    finally:
        await service.stop()
        service.close()
