"""The peer protocol's one error type and its one mapping table.

Every refusal a twin sends another twin is a ``Refusal`` with a stable code:
an envelope check's own, or the ``ErrorCode`` of the core error a handler
raised (``core.errors``). The receiver logs it and answers with the HTTP
status from ``REFUSALS``, the one table (keyed like every adapter's); the
sender turns a refusal into ``core.errors.PeerRejected`` carrying the same
code, and the outbox decides from the same row whether retrying can help.
Over quota is the ``OVER_QUOTA`` row.
"""

from __future__ import annotations

from typing import NamedTuple

from core.errors import ErrorCode, PeerRejected, TwinError, code_of, known


class Row(NamedTuple):
    """What one refusal code means: the HTTP status it is answered with, and
    whether the sender's outbox gives up at once (the same on every retry)."""

    status: int
    permanent: bool


# refusal code -> Row: the one table. Envelope checks first (in the order they
# are made), then every core error code (``core.errors.ErrorCode``; a handler's
# error is refused with its own code, tests/core/test_errors.py checks that each
# has a row). The local APIs (``twin share``, ``send``, ``mail ...`` while the
# twin runs) answer core errors with the same statuses.
REFUSALS: dict[str, Row] = {
    "too_large": Row(413, True),
    "unsupported_version": Row(400, True),
    "malformed": Row(400, True),
    "unknown_sender": Row(403, False),
    "sender_key_changed": Row(403, False),
    "bad_signature": Row(403, True),
    "wrong_recipient": Row(421, True),
    "clock_skew": Row(403, False),
    "expired": Row(403, False),
    "rate_limited": Row(429, False),
    "replay": Row(409, False),
    "bad_payload": Row(400, True),
    "unknown_kind": Row(404, True),
    "internal": Row(500, False),
    # core errors raised by kind handlers ("too_large" above is one of them too)
    ErrorCode.ERROR: Row(500, False),
    ErrorCode.NOT_FOUND: Row(404, True),
    ErrorCode.FORBIDDEN: Row(403, True),
    ErrorCode.LIMIT: Row(403, True),
    # mailbox or tree full: 507 (RFC 4331 section 5); not permanent, like SMTP's
    # 452 4.2.2: the outbox retries a mail.deliver until the owner makes room
    ErrorCode.OVER_QUOTA: Row(507, False),
    ErrorCode.CONFLICT: Row(409, True),
    ErrorCode.ALREADY_EXISTS: Row(409, True),
    ErrorCode.HAS_CHILDREN: Row(409, True),
    ErrorCode.PRECONDITION_FAILED: Row(412, True),  # an if_match ETag no longer holds
    ErrorCode.INVALID: Row(400, True),
    ErrorCode.SPECIAL_USE: Row(400, True),
    ErrorCode.CONFIG: Row(500, False),
    ErrorCode.UNAVAILABLE: Row(503, False),
    ErrorCode.THROTTLED: Row(503, False),
    ErrorCode.PORT_IN_USE: Row(503, False),
    ErrorCode.PEER_REJECTED: Row(502, False),  # a twin we asked on the way refused
}

# The two columns, for callers that want one of them.
STATUS: dict[str, int] = {code: row.status for code, row in REFUSALS.items()}
PERMANENT = frozenset(code for code, row in REFUSALS.items() if row.permanent)


def http_status(exc: TwinError) -> int:
    """The status a local API answers a core error with (the same as a refusal)."""
    return STATUS[code_of(exc)]


class Refusal(Exception):
    """An envelope (or the request inside it) refused with ``code``."""

    def __init__(self, code: str, message: str, *, ack: bytes | None = None) -> None:
        super().__init__(message)
        assert code in STATUS, code
        self.code = code
        self.message = message
        self.ack = ack  # a stored ack, re-sent with a "replay" refusal

    @property
    def status(self) -> int:
        return STATUS[self.code]

    @classmethod
    def from_error(cls, exc: TwinError) -> Refusal:
        """A handler's core error, refused with its own code (``code_of``)."""
        return cls(code_of(exc), str(exc))


def rejected(code: str, message: str) -> PeerRejected:
    """What the sending side raises when a peer refuses it.

    An older twin's spelling of a code (``quota``) is read as ours (``overquota``),
    so the tables and the outbox see one vocabulary."""
    code = known(code) or code
    return PeerRejected(f"peer refused ({code}): {message}", code=code)
