"""Progress and an end summary for the long commands (issue 18, item 8).

A long command (``twin mail import|export``, …) reports as it goes on
stderr when stderr is a terminal (one line rewritten in place, at most four
times a second) or when ``--progress`` asks for it (then one line per step,
for a log or a script to follow), and ends with a one-line summary on stdout:
counts, bytes, seconds; ``--json`` makes that summary one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable
from typing import Any, TextIO, TypeVar

T = TypeVar("T")

INTERVAL = 0.25


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class Progress:
    """What a long command did so far; ``step`` reports it, ``summary`` ends it."""

    def __init__(self, what: str, *, forced: bool = False, stream: TextIO | None = None) -> None:
        self.what = what
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = forced or self.tty
        self.lines = forced and not self.tty
        self.started = time.monotonic()
        self._last = 0.0
        self._shown = False

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def step(self, text: str, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.lines:
            print(f"{self.what}: {text}", file=self.stream, flush=True)
            return
        if not force and now - self._last < INTERVAL:
            return
        self._last = now
        self.stream.write(f"\r\x1b[K{self.what}: {text}")
        self.stream.flush()
        self._shown = True

    def summary(self, counts: dict[str, Any], text: str, *, as_json: bool = False,
                out: TextIO | None = None) -> None:
        """End: clear the progress line, print one line (or JSON) with the seconds."""
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        seconds = round(self.seconds, 3)
        target = out if out is not None else sys.stdout
        if as_json:
            print(json.dumps({**counts, "seconds": seconds}), file=target, flush=True)
        else:
            print(f"{text} in {seconds:.1f} s", file=target, flush=True)


async def heartbeat(progress: Progress, work: Awaitable[T], doing: str) -> T:
    """Await ``work``, telling every second that it still runs and for how long.

    For the commands whose work is one call without counts to report on the
    way (``storage verify|repair|backup``, ``restore``): the owner sees that
    it runs, not a silent terminal."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=1.0)
        if done:
            return task.result()
        progress.step(f"{doing}, {progress.seconds:.0f} s", force=True)
