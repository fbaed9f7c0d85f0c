"""SMTP replies: the one table from core's error codes to reply codes.

Handlers raise ``SmtpError`` (or let a core ``TwinError`` escape); the
``replies`` decorator on every handler hook turns either into the reply line
through ``TABLE``, keyed by the error's ``ErrorCode`` (``core.errors``), so
what a client is told for each kind of failure (mailbox full: the
``OVER_QUOTA`` row) is decided here and only here. Enhanced status codes
follow RFC 3463. aiosmtpd's own replies lack
enhanced codes; ``enhance`` adds them to the ones clients act on.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from core.errors import ErrorCode, TwinError, code_of

log = logging.getLogger("twin.smtp")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class SmtpError(Exception):
    """One SMTP reply: ``code`` (RFC 5321 §4.2), ``status`` (RFC 3463), text."""

    def __init__(self, code: int, status: str, text: str) -> None:
        super().__init__(f"{code} {status} {text}")
        self.code, self.status, self.text = code, status, text

    @property
    def reply(self) -> str:
        text = " ".join(self.text.split())[:400]
        return f"{self.code} {self.status} {text}"


# core error code -> (reply code, enhanced status); the message of the error
# follows. Every ``ErrorCode`` has a row (tests/core/test_errors.py checks), so
# adding a code to core means deciding here what an SMTP client is told.
TABLE: dict[ErrorCode, tuple[int, str]] = {
    ErrorCode.ERROR: (451, "4.3.0"),           # no more precise code: try again later
    ErrorCode.NOT_FOUND: (550, "5.1.1"),       # unknown mailbox (RFC 3463 §3.2 X.1.1)
    ErrorCode.FORBIDDEN: (550, "5.7.1"),       # delivery not authorized, e.g. relaying (X.7.1)
    ErrorCode.LIMIT: (550, "5.7.1"),
    ErrorCode.OVER_QUOTA: (452, "4.2.2"),      # mailbox full: temporary, retry later (X.2.2)
    ErrorCode.CONFLICT: (451, "4.3.0"),
    ErrorCode.ALREADY_EXISTS: (451, "4.3.0"),
    ErrorCode.HAS_CHILDREN: (451, "4.3.0"),
    ErrorCode.PRECONDITION_FAILED: (451, "4.3.0"),
    ErrorCode.INVALID: (554, "5.6.0"),         # bad content (X.6.0)
    ErrorCode.TOO_LARGE: (552, "5.3.4"),       # message too big for system (X.3.4)
    ErrorCode.SPECIAL_USE: (554, "5.6.0"),
    ErrorCode.CONFIG: (451, "4.3.0"),          # our configuration, not the client's fault
    ErrorCode.UNAVAILABLE: (451, "4.3.0"),     # storage or a peer down: try again later (X.3.0)
    ErrorCode.THROTTLED: (454, "4.7.0"),       # RFC 4954 §6: temporary authentication failure
    ErrorCode.PORT_IN_USE: (451, "4.3.0"),
    ErrorCode.PEER_REJECTED: (554, "5.4.0"),   # another twin refused it (X.4.0 routing)
}


def to_smtp(exc: TwinError) -> SmtpError:
    code, status = TABLE[code_of(exc)]
    return SmtpError(code, status, str(exc))


def replies(hook: F) -> F:
    """Catch errors at the command edge and answer with a reply line."""

    @functools.wraps(hook)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await hook(*args, **kwargs)
        except SmtpError as exc:
            return exc.reply
        except TwinError as exc:
            return to_smtp(exc).reply
        except Exception:
            log.exception("SMTP %s failed", hook.__name__)
            return "451 4.3.0 Internal error; try again later"

    return wrapper  # type: ignore[return-value]


# aiosmtpd's built-in replies that clients act on, with enhanced status codes.
ENHANCED = {
    "552 Error: Too much mail data": "552 5.3.4 Message too big for system",
    "552 Error: message size exceeds fixed maximum message size":
        "552 5.3.4 Message size exceeds fixed maximum message size",
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Line too long",
    "503 Error: need MAIL command": "503 5.5.1 Error: need MAIL command",
    "503 Error: need RCPT command": "503 5.5.1 Error: need RCPT command",
    "503 Error: nested MAIL command": "503 5.5.1 Error: nested MAIL command",
    "503 Already authenticated": "503 5.5.1 Already authenticated",
}


def enhance(status: str) -> str:
    return ENHANCED.get(status, status)
