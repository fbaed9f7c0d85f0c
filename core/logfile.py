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

import logging
import logging.handlers
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def log_to_file(path: Path, *, max_bytes: int, backups: int) -> logging.Handler:
    """Send every log record to ``path`` (rotated; see the module docstring) instead
    of stderr; returns the handler installed on the root logger."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler: logging.Handler
    if max_bytes > 0:
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=max(backups, 0), encoding="utf-8")
    else:
        handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.getLogger("twin.serve").info("logging to %s", path)  # the last line on stderr
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, logging.StreamHandler) and getattr(old, "stream", None) in (
                sys.stderr, sys.stdout):
            root.removeHandler(old)
    root.addHandler(handler)
    return handler
