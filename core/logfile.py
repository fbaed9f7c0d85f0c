"""Where ``twin serve`` logs: stderr, or a file that cannot grow without bound.

Why: a twin runs for months. On stderr its log belongs to whoever reads it
(a terminal, or a service manager such as journald that rotates on its own).
Redirected to a file it grew without end (6.9 MB in 26 minutes of soak), so
``log.file`` names a file in the data dir that the twin rotates itself by size
(``log.max_bytes``, ``log.backups`` old files kept: stdlib
``RotatingFileHandler``), or, with ``log.max_bytes = 0``, leaves rotation to
logrotate and reopens the file when logrotate moved it (``WatchedFileHandler``;
no ``copytruncate`` needed). Either way at most ``max_bytes * (backups + 1)``
bytes, plus what logrotate keeps.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import sys
from pathlib import Path

from core import logsafe

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line (``log.format = "json"``), for log shippers:
    ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` and, with a
    traceback, ``exception``. JSON escapes every control character itself."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
                 "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def formatter(kind: str) -> logging.Formatter:
    """The formatter of ``log.format``: "text" (one readable line) or "json"."""
    return JsonFormatter() if kind == "json" else logging.Formatter(FORMAT)


def use_format(kind: str) -> None:
    """Every handler of the root logger writes ``kind`` from now on."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter(kind))


def log_to_file(path: Path, *, max_bytes: int, backups: int,
                kind: str = "text") -> logging.Handler:
    """Send every log record to ``path`` (rotated; see the module docstring) instead
    of stderr; returns the handler installed on the root logger."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler: logging.Handler
    if max_bytes > 0:
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=max(backups, 0), encoding="utf-8")
    else:
        handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
    handler.setFormatter(formatter(kind))
    handler.addFilter(logsafe.OneLine())  # as on stderr: nothing from outside forges a line
    logging.getLogger("twin.serve").info("logging to %s", path)  # the last line on stderr
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, logging.StreamHandler) and getattr(old, "stream", None) in (
                sys.stderr, sys.stdout):
            root.removeHandler(old)
    root.addHandler(handler)
    return handler
