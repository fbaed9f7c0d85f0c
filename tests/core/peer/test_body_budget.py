"""Peer request bodies are read within a byte budget, before any signature check (#15.9).

A real ``twin serve`` process, raw TLS sockets: a stranger announces large
bodies and sends them slowly (or not at all); what the twin holds is bounded
by ``peer.max_buffered`` and ``peer.max_buffered_per_ip`` and the rest is
refused at once with 503, not read.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable

from core.peer.client import ENVELOPE_PATH
from tests.twins import TwinProcess

MiB = 1024 * 1024


def _post(port: int, length: int | None, source: str = "127.0.0.1") -> ssl.SSLSocket:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock = ctx.wrap_socket(raw)
    head = f"POST {ENVELOPE_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
    head += f"Content-Length: {length}\r\n" if length is not None else \
        "Transfer-Encoding: chunked\r\n"
    sock.sendall((head + "\r\n").encode())
    return sock


def _status(sock: ssl.SSLSocket, within: float = 5.0) -> int:
    sock.settimeout(within)
    data = sock.recv(4096)
    return int(data.split(b" ", 2)[1])


def _chunk(n: int) -> bytes:
    return b"%x\r\n" % n + b"\0" * n + b"\r\n"


def test_bodies_past_the_budget_are_refused_unread(twins: Callable[..., TwinProcess]) -> None:
    alice = twins("alice", sets=[f"peer.max_buffered={3 * MiB}",
                                 f"peer.max_buffered_per_ip={2 * MiB}"])
    port = alice.port("https")
    held = _post(port, 2 * MiB)  # declared: 2 MiB taken from the budget at once
    held.sendall(b"\0" * 1024)  # ...and then slowly, or never
    time.sleep(0.3)
    same_ip = _post(port, 64 * 1024)  # this address already holds its 2 MiB
    assert _status(same_ip) == 503
    other = _post(port, 2 * MiB, "127.0.0.2")  # fits its address, not the total
    assert _status(other) == 503
    small = _post(port, 512 * 1024, "127.0.0.3")  # fits both: read, then judged
    small.sendall(b"\0" * 512 * 1024)
    assert _status(small) == 400  # malformed envelope: the budget let it through
    chunked = _post(port, None, "127.0.0.4")  # no length: counted as it arrives
    try:
        for _ in range(8):
            chunked.sendall(_chunk(256 * 1024))
    except OSError:
        pass
    assert _status(chunked) == 503
    held.close()
    time.sleep(0.3)  # the held body is given back when its request ends
    again = _post(port, 2 * MiB - 10)
    again.sendall(b"\0" * (2 * MiB - 10))
    assert _status(again) == 400
    for s in (same_ip, other, small, chunked, again):
        s.close()


def test_one_address_cannot_take_every_request_slot(twins: Callable[..., TwinProcess]) -> None:
    alice = twins("alice", sets=["http.max_per_ip=2"])
    port = alice.port("https")
    held = [_post(port, 1024, "127.0.0.5") for _ in range(2)]  # bodies never sent
    time.sleep(0.3)
    third = _post(port, 1024, "127.0.0.5")
    assert _status(third) == 503
    elsewhere = _post(port, 16, "127.0.0.6")
    elsewhere.sendall(b"\0" * 16)
    assert _status(elsewhere) == 400  # served (a malformed envelope)
    for s in (*held, third, elsewhere):
        s.close()
