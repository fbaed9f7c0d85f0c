"""ASGI fast path for the one hot request: a plain GET of a whole file of the owner's tree.

Why: through a2wsgi every ``webdav.block_size`` block of a GET costs a thread
hop (wsgidav's thread -> the loop and back), a copy and wsgidav's per-block
Python, on top of the dispersed store's own work; measured in
``bench/webdav.py``, that overhead was most of the gap between the twin's GET
and plain wsgidav's. Here the segments the store yields go straight from
``FileTree.read`` to uvicorn's ``send`` on the loop: no thread, no copy, and
uvicorn's flow control (``send`` waits while the socket is backed up) keeps
memory to the store's read-ahead.

Only the unambiguous case is taken; everything else falls through to wsgidav
unchanged, so its semantics stay the reference (litmus passes against it):

- GET with valid Basic credentials of the twin (the same throttled check as
  ``auth``; missing ones fall through and wsgidav answers 401, wrong ones get
  the same 401 here, so they are checked once);
- no Range, If-Range, If-Match, If-None-Match, If-Modified-Since,
  If-Unmodified-Since or WebDAV ``If`` header, no body, no Depth other than 0;
- the path is a file of the owner's tree (not ``/shared/``, not a folder);
- the login is the owner's (any other goes through wsgidav and ``roles.RoleGate``).

The headers are the ones wsgidav's ``_send_resource`` sends (RFC 9110 section
9.3.1 GET; RFC 4918 section 9.4).
"""

from __future__ import annotations

import base64
import binascii
import logging
import sqlite3
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import TYPE_CHECKING, TypeVar, cast

from wsgidav import util

from core.errors import Invalid, TwinError
from core.files import FileEntry, join, split
from core.users import normalize_login
from protocols.webdav.auth import REALM, check_login_with
from protocols.webdav.bridge import status_of

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from core.service import Service

log = logging.getLogger("twin.webdav")
T = TypeVar("T")
# Any of these asks for semantics wsgidav implements: leave the request to it.
DEFER = frozenset({b"range", b"if-range", b"if-match", b"if-none-match", b"if-modified-since",
                   b"if-unmodified-since", b"if", b"transfer-encoding"})
MAX_AUTH_HEADER = 2048
SEND_PIECE = 256 * 1024  # bytes per body message of a GET (``pieces``)


class FastGet:
    def __init__(self, app: ASGIApp, service: Service, shared: str) -> None:
        self.app, self.service, self.shared = app, service, shared

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            try:
                entry = await self._eligible(scope)
            except LoginRefused:
                await unauthorized(send)
                return
            if entry is not None and await self._send(entry, send):
                return
        await self.app(scope, receive, send)

    async def _eligible(self, scope: Scope) -> FileEntry | None:
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in DEFER:
                return None
            headers[name] = value
        if headers.get(b"content-length", b"0") != b"0" \
                or headers.get(b"depth", b"0") != b"0":
            return None
        login = await basic_login(self.service, headers.get(b"authorization", b""), scope)
        if login is None or not self.service.users.is_owner(login):
            return None  # another login: wsgidav, behind roles.RoleGate (#15.8)
        parts = tree_parts(scope, self.shared)
        if parts is None:
            return None
        path = join(parts)
        try:
            entry = await self.service.files.exists(path)
        except TwinError:
            return None
        return entry if entry is not None and not entry.is_dir else None

    async def _send(self, entry: FileEntry, send: Send) -> bool:
        """Stream the file; False (nothing sent) if the first bytes already fail."""
        chunks = cast(AsyncGenerator[bytes, None],  # FileTree.read is an async generator
                      self.service.files.read(entry.path, entry=entry))
        first = b""
        try:
            if entry.size:
                first = await anext(chunks)
        except (TwinError, StopAsyncIteration) as exc:
            await chunks.aclose()
            if isinstance(exc, TwinError):
                log.info("fast GET of %s failed before its first byte: %s", entry.path, exc)
                return await _error(send, exc)
            return False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-length", str(entry.size).encode()),
                (b"last-modified", util.get_rfc1123_time(entry.mtime).encode()),
                (b"content-type", (entry.content_type or "application/octet-stream")
                 .encode("latin-1", "replace")),
                (b"etag", f'"{entry.etag}"'.encode()),
                (b"accept-ranges", b"bytes"),
            ]})
            for piece in pieces(first):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            async for chunk in chunks:
                for piece in pieces(chunk):
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await chunks.aclose()
        return True


