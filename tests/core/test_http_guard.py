"""HTTPS connections are budgeted per address and must send their request head
in time (slowloris): one client cannot hold every slot of the listener.

A real ``twin serve`` process and raw TLS sockets from distinct loopback source
addresses (127.0.0.x), so "another client" is really another address.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable

from core.peer.client import ENVELOPE_PATH
from tests.twins import TwinProcess


def _connect(port: int, source: str) -> ssl.SSLSocket:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return ctx.wrap_socket(raw)


def _closed(sock: ssl.SSLSocket, within: float) -> bool:
    """True when the twin closes the connection (EOF or reset) within ``within`` s."""
    sock.settimeout(within)
    try:
        return sock.recv(4096) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


def _health(port: int, source: str) -> int:
    sock = _connect(port, source)
    sock.sendall(b"GET /twin/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    sock.settimeout(10)
    status = int(sock.recv(4096).split(b" ", 2)[1])
    sock.close()
    return status


def test_one_address_cannot_hold_every_connection(twins: Callable[..., TwinProcess]) -> None:
    alice = twins("alice", sets=["http.max_connections_per_ip=3"])
    port = alice.port("https")
    idle = [_connect(port, "127.0.0.7") for _ in range(3)]  # open, silent
    fourth = _connect(port, "127.0.0.7")
    assert _closed(fourth, 5.0), "a fourth connection from one address must be closed"
    assert _health(port, "127.0.0.8") == 200  # another address is served
    for s in idle:
        s.close()
    time.sleep(0.5)  # slots are given back when connections end
    assert _health(port, "127.0.0.7") == 200


def test_a_request_head_trickled_too_slowly_is_cut_off(twins: Callable[..., TwinProcess]) -> None:
    alice = twins("alice", sets=["http.header_timeout=2"])
    port = alice.port("https")
    silent = _connect(port, "127.0.0.9")  # connects, never sends
    slow = _connect(port, "127.0.0.9")
    slow.sendall(b"GET /twin/v1/health HTTP/1.1\r\n")
    started = time.monotonic()
    cut = False
    while time.monotonic() - started < 8:
        try:
            slow.sendall(b"X-Slow: y\r\n")  # a header line every 0.5 s, never the end
        except OSError:
            cut = True
            break
        if _closed(slow, 0.5):
            cut = True
            break
    assert cut and time.monotonic() - started < 5, "the trickled head was not cut off"
    assert _closed(silent, 1.0), "a connection that never sent a request was kept"
    assert _health(port, "127.0.0.9") == 200  # a prompt request is unaffected


def _held_post(port: int, source: str, forwarded_for: str | None = None) -> ssl.SSLSocket:
    """A peer-API POST whose declared body never comes: a request held in progress."""
    sock = _connect(port, source)
    head = f"POST {ENVELOPE_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
    if forwarded_for:
        head += f"X-Forwarded-For: {forwarded_for}\r\n"
    sock.sendall((head + "\r\n").encode())
    return sock


def _status_of(sock: ssl.SSLSocket, within: float = 5.0) -> int | None:
    """The status the twin answers at once, or None while the request is still held."""
    sock.settimeout(within)
    try:
        data = sock.recv(4096)
    except TimeoutError:
        return None
    return int(data.split(b" ", 2)[1]) if data else None


def test_only_a_trusted_proxy_names_the_client(twins: Callable[..., TwinProcess]) -> None:
    alice = twins("alice", sets=["http.max_per_ip=1", "http.max_connections_per_ip=2",
                                 'http.trusted_proxies=["127.0.0.5/32"]'])
    port = alice.port("https")
    # through the trusted proxy each forwarded client has its own request slot...
    a = _held_post(port, "127.0.0.5", "192.0.2.1")
    b = _held_post(port, "127.0.0.5", "192.0.2.2")
    assert _status_of(b, 1.0) is None  # held: admitted, not refused
    again = _held_post(port, "127.0.0.5", "192.0.2.1")
    assert _status_of(again) == 503  # client 192.0.2.1 already has its one request
    assert _status_of(a, 0.2) is None  # the proxy's 3 connections > the cap of 2 per address
    # from anyone else X-Forwarded-For is ignored: its own address counts
    c = _held_post(port, "127.0.0.6", "192.0.2.3")
    d = _held_post(port, "127.0.0.6", "192.0.2.4")
    assert _status_of(d) == 503
    for s in (a, b, again, c, d):
        s.close()


def test_a_bad_trusted_proxy_entry_stops_the_twin_with_its_key(
        twins: Callable[..., TwinProcess]) -> None:
    alice = twins("alice", start=False, sets=['http.trusted_proxies=["not-an-address"]'])
    try:
        alice.start(timeout=30)
    except RuntimeError as exc:
        assert "http.trusted_proxies" in str(exc)
    else:
        raise AssertionError("the twin started with an unreadable http.trusted_proxies")
