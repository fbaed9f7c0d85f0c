"""SMTP replies: the one table from core's neutral errors to reply codes.

Handlers raise ``SmtpError`` (or let a core ``TwinError`` escape); the
``replies`` decorator on every handler hook turns either into the reply line,
so what a client is told for each kind of failure is decided here and only
here. Enhanced status codes follow RFC 3463. aiosmtpd's own replies lack
enhanced codes; ``enhance`` adds them to the ones clients act on.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from core.errors import Conflict, Forbidden, Invalid, NotFound, PeerRejected, TwinError, Unavailable

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


# core error -> (code, enhanced status); the message of the error follows.
TABLE: dict[type[TwinError], tuple[int, str]] = {
    NotFound: (550, "5.1.1"),      # unknown mailbox (RFC 3463 §3.2 X.1.1)
    Forbidden: (550, "5.7.1"),     # delivery not authorized, e.g. relaying (X.7.1)
    Invalid: (554, "5.6.0"),       # bad content or over a limit (X.6.0)
    Conflict: (451, "4.3.0"),
    Unavailable: (451, "4.3.0"),   # storage or a peer down: try again later (X.3.0)
    PeerRejected: (554, "5.4.0"),
}


# a core error's ``code`` that needs a more precise reply than its type's
BY_CODE: dict[str, tuple[int, str]] = {
    "overquota": (452, "4.2.2"),   # mailbox full: temporary, retry later (RFC 3463 X.2.2)
}


def to_smtp(exc: TwinError) -> SmtpError:
    if exc.code in BY_CODE:
        code, status = BY_CODE[exc.code]
        return SmtpError(code, status, str(exc))
    for kind in type(exc).__mro__:
        if kind in TABLE:
            code, status = TABLE[kind]
            return SmtpError(code, status, str(exc))
    return SmtpError(451, "4.3.0", "temporary failure")


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
