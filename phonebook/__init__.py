"""The phonebook: how twins find each other.

Contract (every backend implements it; core only ever sees this):

    class Phonebook(Protocol):
        def resolve(self, name_or_id: str | int) -> TwinRecord
            # by twin name, numeric id, or the hex/SS58 public key;
            # raises TwinNotFound
        def by_address(self, address: str) -> TwinRecord | None
            # "bob@bob.example" or "bob.example": the twin serving that mail domain
        def publish(self, record: TwinRecord, *, replace_key: bool = False) -> TwinRecord
            # returns the record as stored (with the id the phonebook assigned);
            # a new key for an existing name raises KeyChanged unless replace_key
        def list(self) -> list[TwinRecord]
        def close(self) -> None

Calls are synchronous (SQLite, a websocket to a chain); core runs them in its
thread pool. Records are self-certifying (see ``record.py``): a backend can hide
a twin but cannot forge its key without the signature check failing, and the
caller's own ``PinStore`` refuses a key change for a twin it already knew.

``load(backend, **options)`` picks the implementation by name, as Radicale's
``storage.load`` does: ``local`` (SQLite, the default) or ``tfchain``.

This package imports nothing from core.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from phonebook.errors import (
    KeyChanged,
    PhonebookError,
    PhonebookUnavailable,
    RecordInvalid,
    TwinNotFound,
)
from phonebook.record import TwinRecord


@runtime_checkable
class Phonebook(Protocol):
    def resolve(self, name_or_id: str | int) -> TwinRecord: ...

    def by_address(self, address: str) -> TwinRecord | None: ...

    def publish(self, record: TwinRecord, *, replace_key: bool = False) -> TwinRecord: ...

    def list(self) -> list[TwinRecord]: ...

    def close(self) -> None: ...


BACKENDS = ("local", "tfchain")


def load(backend: str, **options: Any) -> Phonebook:
    """Open the phonebook backend named in config (``phonebook.backend``)."""
    if backend == "local":
        from phonebook.local import LocalPhonebook

        return LocalPhonebook(options["path"])
    if backend == "tfchain":
        from phonebook.tfchain import TfchainPhonebook  # type: ignore[import-not-found,unused-ignore]

        return TfchainPhonebook(**options)  # type: ignore[no-any-return,unused-ignore]
    raise PhonebookError(f"unknown phonebook backend {backend!r} (one of {', '.join(BACKENDS)})")


__all__ = [
    "BACKENDS",
    "KeyChanged",
    "Phonebook",
    "PhonebookError",
    "PhonebookUnavailable",
    "RecordInvalid",
    "TwinNotFound",
    "TwinRecord",
    "load",
]
