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


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                    source_address=(source, 0))
    return sock


def _read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(4096):
        out += chunk
    return out


def test_strangers_before_login_never_lock_out_the_owner(
        twins: Callable[..., TwinProcess]) -> None:
    """#15.9: before, every connection was admitted and waited 30 minutes to log in."""
    alice = twins("alice", sets=["imap.max_unauthenticated=3", "imap.max_per_ip=2",
                                 "imap.login_timeout=2"])
    port = alice.port("imap")
    owner = _connect(port)
    assert owner.recv(4096).startswith(b"* OK")
    owner.sendall(f'a LOGIN "{alice.login}" "{alice.password}"\r\n'.encode())
    assert b"a OK" in owner.recv(4096)
    crowd = [_connect(port, f"127.0.2.{i}") for i in range(1, 7)]  # six strangers
    first = [sock.recv(4096) for sock in crowd]  # may hold the BYE that followed already
    assert all(got.startswith(b"* OK") for got in first)
    for sock, got in zip(crowd[:3], first, strict=False):  # the three oldest made room
        assert b"* BYE too many connections" in got + _read_all(sock)
    same = [_connect(port, "127.0.2.9") for _ in range(3)]  # one address: two at most
    assert same[0].recv(4096).startswith(b"* OK") and same[1].recv(4096).startswith(b"* OK")
    assert _read_all(same[2]).startswith(b"* BYE too many connections")
    owner.sendall(b"b NOOP\r\n")  # logged in: never closed to make room
    assert b"b OK" in owner.recv(4096)
    late = _connect(port)
    assert late.recv(4096).startswith(b"* OK")
    late.sendall(f'c LOGIN "{alice.login}" "{alice.password}"\r\n'.encode())
    assert b"c OK" in late.recv(4096)  # and can log in again
    quiet = _connect(port, "127.0.2.10")  # waiting now: same[0], same[1], quiet
    assert quiet.recv(4096).startswith(b"* OK")
    start = time.monotonic()
    assert b"* BYE autologout" in _read_all(quiet)  # silent before login: closed after 2 s
    assert 1 < time.monotonic() - start < 8
    auth = _connect(port, "127.0.2.11")
    assert auth.recv(4096).startswith(b"* OK")
    auth.sendall(b"e AUTHENTICATE PLAIN\r\n")  # and then no response
    assert auth.recv(4096).startswith(b"+")
    auth.settimeout(10)
    assert b"e BAD no AUTHENTICATE response in time" in auth.recv(4096)  # was 300 s
    auth.close()
    owner.sendall(b"d NOOP\r\n")  # logged in: the 30-minute rule
    assert b"d OK" in owner.recv(4096)
    for sock in [owner, late, quiet, *crowd, *same]:
        sock.close()
