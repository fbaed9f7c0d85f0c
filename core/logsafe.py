"""One log record, one line: text from outside cannot forge log lines.

Logins, addresses, mailbox names, HELO names and peer names reach log lines
from every protocol; a login sent as an IMAP literal may hold an LF, and a
log line is what an owner (or a log shipper, or fail2ban) trusts to tell who
did what. Escaping at each of those sites would be one forgotten site away
from a forged line, so the twin's log handlers carry ``OneLine``: every
record's message has its control characters escaped (``\\x0a``) before it is
written. A traceback attached to a record keeps its lines: it comes from
the twin's code, not from outside.
"""

from __future__ import annotations

import logging
import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")


def printable(text: str, limit: int | None = None) -> str:
    """``text`` with control characters escaped, for one log or terminal line."""
    if limit is not None:
        text = text[:limit]
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text)


class OneLine(logging.Filter):
    """Escapes control characters in each record's message (see the module doc)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let the handler report it as usual
            return True
        if _CONTROL.search(message):
            record.msg, record.args = printable(message), None
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Put ``OneLine`` on every handler of ``logger`` (the root logger by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, OneLine) for f in handler.filters):
            handler.addFilter(OneLine())
