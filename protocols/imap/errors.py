"""The IMAP adapter's one error type and its one mapping table from core errors.

Handlers raise ``ImapError`` (or let a core error through); the session catches
it at the command edge and answers ``tag NO [CODE] text`` or ``tag BAD text``.
``TABLE`` is the only place that decides what a client is told for a core
error, refined by the error's ``code`` (RFC 5530 response codes).
"""

from __future__ import annotations

from core.errors import Conflict, Forbidden, Invalid, NotFound, TwinError, Unavailable


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


# (core error class, core error code or None for any) -> (status, response code)
TABLE: dict[tuple[type[TwinError], str | None], tuple[str, str | None]] = {
    (NotFound, None): ("NO", "NONEXISTENT"),
    (Conflict, "exists"): ("NO", "ALREADYEXISTS"),
    (Conflict, "haschildren"): ("NO", "INUSE"),
    (Conflict, None): ("NO", "INUSE"),
    (Forbidden, "overquota"): ("NO", "OVERQUOTA"),
    (Forbidden, None): ("NO", "NOPERM"),
    (Invalid, "toobig"): ("NO", "TOOBIG"),
    (Invalid, "use"): ("NO", "USEATTR"),
    (Invalid, None): ("NO", "CANNOT"),
    (Unavailable, None): ("NO", "UNAVAILABLE"),
}


def from_core(exc: TwinError) -> ImapError:
    for cls in type(exc).__mro__:
        for key in ((cls, exc.code), (cls, None)):
            if key in TABLE:
                status, code = TABLE[key]
                return ImapError(status, str(exc), code)
    return ImapError("NO", str(exc), "SERVERBUG")
