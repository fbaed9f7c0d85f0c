"""wsgidav's write transaction of a fast PUT, taken on the event loop when it cannot wait.

Why: the fast PUT path (``fastput``) holds wsgidav's write transaction on the
file while the body streams, so a LOCK cannot slip in (wsgidav's TOCTOU guard).
Taking and ending it ran in a worker thread, because the lock manager may
block on ``twin.db``; those two thread hops were a tenth of the CPU of a 4 KiB
PUT (issue 20). Yet in the common case nothing can block: no lock is held
anywhere, so the checks (``check_write_permission`` of the parent,
``_get_write_conflicts`` of the file) have nothing to find and never reach
the database, and the transaction is only a counter in ``_active_writes``
under the lock manager's reader-writer lock.

So ``try_mark`` does exactly that on the loop, but only when it need not wait:
the reader-writer lock taken with ``timeout=0`` (a LOCK, UNLOCK or check in
progress in a wsgidav thread makes it give up) and the lock storage's copy in
memory loaded and empty (``SqliteLockStorage.none_held``, itself never
waiting). Otherwise the caller takes the worker-thread path as before. While
the mark is set, wsgidav refuses a new lock on the file (423), as it does for
its own PUTs.

It reaches into wsgidav's ``LockManager`` (``_lock``, ``_active_writes``,
``_end_write_transaction``, in 4.4); a lock manager without them is never
marked here.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from wsgidav.lock_man.lock_manager import normalize_lock_root


class WriteMark:
    """One fast PUT's write mark on ``url``; ends once, on the loop or in a thread."""

    def __init__(self, lock_manager: Any, url: str) -> None:
        self.lock_manager, self.url = lock_manager, url
        self._ended = False

    def end_now(self) -> bool:
        """Clear the mark without waiting; False (still set) if that would wait."""
        if self._ended:
            return True
        rw = self.lock_manager._lock
        try:
            rw.acquire_write(timeout=0)
        except RuntimeError:
            return False
        try:
            _count_down(self.lock_manager._active_writes, self.url)
            self._ended = True
        finally:
            rw.release()
        return True

    def __enter__(self) -> WriteMark:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Clear the mark, waiting if need be: for a worker thread."""
        if not self._ended:
            self._ended = True
            self.lock_manager._end_write_transaction(self.url)


def try_mark(lock_manager: Any, url: str) -> WriteMark | None:
    """The write mark on ``url`` if no lock exists and nothing had to wait, else None."""
    storage = getattr(lock_manager, "storage", None)
    none_held = getattr(storage, "none_held", None)
    if none_held is None or not all(hasattr(lock_manager, a) for a in (
            "_lock", "_active_writes", "_end_write_transaction")):
        return None
    rw = lock_manager._lock
    try:
        rw.acquire_write(timeout=0)
    except RuntimeError:
        return None
    try:
        if not none_held():  # under the lock: no LOCK can be granted meanwhile
            return None
        root = normalize_lock_root(url)
        writes: dict[str, int] = lock_manager._active_writes
        writes[root] = writes.get(root, 0) + 1
    finally:
        rw.release()
    return WriteMark(lock_manager, root)


def _count_down(writes: dict[str, int], root: str) -> None:
    """``LockManager._end_write_transaction``'s step, for a caller holding the lock."""
    count = writes.get(root, 0) - 1
    if count <= 0:
        writes.pop(root, None)
    else:
        writes[root] = count
