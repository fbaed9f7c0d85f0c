"""Listening sockets and what ``twin status`` reports about them.

Every listener binds through ``bind`` so that a taken port gives the same
clear message whatever the protocol, and port 0 (tests) yields the real port.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from core.errors import ErrorCode, Unavailable


@dataclass(frozen=True)
class ListenerInfo:
    name: str
    host: str
    port: int
    tls: str  # "implicit", "starttls" or "none"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Listener(Protocol):
    """What a protocol's ``start(service)`` returns (see ``core.service``)."""

    @property
    def info(self) -> list[ListenerInfo]: ...

    async def stop(self) -> None: ...


def bind(host: str, port: int, what: str, config_key: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit this; asyncio only sets it itself for sockets created with
    # proto=IPPROTO_TCP. Without it Nagle + delayed ACK add ~40 ms to small responses.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise Unavailable(
                f"cannot start {what}: {host}:{port} is already in use by another program "
                f"(another twin?). Stop it or choose another port with {config_key}.",
                code=ErrorCode.PORT_IN_USE) from None
        raise Unavailable(f"cannot start {what} on {host}:{port}: {exc.strerror}") from None
    sock.listen(512)
    sock.setblocking(False)
    return sock


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"
