"""Floods from unauthenticated clients against a real ``twin serve`` process.

Issue #15.2: literals were not counted against a command's size, so a LOGIN
made of thousands of 64 KiB non-synchronising literals grew the twin by a GB
before any password was checked. The twin's RSS is read from /proc.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from tests.twins import TwinProcess

MiB = 1024 * 1024


def rss(pid: int) -> int:
    for line in open(f"/proc/{pid}/status").read().splitlines():  # noqa: SIM115
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def flood(port: int, literals: int, size: int = 65536) -> tuple[bytes, bool]:
    """Send ``a LOGIN {size+} ...`` with ``literals`` literals; what came back, and EOF."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    got = bytearray(sock.recv(4096))
    closed = threading.Event()

    def read() -> None:
        try:
            while chunk := sock.recv(65536):
                got.extend(chunk)
        except OSError:
            pass
        closed.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    chunk = b"x" * size
    try:
        sock.sendall(b"a LOGIN {%d+}\r\n" % size)
        for _ in range(literals):
            sock.sendall(chunk + b" {%d+}\r\n" % size)
        sock.sendall(chunk + b"\r\n")
    except OSError:
        pass  # the twin closed the connection: what we want
    closed.wait(30)
    sock.close()
    return bytes(got), closed.is_set()


def test_a_pre_auth_literal_flood_is_refused_without_buffering(
        twins: Callable[..., TwinProcess]) -> None:
    alice = twins("alice")
    assert alice.proc is not None
    pid = alice.proc.pid
    time.sleep(0.5)
    before = rss(pid)
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss(pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    answer, closed = flood(alice.port("imap"), 2000)  # 125 MiB if buffered
    done.set()
    sampler.join()
    growth = max(peak, rss(pid)) - before
    print(f"RSS before {before / MiB:.1f} MiB, peak growth {growth / MiB:.1f} MiB")
    assert closed, "the twin kept reading the flood"
    assert b"* BYE" in answer
    assert growth < 32 * MiB, f"RSS grew by {growth / MiB:.1f} MiB"
    with socket.create_connection(("127.0.0.1", alice.port("imap")), timeout=10) as s:
        assert s.recv(4096).startswith(b"* OK")  # and the twin still serves
