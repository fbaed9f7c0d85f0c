"""A minimal HTTP/1.1 client for one request shape: POST a body of known length,
read a bounded answer, keep the connection for the next one.

Why not httpx here: a batch of envelopes is one POST, and httpx with
httpcore's pool, anyio's TLS stream and h11 spent about 2 ms of CPU per
request on a loaded 2-core machine, a quarter of a sending twin's CPU per
message at twin-to-twin mail rates (issue #22); asyncio's own TLS streams and
a few lines of parsing do the same exchange for a fraction. Everything else
(single envelopes, streamed ``content.get`` answers) keeps httpx.

TLS is not verified, for the reason given in ``core.peer.client``: envelopes
and acks are signed and encrypted end to end, TLS only hides traffic from the
network. Do not use this client for anything else.

Bounds: the status line and header block are limited by the stream reader
(``HEAD_LIMIT``), a body by the caller's ``cap`` (refused before it is read
when the declared length is over it). A connection is reused only after an
answer that was read to its end and did not ask to close.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from core.errors import Invalid, Unavailable

HEAD_LIMIT = 64 * 1024  # status line and headers of one answer
MAX_IDLE = 8  # idle connections kept per origin


def _tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # see the module docstring: envelopes carry the security
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


_TLS = _tls()


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


class Malformed(Exception):
    """The peer's answer is not HTTP/1.1 as this client reads it."""


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    used: bool = field(default=False)  # answered a request before: may have gone stale

    def close(self) -> None:
        self.writer.close()


class Origin:
    """Keep-alive connections to one peer endpoint (``https://host[:port][/base]``).

    ``address`` overrides where to connect (``peer.hosts``); the Host header
    and TLS server name stay the endpoint's."""

    def __init__(self, endpoint: str, *, timeout: float,
                 address: tuple[str, int | None] | None = None) -> None:
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise Invalid(f"peer endpoint {endpoint!r} is not an http(s) URL")
        self.endpoint = endpoint
        self.tls = url.scheme == "https"
        self.host_header = url.netloc
        self.server_name = url.hostname
        default = 443 if self.tls else 80
        self.connect_to = (address[0], address[1] or url.port or default) if address \
            else (url.hostname, url.port or default)
        self.base = url.path.rstrip("/")
        self.timeout = timeout
        self._idle: list[_Conn] = []

    async def post(self, path: str, body: bytes, content_type: str, cap: int) -> Answer:
        """POST ``body`` to ``base + path``; the answer, its body at most ``cap`` bytes.

        ``Unavailable`` when the peer cannot be reached or the exchange breaks
        off or times out; ``Invalid`` for an answer that is not HTTP or is over
        ``cap``. A kept connection the peer closed meanwhile is retried once on
        a new one (a batch is safe to send again: the receiver's replay guard
        answers a uid it has seen with the ack it stored)."""
        head = (f"POST {self.base}{path} HTTP/1.1\r\nHost: {self.host_header}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "\r\n").encode("ascii")
        while True:
            conn = await self._connection()
            try:
                async with asyncio.timeout(self.timeout):
                    answer, keep = await self._exchange(conn, head, body, cap)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                conn.close()
                answered = isinstance(exc, asyncio.IncompleteReadError) and exc.partial
                if conn.used and not answered:
                    continue  # a kept connection the peer had closed: once more, anew
                raise self._unavailable(exc) from exc
            except (OSError, TimeoutError) as exc:
                conn.close()
                raise self._unavailable(exc) from exc
            except (Malformed, asyncio.LimitOverrunError, ValueError) as exc:
                conn.close()
                raise Invalid(f"peer at {self.endpoint} sent a malformed HTTP answer: "
                              f"{exc}") from None
            except BaseException:
                conn.close()
                raise
            if keep and len(self._idle) < MAX_IDLE:
                conn.used = True
                self._idle.append(conn)
            else:
                conn.close()
            return answer

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    def _unavailable(self, exc: BaseException) -> Unavailable:
        return Unavailable(f"peer at {self.endpoint} unreachable: {type(exc).__name__}")

    async def _connection(self) -> _Conn:
        while self._idle:
            conn = self._idle.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                return conn
            conn.close()
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(
                    *self.connect_to, limit=HEAD_LIMIT,
                    ssl=_TLS if self.tls else None,
                    server_hostname=self.server_name if self.tls else None)
        except (OSError, TimeoutError) as exc:
            raise self._unavailable(exc) from exc
        return _Conn(reader, writer)

    @staticmethod
    async def _exchange(conn: _Conn, head: bytes, body: bytes, cap: int
                        ) -> tuple[Answer, bool]:
        conn.writer.write(head)
        conn.writer.write(body)
        await conn.writer.drain()
        status, headers = _parse_head(await conn.reader.readuntil(b"\r\n\r\n"))
        keep = headers.get("connection", "").lower() != "close"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            data = await _read_chunked(conn.reader, cap)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if length > cap or length < 0:
                raise Malformed(f"answer of {length} bytes, over {cap}")
            data = await conn.reader.readexactly(length)
        else:  # delimited by the end of the connection
            data = await conn.reader.read(cap + 1)
            while len(data) <= cap and (more := await conn.reader.read(cap + 1 - len(data))):
                data += more
            if len(data) > cap:
                raise Malformed(f"answer over {cap} bytes")
            keep = False
        return Answer(status, data), keep


def _parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
        raise Malformed("no HTTP/1.x status line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, colon, value = line.partition(":")
            if not colon:
                raise Malformed("header line without a colon")
            headers[name.strip().lower()] = value.strip()
    if version == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
        headers["connection"] = "close"
    return int(rest[:3]), headers


async def _read_chunked(reader: asyncio.StreamReader, cap: int) -> bytes:
    out = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            line = await reader.readuntil(b"\r\n")
            while line != b"\r\n":  # trailer fields, skipped (each bounded by the reader)
                line = await reader.readuntil(b"\r\n")
            return bytes(out)
        if len(out) + size > cap:
            raise Malformed(f"answer over {cap} bytes")
        out += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise Malformed("chunk not followed by CRLF")
