"""A running twin does not grow with repeated work (issue 23 item 5).

``twin storage verify`` reads every share of every object; run through the
running twin's local API again and again, it used to add ~1.3 MiB of RSS and
a dozen descriptors per run for the first few dozen runs (a SQLite connection
and page cache per storage thread per database, and freed heap kept). After a
warm-up, repeated verifies must leave RSS and descriptors where they were.
"""

from __future__ import annotations

import os
import re
import smtplib
from collections.abc import Callable
from pathlib import Path

from tests.twins import TwinProcess, twin_cli

MiB = 1024 * 1024


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+)", status)
    assert found is not None
    return int(found.group(1)) / 1024


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_repeated_verifies_through_the_local_api_do_not_grow_the_twin(
        twins: Callable[..., TwinProcess]) -> None:
    twin = twins("alice")
    assert twin.proc is not None
    pid = twin.proc.pid
    with smtplib.SMTP("127.0.0.1", twin.port("smtp"), timeout=60) as client:
        for i in range(150):  # above the pack limit: one stored object each
            body = b"\r\n".join(os.urandom(36).hex().encode() for _ in range(550))
            client.sendmail("someone@example.com", [twin.login],
                            f"From: someone@example.com\r\nSubject: {i}\r\n\r\n".encode() + body)

    def verify() -> None:
        out = twin_cli(twin.data, "storage", "verify", "--json", timeout=300)
        assert '"unreadable": []' in out.stdout, out.stdout[-500:]

    # warm-up: delivering the mail above; then ten verifies in a row
    base = rss_mib(pid)
    after: list[float] = []
    for _ in range(10):
        verify()
        after.append(rss_mib(pid))
    # measured: +3.3 MiB over the ten and 114 fds; with a connection per thread, +20.8
    # MiB (16.5 at the first run) and 410 fds
    assert after[-1] - base < 8.0, f"RSS grew {after[-1] - base:.1f} MiB over 10 verifies"
    assert after[-1] - after[2] < 2.0, f"RSS still grows: {after}"
    assert fds(pid) < 160, f"{fds(pid)} descriptors open"
