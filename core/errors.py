"""Core's neutral errors and their one vocabulary of codes.

Core never speaks a wire protocol. It raises one of these, and each adapter
maps them to its own replies in exactly one table keyed by ``ErrorCode``:

=================  =====================================  =====================
adapter            table                                  gives
=================  =====================================  =====================
SMTP               ``protocols/smtp/errors.py`` TABLE     reply code, RFC 3463
IMAP               ``protocols/imap/errors.py`` TABLE     NO/BAD, RFC 5530 code
WebDAV             ``protocols/webdav/bridge.py`` STATUS  HTTP status
peer + local APIs  ``core/peer/errors.py`` REFUSALS       HTTP status, retry?
=================  =====================================  =====================

So "change how over-quota is reported" is the ``OVER_QUOTA`` row of those
four tables; "add an error" is a member of ``ErrorCode`` here, a row in
``FAMILY`` and a row in each table (``tests/core/test_errors.py`` fails
until every table has one). The other way in, what the phonebook and the
dispersed store raise becomes one of these in one table each,
``core/foreign.py``.

Why codes and not classes: the same kind of failure is raised from several
places (mail and files both run out of quota), and a class says too little
(an ``Invalid`` may be a bad name or a body over a limit, which clients must
be told apart). The code is what travels: in logs, in JSON bodies of the
local APIs and in refusals between twins.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every code core raises. A ``StrEnum``: equal to its string on the wire and in JSON."""

    ERROR = "error"                # a TwinError with no more precise code
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    LIMIT = "limit"                # a per-user count limit (subscriptions)
    OVER_QUOTA = "overquota"       # mail.quota or webdav.quota would be exceeded
    CONFLICT = "conflict"
    ALREADY_EXISTS = "exists"      # a mailbox of that name exists
    HAS_CHILDREN = "haschildren"   # a mailbox with children cannot be deleted
    PRECONDITION_FAILED = "precondition_failed"  # an If-Match ETag no longer holds
    INVALID = "invalid"
    TOO_LARGE = "too_large"        # a message or body over a size limit
    SPECIAL_USE = "use"            # an unknown special-use attribute (RFC 6154)
    CONFIG = "config"
    UNAVAILABLE = "unavailable"
    THROTTLED = "throttled"        # too many failed logins: later
    PORT_IN_USE = "port_in_use"
    PEER_REJECTED = "peer_rejected"


class TwinError(Exception):
    """Base of every error core raises on purpose.

    ``code`` is a short stable token for logs, JSON output and peer refusals;
    the message is for humans and never contains a secret. Raised by core it
    is an ``ErrorCode``; a ``PeerRejected`` carries whatever code the other
    twin sent (``code_of`` gives the one adapters look up).
    """

    code: str = ErrorCode.ERROR

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class NotFound(TwinError):
    """The named thing does not exist (or the caller may not know that it does)."""

    code = ErrorCode.NOT_FOUND


class Forbidden(TwinError):
    """The caller is known, but the ACL or a policy refuses the request."""

    code = ErrorCode.FORBIDDEN


class QuotaExceeded(Forbidden):
    """The write would take the user over ``mail.quota`` or the tree over ``webdav.quota``.

    A ``Forbidden``: the caller is known and the request well formed, but the
    account's policy refuses it, until space is freed (so not an ``Invalid``,
    which retrying can never fix). Mail and files raise this one class, so
    every adapter reports over-quota through its single ``OVER_QUOTA`` row.
    """

    code = ErrorCode.OVER_QUOTA


class Conflict(TwinError):
    """The request contradicts current state: exists already, locked, key changed."""

    code = ErrorCode.CONFLICT


class Invalid(TwinError):
    """The input is malformed or over a limit; retrying it unchanged will not help."""

    code = ErrorCode.INVALID


class Unavailable(TwinError):
    """A dependency (backend, peer, phonebook) is down; retrying later may help."""

    code = ErrorCode.UNAVAILABLE


class PeerRejected(TwinError):
    """Another twin refused our envelope; ``code`` carries its refusal code."""

    code = ErrorCode.PEER_REJECTED


class ConfigError(Invalid):
    """The configuration is wrong; the message names the key and the file."""

    code = ErrorCode.CONFIG


# Each code's class: what ``from_code`` rebuilds from a code that crossed a
# process boundary (the CLI reading a local API's JSON), and the class a
# raise site with that code is expected to use.
FAMILY: dict[ErrorCode, type[TwinError]] = {
    ErrorCode.ERROR: TwinError,
    ErrorCode.NOT_FOUND: NotFound,
    ErrorCode.FORBIDDEN: Forbidden,
    ErrorCode.LIMIT: Forbidden,
    ErrorCode.OVER_QUOTA: QuotaExceeded,
    ErrorCode.CONFLICT: Conflict,
    ErrorCode.ALREADY_EXISTS: Conflict,
    ErrorCode.HAS_CHILDREN: Conflict,
    ErrorCode.PRECONDITION_FAILED: Conflict,
    ErrorCode.INVALID: Invalid,
    ErrorCode.TOO_LARGE: Invalid,
    ErrorCode.SPECIAL_USE: Invalid,
    ErrorCode.CONFIG: ConfigError,
    ErrorCode.UNAVAILABLE: Unavailable,
    ErrorCode.THROTTLED: Unavailable,
    ErrorCode.PORT_IN_USE: Unavailable,
    ErrorCode.PEER_REJECTED: PeerRejected,
}

# Codes older twins sent for what is now another code: read as the new one.
LEGACY: dict[str, ErrorCode] = {"quota": ErrorCode.OVER_QUOTA}

_KNOWN = frozenset(ErrorCode)


def known(code: str) -> ErrorCode | None:
    """``code`` as an ``ErrorCode`` (an older twin's spelling included), or None."""
    if code in _KNOWN:
        return ErrorCode(code)
    return LEGACY.get(code)


def code_of(exc: TwinError) -> ErrorCode:
    """The code an adapter's table is looked up by.

    The error's own code when it is one of ours; otherwise (another twin's
    refusal code such as ``bad_signature``, a code set by hand) the default
    code of the nearest class, so a ``PeerRejected`` for ``malformed`` is
    answered as ``PEER_REJECTED`` and one for ``not_found`` as ``NOT_FOUND``.
    """
    own = known(exc.code)
    if own is not None:
        return own
    for cls in type(exc).__mro__:
        default = known(cls.__dict__.get("code", ""))
        if default is not None:
            return default
    return ErrorCode.ERROR


def from_code(code: str, message: str) -> TwinError | None:
    """The error another process reported as ``{"code", "message"}``; None for a code
    that is not ours (the caller says what it makes of that)."""
    own = known(code)
    if own is None:
        return None
    return FAMILY[own](message, code=own)
