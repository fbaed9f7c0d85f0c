"""Local delivery through the journal (core.mail.intake): accepted once, filed once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.errors import Forbidden, Unavailable
from core.mail import intake as intake_mod
from core.mail.intake import Intake
from core.mail.journal import Entry
from core.service import Service
from tests.protocols.smtp.helpers import inbox

KEY = bytes(range(32))


def message(n: int) -> bytes:
    return f"From: a@example.com\r\nSubject: m{n}\r\n\r\nbody {n}\r\n".encode()


def subjects(messages: list[bytes]) -> list[str]:
    return [m.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode() for m in messages]


async def crash(intake: Intake) -> None:
    """Stop as kill -9 would: no filing of what is left, no release of journal files."""
    assert intake._filer is not None
    intake._filer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await intake._filer
    intake.journal.close()


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    return tmp_path / "journal"


async def test_an_accepted_message_is_filed_into_the_inbox(
        service: tuple[Service, str], journal_dir: Path) -> None:
    svc, login = service
    await svc.mail.start_intake(journal_dir, KEY, 1 << 20)
    await asyncio.gather(*(svc.mail.accept(login, message(i)) for i in range(20)))
    assert subjects(await inbox(svc, login)) == [f"m{i}" for i in range(20)]
    await svc.mail.stop_intake()


class Filing:
    """A started intake, the size of every batch it files, and a gate that can hold
    a filing in progress (to make messages arrive while the filer is busy)."""

    def __init__(self, svc: Service, login: str) -> None:
        self.svc, self.login = svc, login
        self.sizes: list[int] = []
        self.gate = asyncio.Event()
        self.gate.set()


@pytest.fixture
async def filing(service: tuple[Service, str], journal_dir: Path,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Filing]:
    svc, login = service
    # the fixed gathering window this intake used to have, made long: a filer
    # that still waited for it would fail the tests below
    monkeypatch.setattr(intake_mod, "GATHER_SECONDS", 30.0, raising=False)
    seen = Filing(svc, login)
    real = svc.mail.file

    async def spy(entries: list[Entry]) -> None:
        seen.sizes.append(len(entries))
        await seen.gate.wait()
        await real(entries)
    monkeypatch.setattr(svc.mail, "file", spy)
    await svc.mail.start_intake(journal_dir, KEY, 1 << 20)
    yield seen
    seen.gate.set()
    await svc.mail.stop_intake()


async def until_filed(filing: Filing, batches: int) -> None:
    for _ in range(200):  # nobody calls settled(): the filer must go by itself
        if len(filing.sizes) >= batches:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"filed batches {filing.sizes}, wanted {batches}")


async def test_an_idle_filer_files_a_lone_message_at_once(filing: Filing) -> None:
    svc, login = filing.svc, filing.login
    await svc.mail.accept(login, message(0))
    await until_filed(filing, 1)
    assert filing.sizes == [1]
    await until_settled_inbox(filing, ["m0"])


async def test_messages_journaled_while_a_batch_is_filed_make_the_next_batch(
        filing: Filing) -> None:
    svc, login = filing.svc, filing.login
    filing.gate.clear()  # the first filing stays in progress
    await svc.mail.accept(login, message(0))
    await until_filed(filing, 1)
    await asyncio.gather(*(svc.mail.accept(login, message(i)) for i in range(1, 6)))
    assert filing.sizes == [1]  # busy: the five wait, together
    filing.gate.set()
    await until_filed(filing, 2)
    assert filing.sizes == [1, 5]
    await until_settled_inbox(filing, [f"m{i}" for i in range(6)])


async def until_settled_inbox(filing: Filing, want: list[str]) -> None:
    await asyncio.wait_for(filing.svc.mail.settled(), 10)
    assert subjects(await inbox(filing.svc, filing.login)) == want


async def test_what_a_crash_left_unfiled_is_filed_once_at_the_next_start(
        service: tuple[Service, str], journal_dir: Path) -> None:
    svc, login = service
    store, svc.mail.store = svc.mail.store, None  # filing fails until the store is back
    first = Intake(svc.mail, journal_dir, KEY, 1 << 20)
    await first.start()
    for i in range(3):
        await first.accept(login, message(i))
    await crash(first)
    svc.mail.store = store
    second = Intake(svc.mail, journal_dir, KEY, 1 << 20)
    await second.start()
    await second.settled()
    assert subjects(await inbox(svc, login)) == ["m0", "m1", "m2"]
    await second.stop()


async def test_a_crash_after_filing_files_nothing_twice(
        service: tuple[Service, str], journal_dir: Path) -> None:
    svc, login = service
    first = Intake(svc.mail, journal_dir, KEY, 1 << 20)
    await first.start()
    for i in range(3):
        await first.accept(login, message(i))
    await first.settled()  # filed; the journal file is still there (it is the open one)
    await crash(first)
    assert list(journal_dir.glob("*.log"))
    second = Intake(svc.mail, journal_dir, KEY, 1 << 20)
    await second.start()
    await second.accept(login, message(3))
    await second.settled()
    assert subjects(await inbox(svc, login)) == ["m0", "m1", "m2", "m3"]
    await second.stop()


async def test_filing_retries_until_the_store_is_back(
        service: tuple[Service, str], journal_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    svc, login = service
    monkeypatch.setattr(intake_mod, "RETRY_FIRST", 0.01)
    store, svc.mail.store = svc.mail.store, None
    await svc.mail.start_intake(journal_dir, KEY, 1 << 20)
    await svc.mail.accept(login, message(0))  # accepted while the store is down
    await asyncio.sleep(0.1)
    assert svc.mail.intake is not None and svc.mail.intake._queue
    svc.mail.store = store
    assert subjects(await inbox(svc, login)) == ["m0"]
    await svc.mail.stop_intake()


async def test_a_storage_health_change_ends_the_filers_back_off(
        service: tuple[Service, str], journal_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After an outage mail used to sit up to RETRY_MAX (300 s) once backends were back."""
    svc, login = service
    monkeypatch.setattr(intake_mod, "RETRY_FIRST", 30.0)
    store, svc.mail.store = svc.mail.store, None
    await svc.mail.start_intake(journal_dir, KEY, 1 << 20)
    await svc.mail.accept(login, message(0))  # the first filing fails: back off 30 s
    await asyncio.sleep(0.2)
    assert svc.mail.intake is not None and svc.mail.intake._queue
    svc.mail.store = store
    started = time.monotonic()
    svc._storage_health_changed()  # what the store's BackendMonitor calls
    await asyncio.wait_for(svc.mail.settled(), 5)
    assert time.monotonic() - started < 5
    assert subjects(await inbox(svc, login)) == ["m0"]
    await svc.mail.stop_intake()


