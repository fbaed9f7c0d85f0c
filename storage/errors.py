"""Errors raised by the dispersed store.

Core maps these to its own neutral errors in one table (``core/foreign.py``,
``storage_error``); each one says which object, segment or backend is
concerned so a log line is enough to act.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every error the store raises on purpose."""


class InvalidReference(StorageError, ValueError):
    """An object reference or key that is malformed (never reaches a backend)."""


class ObjectNotFound(StorageError, KeyError):
    """No visible object with that id in the catalogue."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "object not found"


class NotEnoughShares(StorageError):
    """Fewer than k good shares of a segment could be read."""

    def __init__(self, object_id: str, segment: int, good: int, k: int) -> None:
        super().__init__(
            f"not enough shares: {good} of {k} needed for segment {segment} of object {object_id}"
        )
        self.object_id = object_id
        self.segment = segment
        self.good = good
        self.k = k


class BackendUnavailable(StorageError):
    """A shard backend could not be reached or failed an operation."""

    def __init__(self, backend: str, detail: str) -> None:
        super().__init__(f"backend {backend} unavailable: {detail}")
        self.backend = backend
        self.detail = detail


class IntegrityError(StorageError):
    """Stored bytes failed a hash, a header check or authenticated decryption."""


class StoreInUse(BackendUnavailable):
    """A local backend directory is locked by another process (normally ``twin serve``).

    Raised by ``open_store`` so that a second process gets this, not a misleading
    ``NotEnoughShares`` on its first read.
    """

    def __init__(self, backend: str, path: str, pid: int | None) -> None:
        who = f"process {pid}" if pid is not None else "another process"
        super().__init__(backend, f"{path} is in use by {who}")
        self.path = path
        self.pid = pid


class DeleteRefused(BackendUnavailable):
    """A backend that is up refuses to delete (0-db namespace in ``worm`` or ``lock``).

    Not a passing outage: ``Store.delete`` checks for it before an object leaves
    the catalogue, so ``rm`` fails loudly instead of hiding shares that stay."""


class BackendRefused(StorageError, ValueError):
    """A change of the store's backend set that it will not make (``add``, ``drain``,
    ``remove_backend``): a name taken, a backend unreachable, fewer than n left, a
    backend still holding shares. The message says which and what to do."""
