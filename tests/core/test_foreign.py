"""The phonebook's and the store's errors in core's terms: one table each (core.foreign)."""

from __future__ import annotations

import pytest

import phonebook as pb
import storage
from core.errors import Conflict, Forbidden, Invalid, NotFound, TwinError, Unavailable
from core.foreign import phonebook_error, storage_error


@pytest.mark.parametrize(("exc", "expected"), [
    (pb.TwinNotFound("no twin bob"), NotFound),
    (pb.RecordInvalid("bad signature"), Forbidden),
    (pb.KeyChanged("bob has a new key"), Conflict),
    (pb.PhonebookUnavailable("chain down"), Unavailable),
    (pb.PhonebookError("anything else"), Invalid),
])
def test_phonebook_errors(exc: pb.PhonebookError, expected: type[TwinError]) -> None:
    error = phonebook_error(exc)
    assert type(error) is expected
    assert str(error) == str(exc)


@pytest.mark.parametrize(("exc", "expected"), [
    (storage.ObjectNotFound("object 00 not found"), NotFound),
    (storage.InvalidReference("not a ref"), Invalid),
    (storage.BackendRefused("name taken"), Invalid),
    (storage.NotEnoughShares("00", 0, 2, 4), Unavailable),
    (storage.BackendUnavailable("b1", "timed out"), Unavailable),
    (storage.StoreInUse("b1", "/data/b1", 42), Unavailable),
    (storage.IntegrityError("bad tag"), Unavailable),
    (storage.StorageError("other"), Unavailable),
])
def test_storage_errors_keep_the_store_message(exc: storage.StorageError,
                                               expected: type[TwinError]) -> None:
    error = storage_error(exc)
    assert type(error) is expected
    assert str(error) == str(exc)


def test_storage_errors_name_what_was_read() -> None:
    gone = storage_error(storage.ObjectNotFound("object 00 not found"), "file content")
    assert str(gone) == "file content is missing from storage: object 00 not found"
    down = storage_error(storage.BackendUnavailable("b1", "timed out"), "file content")
    assert str(down) == "storage: backend b1 unavailable: timed out"
    bad = storage_error(storage.InvalidReference("not a ref"), "file content")
    assert str(bad) == "not a ref"
