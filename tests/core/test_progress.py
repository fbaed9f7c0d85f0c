"""Progress and end summaries of the long commands (core/progress.py, issue 18 item 8)."""

from __future__ import annotations

import asyncio
import io
import json

from core.progress import Progress, heartbeat, human_bytes


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_silent_unless_a_terminal_or_asked() -> None:
    pipe = io.StringIO()
    Progress("x", stream=pipe).step("1 of 2")
    assert pipe.getvalue() == ""
    asked = io.StringIO()
    p = Progress("x", forced=True, stream=asked)
    p.step("1 of 2")
    p.step("2 of 2")
    assert asked.getvalue() == "x: 1 of 2\nx: 2 of 2\n"  # a line each: for logs and scripts
    tty = Terminal()
    p = Progress("x", stream=tty)
    p.step("1 of 2")
    p.step("2 of 2")  # within the interval: not shown
    assert tty.getvalue() == "\r\x1b[Kx: 1 of 2"


def test_the_summary_is_one_line_or_json_with_the_seconds() -> None:
    out, tty = io.StringIO(), Terminal()
    p = Progress("import", stream=tty)
    p.step("half way")
    p.summary({"added": 3}, "imported 3", out=out)
    assert tty.getvalue().endswith("\r\x1b[K")  # the progress line is cleared first
    line = out.getvalue()
    assert line.startswith("imported 3 in ") and line.endswith(" s\n") and line.count("\n") == 1
    out = io.StringIO()
    Progress("import").summary({"added": 3}, "ignored", as_json=True, out=out)
    got = json.loads(out.getvalue())
    assert got["added"] == 3 and got["seconds"] >= 0


async def test_heartbeat_tells_that_a_long_call_still_runs() -> None:
    lines = io.StringIO()
    p = Progress("verify", forced=True, stream=lines)

    async def work() -> int:
        await asyncio.sleep(2.3)
        return 7
    assert await heartbeat(p, work(), "checking shares") == 7
    assert lines.getvalue().count("verify: checking shares, ") == 2


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (5, 2048, 3 * 1024**3)] == ["5 B", "2.0 KiB", "3.0 GiB"]
