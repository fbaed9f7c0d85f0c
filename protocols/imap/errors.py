"""The IMAP adapter's one error type and its one mapping table from core errors.

Handlers raise ``ImapError`` (or let a core error through); the session catches
it at the command edge and answers ``tag NO [CODE] text`` or ``tag BAD text``.
``TABLE``, keyed by the core error's ``ErrorCode`` (``core.errors``), is the
only place that decides what a client is told for a core error (mailbox
full: the ``OVER_QUOTA`` row), as RFC 5530 response codes.
"""

from __future__ import annotations

from core.errors import ErrorCode, TwinError, code_of


class ImapError(Exception):
    """A command failed: ``status`` is NO or BAD, ``code`` an RFC 5530 response code."""

    def __init__(self, status: str, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.code = code


def No(text: str, code: str | None = None) -> ImapError:
    return ImapError("NO", text, code)


def Bad(text: str, code: str | None = None) -> ImapError:
    return ImapError("BAD", text, code)


# core error code -> (status, RFC 5530 response code). Every ``ErrorCode`` has a
# row (tests/core/test_errors.py checks), so a code added to core cannot reach
# a client as SERVERBUG unnoticed.
TABLE: dict[ErrorCode, tuple[str, str | None]] = {
    ErrorCode.ERROR: ("NO", "SERVERBUG"),
    ErrorCode.NOT_FOUND: ("NO", "NONEXISTENT"),
    ErrorCode.FORBIDDEN: ("NO", "NOPERM"),
    ErrorCode.LIMIT: ("NO", "LIMIT"),               # a count limit (RFC 5530 §3)
    ErrorCode.OVER_QUOTA: ("NO", "OVERQUOTA"),      # RFC 9208 §4.3 (APPEND, COPY)
    ErrorCode.CONFLICT: ("NO", "INUSE"),
    ErrorCode.ALREADY_EXISTS: ("NO", "ALREADYEXISTS"),
    ErrorCode.HAS_CHILDREN: ("NO", "INUSE"),
    ErrorCode.PRECONDITION_FAILED: ("NO", "INUSE"),
    ErrorCode.INVALID: ("NO", "CANNOT"),
    ErrorCode.TOO_LARGE: ("NO", "TOOBIG"),          # RFC 7889 APPENDLIMIT
    ErrorCode.SPECIAL_USE: ("NO", "USEATTR"),       # RFC 6154 §5.3
    ErrorCode.CONFIG: ("NO", "SERVERBUG"),          # ours to fix, not the client's
    ErrorCode.UNAVAILABLE: ("NO", "UNAVAILABLE"),
    ErrorCode.THROTTLED: ("NO", "UNAVAILABLE"),     # told at once, with the wait
    ErrorCode.PORT_IN_USE: ("NO", "UNAVAILABLE"),
    ErrorCode.PEER_REJECTED: ("NO", "UNAVAILABLE"),
}


def from_core(exc: TwinError) -> ImapError:
    status, code = TABLE[code_of(exc)]
    return ImapError(status, str(exc), code)
