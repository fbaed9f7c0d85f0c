"""The peer protocol's one error type and its one mapping table.

Every refusal a twin sends another twin is a ``Refusal`` with a stable code.
The receiver logs it and answers with the HTTP status from ``STATUS``; the
sender turns a refusal into ``core.errors.PeerRejected`` carrying the same
code, and the outbox decides from ``PERMANENT`` whether retrying can help.
"""

from __future__ import annotations

from core.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    PeerRejected,
    TwinError,
    Unavailable,
)

# code -> HTTP status. Envelope checks first (in the order they are made),
# then what a handler's neutral core error becomes.
STATUS: dict[str, int] = {
    "too_large": 413,
    "unsupported_version": 400,
    "malformed": 400,
    "unknown_sender": 403,
    "sender_key_changed": 403,
    "bad_signature": 403,
    "wrong_recipient": 421,
    "clock_skew": 403,
    "expired": 403,
    "rate_limited": 429,
    "replay": 409,
    "bad_payload": 400,
    "unknown_kind": 404,
    # neutral errors raised by kind handlers (core.errors)
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "precondition_failed": 412,  # an if_match ETag no longer holds (RFC 9110 section 13.1.1)
    "invalid": 400,
    "quota": 507,  # a write would take the owner over webdav.quota (RFC 4331 section 5)
    "unavailable": 503,
    "internal": 500,
}

# Refusals that will be the same on every retry: the outbox bounces at once.
PERMANENT = frozenset({
    "too_large", "unsupported_version", "malformed", "bad_signature", "wrong_recipient",
    "bad_payload", "unknown_kind", "forbidden", "not_found", "invalid", "conflict", "quota",
    "precondition_failed",
})

# Handler errors whose own code says more than their class (QuotaExceeded is an
# Invalid, an oversized content.put too): the code travels as it is.
KEPT = frozenset({"quota", "too_large", "precondition_failed"})

# Core's neutral errors -> refusal codes (the one table).
NEUTRAL: dict[type[TwinError], str] = {
    Forbidden: "forbidden",
    NotFound: "not_found",
    Conflict: "conflict",
    Invalid: "invalid",
    Unavailable: "unavailable",
}


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
        if exc.code in KEPT:
            return cls(exc.code, str(exc))
        for kind in type(exc).__mro__:
            code = NEUTRAL.get(kind)
            if code is not None:
                return cls(code, str(exc))
        return cls("internal", "the handler failed")


def rejected(code: str, message: str) -> PeerRejected:
    """What the sending side raises when a peer refuses it."""
    return PeerRejected(f"peer refused ({code}): {message}", code=code)
