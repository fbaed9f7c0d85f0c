"""What core's two dependencies raise, in core's vocabulary: one table each.

Adapters only ever see ``core.errors``. What ``phonebook`` and ``storage``
raise is turned into one of those where core calls them, through the table
here, so "a missing object is ``NotFound``" is one row, not a branch at
every call site:

=========================  ==========================================  ===============
function                   raised by the dependency                    core's error
=========================  ==========================================  ===============
``phonebook_error``        ``TwinNotFound``                            ``NotFound``
                           ``RecordInvalid``                           ``Forbidden``
                           ``KeyChanged``                              ``Conflict``
                           ``PhonebookUnavailable``                    ``Unavailable``
                           any other ``PhonebookError``                ``Invalid``
``storage_error``          ``ObjectNotFound``                          ``NotFound``
                           ``InvalidReference``, ``BackendRefused``    ``Invalid``
                           any other ``StorageError`` (not enough      ``Unavailable``
                           shares, a backend down, integrity)
=========================  ==========================================  ===============

A module of its own, not ``core.errors``: that one is imported by every CLI
command before it knows it needs the store, and importing ``storage`` loads
all of it.
"""

from __future__ import annotations

import phonebook as pb
import storage
from core.errors import Conflict, Forbidden, Invalid, NotFound, TwinError, Unavailable

PHONEBOOK: dict[type[pb.PhonebookError], type[TwinError]] = {
    pb.TwinNotFound: NotFound,
    pb.RecordInvalid: Forbidden,
    pb.KeyChanged: Conflict,
    pb.PhonebookUnavailable: Unavailable,
}

# Each storage error's class in core and how a message names it when the caller
# says what was being read or written (``subject``); looked up along the MRO, so
# ``StorageError`` is the row of every error without one of its own.
STORAGE: dict[type[storage.StorageError], tuple[type[TwinError], str]] = {
    storage.ObjectNotFound: (NotFound, "{subject} is missing from storage: {exc}"),
    storage.InvalidReference: (Invalid, "{exc}"),
    storage.BackendRefused: (Invalid, "{exc}"),
    storage.StorageError: (Unavailable, "storage: {exc}"),
}


def phonebook_error(exc: pb.PhonebookError) -> TwinError:
    """Phonebook failures in core's neutral terms (the one mapping table)."""
    return PHONEBOOK.get(type(exc), Invalid)(str(exc))


def storage_error(exc: storage.StorageError, subject: str | None = None) -> TwinError:
    """Dispersed-store failures in core's neutral terms (the one mapping table).

    The message is the store's own, or with ``subject`` (what was being read
    or written, e.g. ``"file content"``) the row's wording around it."""
    error, wording = next(STORAGE[c] for c in type(exc).__mro__ if c in STORAGE)
    if subject is None:
        return error(str(exc))
    return error(wording.format(subject=subject, exc=exc))