async def test_a_full_backlog_makes_accept_wait_then_refuse(
        service: tuple[Service, str], journal_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    svc, login = service
    monkeypatch.setattr(intake_mod, "WAIT_SECONDS", 0.2)
    monkeypatch.setattr(intake_mod, "RETRY_FIRST", 0.01)
    store, svc.mail.store = svc.mail.store, None
    intake = Intake(svc.mail, journal_dir, KEY, max_backlog=100)
    await intake.start()
    await intake.accept(login, message(0) + b"x" * 200)  # room was there when it came
    with pytest.raises(Unavailable, match="behind on filing"):
        await intake.accept(login, message(1))
    svc.mail.store = store
    monkeypatch.setattr(intake_mod, "WAIT_SECONDS", 10)
    await intake.accept(login, message(2))  # waits until the filer's retry makes room
    await intake.settled()
    assert subjects(await inbox(svc, login)) == ["m0", "m2"]
    await intake.stop()


async def test_a_user_over_quota_is_refused_before_anything_is_journaled(
        service: tuple[Service, str], journal_dir: Path) -> None:
    svc, login = service
    svc.mail.quota_bytes = 150
    await svc.mail.start_intake(journal_dir, KEY, 1 << 20)
    await svc.mail.accept(login, message(0) + b"x" * 100)
    await svc.mail.settled()
    with pytest.raises(Forbidden, match="over quota"):
        await svc.mail.accept(login, message(1) + b"x" * 100)
    assert subjects(await inbox(svc, login)) == ["m0"]
    await svc.mail.stop_intake()


async def test_concurrent_deliveries_cannot_overshoot_the_quota(
        service: tuple[Service, str], journal_dir: Path) -> None:
    # #15 item 10: 30 concurrent 250 KB messages overshot a 300 KB quota 25 times
    svc, login = service
    svc.mail.quota_bytes = 300 * 1024
    await svc.mail.start_intake(journal_dir, KEY, 64 << 20)
    big = [message(i) + b"x" * (250 * 1024) for i in range(30)]
    results = await asyncio.gather(*(svc.mail.accept(login, m) for m in big),
                                   return_exceptions=True)
    refused = [r for r in results if isinstance(r, Forbidden)]
    assert len(refused) == 29 and all(r.code == "overquota" for r in refused)
    assert svc.mail.intake is not None and svc.mail.intake.pending(login) > 0
    with pytest.raises(Forbidden):  # journaled, not filed yet: still counted
        await svc.mail.accept(login, message(99) + b"x" * (60 * 1024))
    await svc.mail.settled()
    assert svc.mail.intake.pending(login) == 0
    used, limit = await svc.mail.quota(login)
    assert used <= limit
    await svc.mail.accept(login, message(100))  # what still fits is taken
    await svc.mail.stop_intake()


async def test_stop_files_everything_accepted(
        service: tuple[Service, str], journal_dir: Path) -> None:
    svc, login = service
    await svc.mail.start_intake(journal_dir, KEY, 1 << 20)
    await asyncio.gather(*(svc.mail.accept(login, message(i)) for i in range(50)))
    await svc.mail.stop_intake()
    assert svc.mail.intake is None
    assert len(await inbox(svc, login)) == 50
    assert await svc.mail.journal_filed() == 50


async def test_without_a_running_intake_accept_delivers_directly(
        service: tuple[Service, str]) -> None:
    svc, login = service  # the CLI on a stopped twin
    await svc.mail.accept(login, message(0))
    assert subjects(await inbox(svc, login)) == ["m0"]


async def test_journal_files_are_deleted_once_everything_in_them_is_filed(
        service: tuple[Service, str], journal_dir: Path) -> None:
    svc, login = service
    intake = Intake(svc.mail, journal_dir, KEY, 1 << 20)
    intake.journal._segment_bytes = 1  # every write starts a new file
    await intake.start()
    for i in range(4):
        await intake.accept(login, message(i))
        await intake.settled()
    assert len(list(journal_dir.glob("*.log"))) == 1  # only the file being written
    await intake.stop()
    assert len(await inbox(svc, login)) == 4


async def test_a_filing_cancelled_during_its_commit_keeps_the_objects_its_rows_use(
        service: tuple[Service, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The commit is shielded and lands anyway; deleting the objects would lose the mail."""
    svc, login = service
    submitted = asyncio.Event()
    real = svc.mail._commit.submit

    async def spy(op: Any) -> Any:
        if op.__name__ == "insert_all":  # the rows and the journal mark, not ensure_user
            submitted.set()
        return await real(op)
    monkeypatch.setattr(svc.mail._commit, "submit", spy)
    filing = asyncio.create_task(svc.mail.file([Entry(1, login, message(0), time.time())]))
    await submitted.wait()
    filing.cancel()  # as Intake.stop does when its grace runs out
    with pytest.raises(asyncio.CancelledError):
        await filing
    assert svc.mail._commit._batches._flusher is not None  # the commit is in flight
    await svc.mail._commit.drain()  # the shielded commit runs on
    assert subjects(await inbox(svc, login)) == ["m0"]
