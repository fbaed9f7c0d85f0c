"""core.peer.http1 against a scripted plain-HTTP server: reuse, bounds, failures."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from core.errors import Invalid, Unavailable
from core.peer.http1 import HEAD_LIMIT, Origin

Reply = Callable[[bytes], Awaitable[bytes | None]]  # request body -> raw answer, None: hang up


class Server:
    """Answers each request on a connection with ``reply``; counts connections."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:  # a client that goes away mid-request just ends this connection
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                await self._serve(reader, writer)
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            body = await reader.readexactly(length)
            self.requests.append(head + body)
            answer = await self.reply(body)
            if answer is None:
                break
            writer.write(answer)
            await writer.drain()
            if b"content-length" not in answer.lower() and b"chunked" not in answer.lower():
                break  # an answer delimited by the end of the connection


@contextlib.asynccontextmanager
async def serving(reply: Reply) -> AsyncIterator[tuple[Server, str]]:
    server = Server(reply)
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        srv.close()
        for w in server.writers:
            w.close()


def ok(body: bytes, extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


async def echo(body: bytes) -> bytes:
    return ok(body)


async def test_connections_are_kept_and_reused() -> None:
    async with serving(echo) as (server, url):
        origin = Origin(url, timeout=5)
        for i in range(5):
            answer = await origin.post("/p", b"x" * i, "a/b", 100)
            assert (answer.status, answer.body) == (200, b"x" * i)
        assert server.connections == 1
        assert server.requests[0].startswith(b"POST /p HTTP/1.1\r\n")
        origin.close()


async def test_a_kept_connection_the_peer_closed_is_retried_once_anew() -> None:
    async with serving(echo) as (server, url):
        origin = Origin(url, timeout=5)
        await origin.post("/p", b"a", "a/b", 100)
        for w in server.writers:  # the peer drops its idle keep-alive connection
            w.close()
        await asyncio.sleep(0.05)
        assert (await origin.post("/p", b"b", "a/b", 100)).body == b"b"
        assert server.connections == 2
        origin.close()


async def test_a_new_connection_that_breaks_is_unavailable() -> None:
    async def hang_up(body: bytes) -> None:
        return None
    async with serving(hang_up) as (_, url):
        with pytest.raises(Unavailable):
            await Origin(url, timeout=5).post("/p", b"a", "a/b", 100)


async def test_an_answer_over_the_cap_is_refused_before_it_is_read() -> None:
    async def huge(body: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n"
    async with serving(huge) as (_, url):
        with pytest.raises(Invalid, match="over 100"):
            await Origin(url, timeout=5).post("/p", b"a", "a/b", 100)


async def test_an_endless_header_block_is_refused() -> None:
    async def endless(body: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * (HEAD_LIMIT // 8 + 1) + b"\r\n"
    async with serving(endless) as (_, url):
        with pytest.raises(Invalid):
            await Origin(url, timeout=5).post("/p", b"a", "a/b", 100)


async def test_chunked_and_close_delimited_answers() -> None:
    async def chunked(body: bytes) -> bytes:
        return (b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n")
    async with serving(chunked) as (server, url):
        origin = Origin(url, timeout=5)
        for _ in range(2):
            answer = await origin.post("/p", b"a", "a/b", 100)
            assert (answer.status, answer.body) == (404, b"abcde")
        assert server.connections == 1

    async def closing(body: bytes) -> bytes:
        return b"HTTP/1.0 200 OK\r\n\r\nuntil the end"
    async with serving(closing) as (server, url):
        origin = Origin(url, timeout=5)
        assert (await origin.post("/p", b"a", "a/b", 100)).body == b"until the end"


async def test_not_http_and_silence() -> None:
    async def garbage(body: bytes) -> bytes:
        return b"SSH-2.0-OpenSSH\r\n\r\n"
    async with serving(garbage) as (_, url):
        with pytest.raises(Invalid):
            await Origin(url, timeout=5).post("/p", b"a", "a/b", 100)

    async def silent(body: bytes) -> bytes:
        await asyncio.sleep(10)
        return ok(b"")
    async with serving(silent) as (_, url):
        with pytest.raises(Unavailable):
            await Origin(url, timeout=0.2).post("/p", b"a", "a/b", 100)


async def test_nobody_listening_and_address_override() -> None:
    async with serving(echo) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        mapped = Origin("http://bob.example", timeout=5, address=("127.0.0.1", port))
        assert (await mapped.post("/p", b"m", "a/b", 100)).body == b"m"
        mapped.close()
    with pytest.raises(Unavailable):
        await Origin(url, timeout=5).post("/p", b"a", "a/b", 100)
    with pytest.raises(Invalid):
        Origin("ftp://x", timeout=5)
