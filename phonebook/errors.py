"""Phonebook errors. Core maps them onto its neutral errors in one place."""


class PhonebookError(Exception):
    """Base of every phonebook failure."""


class TwinNotFound(PhonebookError):
    """No twin by that name, id, key or mail domain."""


class RecordInvalid(PhonebookError):
    """A record failed its signature, shape or validity check: never use it."""


class KeyChanged(PhonebookError):
    """A known twin now presents a different key; refused until re-pinned."""


class PhonebookUnavailable(PhonebookError):
    """The backend cannot be reached right now (chain down, file locked too long)."""