def pieces(chunk: bytes) -> Iterator[bytes | memoryview]:
    """``chunk`` in pieces of at most ``SEND_PIECE`` bytes, for ``send`` one at a time.

    Why: uvicorn writes each body message to the TLS transport whole, and
    uvloop's TLS layer encrypts all of it into its outgoing buffer before the
    socket takes any, so a 4 MiB segment sent at once held its plaintext, its
    ciphertext in OpenSSL's buffer (which keeps that capacity) and a copy of it
    queued on the socket. In pieces, ``send`` waits for the transport to drain
    between them, so TLS holds about one piece at a time: 1 GiB PUT+GET peaked
    at +37.6 MiB over idle against +45-46 whole.

    The pieces are memoryviews of the segment, not bytes: uvicorn's httptools
    protocol (the twin's, ``core.http``) writes any bytes-like body as it is,
    and the segment under them is immutable. Copied to bytes, they cost the GET
    ~6 % more CPU (twins side by side, 8 alternating rounds).
    """
    if len(chunk) <= SEND_PIECE:
        if chunk:
            yield chunk
        return
    view = memoryview(chunk)
    for pos in range(0, len(chunk), SEND_PIECE):
        yield view[pos:pos + SEND_PIECE]


class LoginRefused(Exception):
    """Basic credentials were checked and are wrong: answer 401 here (``unauthorized``).

    Falling through to wsgidav made it check them again: two Argon2 runs and
    two throttle failures per refused request (#15.10).
    """


async def unauthorized(send: Send) -> None:
    """wsgidav's own 401 (``send_basic_auth_response``), challenge included."""
    body = b"Not authorized.\n"
    await send({"type": "http.response.start", "status": 401, "headers": [
        (b"www-authenticate", f'Basic realm="{REALM}"'.encode()),
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def basic_login(service: Service, header: bytes, scope: Scope) -> str | None:
    """The login of valid Basic credentials (wsgidav's check: ``auth.check_login``).

    None (no or unreadable credentials) means "let wsgidav answer": it sends
    the 401 and its challenge. Wrong credentials raise ``LoginRefused``.
    """
    login, _ = await basic_login_with(service, header, scope, None)
    return login


async def basic_login_with(service: Service, header: bytes, scope: Scope,
                           also: Callable[[sqlite3.Connection], T] | None
                           ) -> tuple[str | None, T | None]:
    """``basic_login``, with ``also(conn)`` read in the same database call as the
    login's password hashes (``Users.login_with``: one thread hop, not two)."""
    if header[:6].lower() != b"basic " or len(header) > MAX_AUTH_HEADER:
        return None, None
    try:
        login, sep, password = base64.b64decode(header[6:].strip(), validate=True) \
            .decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    client = scope.get("client") or ("?", 0)
    if not sep:
        return None, None
    ok, extra = await check_login_with(service, login, password, str(client[0]), also)
    if ok:
        return normalize_login(login), extra
    raise LoginRefused


def tree_parts(scope: Scope, shared: str) -> tuple[str, ...] | None:
    """The owner's-tree path a request targets, or None (``/shared/``, the root, invalid)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    try:
        parts = split(path)
    except Invalid:
        return None
    if not parts or parts[0] == shared:
        return None
    return parts


async def _error(send: Send, exc: TwinError) -> bool:
    status = status_of(exc)
    body = f"{exc}\n".encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})
    return True
