"""The delivery journal (core.mail.journal): sealed, ordered, group-committed, crash-safe."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import secrets
from pathlib import Path

import pytest

from core.errors import Invalid, Unavailable
from core.mail import journal as journal_mod
from core.mail.journal import HEADER, Entry, Journal

KEY = bytes(range(32))


class Opened:
    """A journal plus every entry it reported durable, in the order reported."""

    def __init__(self, directory: Path, key: bytes = KEY, filed: int = 0,
                 segment_bytes: int = journal_mod.SEGMENT_BYTES) -> None:
        self.durable: list[Entry] = []
        self.journal = Journal(directory, key, self.durable.extend,
                               segment_bytes=segment_bytes)
        self.recovered = self.journal.recover(filed)


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.log"))


def summary(entries: list[Entry]) -> list[tuple[int, str, bytes]]:
    return [(e.seq, e.login, e.message) for e in entries]


async def test_appended_records_come_back_in_order_after_a_reopen(tmp_path: Path) -> None:
    first = Opened(tmp_path)
    assert first.recovered == []
    got = await asyncio.gather(*(first.journal.append(f"u{i}", f"m{i}".encode())
                                 for i in range(5)))
    first.journal.close()
    assert [e.seq for e in got] == [1, 2, 3, 4, 5]
    assert summary(first.durable) == summary(got)
    again = Opened(tmp_path)
    assert summary(again.recovered) == summary(got)
    assert [e.received for e in again.recovered] == [e.received for e in got]
    assert (await again.journal.append("u", b"next")).seq == 6  # numbering continues


async def test_concurrent_appends_share_one_synchronous_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened = Opened(tmp_path)
    writes: list[int] = []
    real = os.write

    def counting(fd: int, data: bytes) -> int:
        if fd == opened.journal._fd:
            writes.append(len(data))
        return real(fd, data)
    monkeypatch.setattr(journal_mod.os, "write", counting)
    await asyncio.gather(*(opened.journal.append("u", b"x" * 100) for _ in range(50)))
    assert 1 <= len(writes) <= 2  # the first write may go alone; the rest wait and join
    assert fcntl.fcntl(opened.journal._fd, fcntl.F_GETFL) & os.O_DSYNC  # the write is the sync


async def test_a_batch_filed_part_way_returns_only_its_unfiled_messages(tmp_path: Path) -> None:
    opened = Opened(tmp_path)
    await asyncio.gather(*(opened.journal.append("u", f"m{i}".encode()) for i in range(4)))
    opened.journal.close()
    assert len(segments(tmp_path)) == 1
    assert [e.message for e in Opened(tmp_path, filed=2).recovered] == [b"m2", b"m3"]


async def test_nothing_is_on_disk_in_clear(tmp_path: Path) -> None:
    opened = Opened(tmp_path)
    secret = b"Subject: the launch codes are 0000"
    await opened.journal.append("alice", secret)
    raw = b"".join(p.read_bytes() for p in segments(tmp_path))
    assert secret not in raw and b"alice" not in raw and b"launch" not in raw


async def test_a_large_record_keeps_its_place(tmp_path: Path) -> None:
    opened = Opened(tmp_path)
    big = secrets.token_bytes(4 * 1024 * 1024)
    await asyncio.gather(opened.journal.append("u", big), opened.journal.append("u", b"small"))
    assert [e.seq for e in opened.durable] == [1, 2]
    assert summary(Opened(tmp_path).recovered) == summary(opened.durable)


async def test_an_append_whose_caller_went_away_is_still_written_in_order(
        tmp_path: Path) -> None:
    opened = Opened(tmp_path)
    gone = asyncio.create_task(opened.journal.append("u", b"m1"))
    await asyncio.sleep(0)  # queued for the writer
    gone.cancel()
    await opened.journal.append("u", b"m2")
    assert [e.message for e in opened.durable] == [b"m1", b"m2"]
    assert [e.message for e in Opened(tmp_path).recovered] == [b"m1", b"m2"]


async def test_a_record_cut_short_by_a_crash_is_ignored_and_writing_resumes_in_a_new_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    opened = Opened(tmp_path)
    for i in range(2):
        await opened.journal.append("u", f"m{i}".encode())
    opened.journal.close()
    [path] = segments(tmp_path)
    whole = path.read_bytes()
    record = len(whole) // 2  # two records of the same size
    with path.open("ab") as f:  # half of one more record: its write never returned
        f.write(whole[record: record + record // 2])
    with caplog.at_level(logging.WARNING, "twin.mail.journal"):
        again = Opened(tmp_path)
    assert [e.message for e in again.recovered] == [b"m0", b"m1"]
    assert "not a whole record" in caplog.text
    await again.journal.append("u", b"m2")
    assert len(segments(tmp_path)) == 2  # never appended after the torn tail
    assert [e.message for e in Opened(tmp_path).recovered] == [b"m0", b"m1", b"m2"]


async def test_a_garbage_length_field_is_not_read_as_a_record(tmp_path: Path) -> None:
    opened = Opened(tmp_path)
    await opened.journal.append("u", b"m0")
    opened.journal.close()
    [path] = segments(tmp_path)
    with path.open("ab") as f:
        f.write(HEADER.pack(journal_mod.MAGIC, 2, 1, 2**32 - 1) + b"x" * 100)
    assert [e.message for e in Opened(tmp_path).recovered] == [b"m0"]


async def test_a_tampered_record_is_skipped_with_an_error_and_the_others_are_kept(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    opened = Opened(tmp_path)
    for i in range(3):
        await opened.journal.append("u", f"message {i}".encode() * 10)
    opened.journal.close()
    [path] = segments(tmp_path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # inside the second record's sealed body
    data[middle] ^= 0x01
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, "twin.mail.journal"):
        again = Opened(tmp_path)
    assert [e.seq for e in again.recovered] == [1, 3]
    assert "record 2" in caplog.text and "cannot be read" in caplog.text


async def test_a_record_moved_to_another_sequence_number_is_refused(tmp_path: Path) -> None:
    opened = Opened(tmp_path)
    await opened.journal.append("u", b"pay bob 10")
    opened.journal.close()
    [path] = segments(tmp_path)
    data = path.read_bytes()
    magic, _, count, length = HEADER.unpack_from(data)
    path.write_bytes(data + HEADER.pack(magic, 7, count, length) + data[HEADER.size:]  # moved
                     + data)  # and copied as it is
    assert [e.seq for e in Opened(tmp_path).recovered] == [1]


async def test_another_key_reads_nothing(tmp_path: Path) -> None:
    opened = Opened(tmp_path)
    await opened.journal.append("u", b"hello")
    opened.journal.close()
    assert Opened(tmp_path, key=bytes(32)).recovered == []


async def test_filed_records_are_not_returned_and_all_filed_files_are_deleted(
        tmp_path: Path) -> None:
    opened = Opened(tmp_path, segment_bytes=1)  # every write starts a new file
    for i in range(3):
        await opened.journal.append("u", f"m{i}".encode())
    assert len(segments(tmp_path)) == 3
    assert opened.journal.release(2) == 2
    assert opened.journal.release(3) == 0  # the file of record 3 is still being written
    assert len(segments(tmp_path)) == 1
    opened.journal.close()
    assert [e.seq for e in Opened(tmp_path, filed=2).recovered] == [3]
    assert Opened(tmp_path, filed=3).recovered == []
    assert segments(tmp_path) == []  # recovery deletes files whose records are all filed


async def test_a_failed_write_refuses_its_messages_and_the_next_starts_a_new_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened = Opened(tmp_path)
    await opened.journal.append("u", b"m1")
    real = os.write

    def full(fd: int, data: bytes) -> int:
        if fd == opened.journal._fd:
            raise OSError(28, "No space left on device")
        return real(fd, data)
    monkeypatch.setattr(journal_mod.os, "write", full)
    with pytest.raises(Unavailable, match="No space left"):
        await opened.journal.append("u", b"m2")
    monkeypatch.setattr(journal_mod.os, "write", real)
    await opened.journal.append("u", b"m3")
    assert len(segments(tmp_path)) == 2
    assert [e.message for e in opened.durable] == [b"m1", b"m3"]


async def test_appending_before_recovery_is_refused(tmp_path: Path) -> None:
    journal = Journal(tmp_path, KEY, lambda entries: None)
    with pytest.raises(Unavailable, match="not open"):
        await journal.append("u", b"x")


async def test_a_large_batch_is_split_into_records_of_bounded_size(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_mod, "RECORD_BYTES", 250)
    opened = Opened(tmp_path)
    await asyncio.gather(*(opened.journal.append("u", f"{i:03d}".encode() * 33)
                           for i in range(10)))
    opened.journal.close()
    data = b"".join(p.read_bytes() for p in segments(tmp_path))
    assert len(list(journal_mod._records(data))) >= 4  # 99-byte messages, 2 per record
    assert [e.seq for e in Opened(tmp_path).recovered] == list(range(1, 11))


async def test_closing_waits_for_the_write_in_flight_and_refuses_later_appends(
        tmp_path: Path) -> None:
    opened = Opened(tmp_path)
    pending = asyncio.create_task(opened.journal.append("u", b"in flight"))
    await asyncio.sleep(0)
    await opened.journal.aclose()
    assert (await pending).seq == 1
    with pytest.raises(Unavailable, match="not open"):
        await opened.journal.append("u", b"late")
    assert [e.message for e in Opened(tmp_path).recovered] == [b"in flight"]


async def test_a_message_too_large_for_a_record_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_mod, "MAX_MESSAGE", 10)
    opened = Opened(tmp_path)
    with pytest.raises(Invalid, match="larger than 10 bytes"):
        await opened.journal.append("u", b"x" * 11)
