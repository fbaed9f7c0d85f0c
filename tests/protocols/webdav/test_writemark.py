"""``writemark``: a fast PUT's write transaction on the loop, only when nothing can wait."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wsgidav.dav_error import DAVError
from wsgidav.lock_man.lock_manager import LockManager

from core.db import Database
from core.files import PathLocks
from protocols.webdav.storage_adapters import SqliteLockStorage
from protocols.webdav.writemark import WriteMark, try_mark


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[LockManager]:
    db = Database(tmp_path / "twin.db")
    yield LockManager(SqliteLockStorage(PathLocks(db)))
    db.close()


def lock(manager: LockManager, url: str) -> dict[str, Any]:
    made: dict[str, Any] = manager.acquire(
        url=url, lock_type="write", lock_scope="exclusive", lock_depth="0",
        lock_owner=b"other", timeout=60, principal="other", token_list=[])
    return made


def test_marked_on_the_loop_only_when_no_lock_exists(manager: LockManager) -> None:
    assert try_mark(manager, "/a.txt") is None  # the copy is not loaded yet: unsure
    manager.check_write_permission(url="/a.txt", depth="0", token_list=[], principal="me")
    mark = try_mark(manager, "/a.txt")
    assert isinstance(mark, WriteMark)
    with pytest.raises(DAVError) as refused:  # while the PUT runs, no LOCK on the file
        lock(manager, "/a.txt")
    assert refused.value.value == 423
    assert mark.end_now() and mark.end_now()  # ends once
    taken = lock(manager, "/a.txt")
    assert try_mark(manager, "/b.txt") is None  # a lock exists somewhere: the thread path
    manager.release(taken["token"])
    assert try_mark(manager, "/b.txt") is not None


def test_nothing_waits_on_the_loop(manager: LockManager) -> None:
    manager.check_write_permission(url="/a.txt", depth="0", token_list=[], principal="me")
    held, done = threading.Event(), threading.Event()

    def reader() -> None:  # a wsgidav thread checking permissions right now
        manager._lock.acquire_read()
        held.set()
        done.wait(10)
        manager._lock.release()

    t = threading.Thread(target=reader)
    t.start()
    held.wait(10)
    try:
        assert try_mark(manager, "/a.txt") is None
    finally:
        done.set()
        t.join()
    mark = try_mark(manager, "/a.txt")
    assert mark is not None
    held.clear()
    done.clear()
    t = threading.Thread(target=reader)
    t.start()
    held.wait(10)
    try:
        assert not mark.end_now()  # busy: the caller ends it in a worker thread instead
    finally:
        done.set()
        t.join()
    mark.__exit__(None, None, None)
    lock(manager, "/a.txt")  # the mark is gone
