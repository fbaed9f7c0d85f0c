"""ASGI fast path for the other hot request: a plain PUT of a file of the owner's tree.

Why: through a2wsgi every block of a PUT body crosses threads twice (uvicorn's
loop -> a2wsgi's worker thread -> wsgidav -> ``streams.UploadSink`` -> back to
the loop through a queue), with a copy and a ``run_coroutine_threadsafe`` per
block. Measured in ``bench/webdav.py`` that cost most of the gap between the
twin's PUT and plain wsgidav's (the dispersed store alone puts about twice
as fast as the twin's PUT did). Here the body chunks uvicorn receives go
straight from ``receive`` into ``FileTree.write`` on the loop; uvicorn stops
reading the socket while its small buffer is unread, so memory stays at the
store's segment pipeline.

Only the unambiguous case is taken; everything else falls through to wsgidav
unchanged, so its semantics stay the reference (litmus runs against it):

- PUT with valid Basic credentials of the owner's login (the same throttled check as
  ``auth``; missing ones fall through and wsgidav answers 401, wrong ones get
  the same 401 here, so they are checked once);
- no ``If``, If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since
  (wsgidav evaluates those and lock tokens), no Content-Range (wsgidav: 400),
  no Content-Encoding (wsgidav: 501), a numeric Content-Length if any;
- the path is canonical, in the owner's tree (not ``/shared/``), names no
  folder (wsgidav: 405) and its parent is an existing folder (wsgidav: 409);
- no lock forbids the write. This is asked of wsgidav's own lock manager,
  exactly as its ``do_PUT`` does (the parent, depth 0, for a new file; then a
  write transaction on the file, which also checks depth-infinity locks of
  every ancestor) and with no token, since requests carrying ``If`` are not
  taken. The write transaction is held until the new version is switched in,
  so a LOCK cannot slip in while the body streams (wsgidav's TOCTOU guard).
  The lock manager blocks on ``twin.db``, so it runs in a worker thread;
  but when no lock exists and nothing waits, ``writemark`` takes and ends the
  transaction on the loop (the checks have nothing to find).

The answer is wsgidav's: 201 (new file, with its HTML status page) or 204
(replaced), with the new ETag (RFC 4918 section 9.7, RFC 9110 section 9.3.4).
A body that ends early (client gone, fewer bytes than Content-Length) makes
``FileTree.write`` fail before its switch, so the previous version stays.
PUTs left to wsgidav get the same guarantee from ``_strict`` (a2wsgi alone
reports a client gone as a normal end of body).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from wsgidav import util
from wsgidav.dav_error import DAVError

from core.errors import TwinError
from core.files import join
from protocols.webdav.fastget import (
    LoginRefused,
    _error,
    basic_login_with,
    tree_parts,
    unauthorized,
)
from protocols.webdav.writemark import WriteMark, try_mark

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from core.service import Service

log = logging.getLogger("twin.webdav")
# Any of these asks for semantics wsgidav implements: leave the request to it.
DEFER = frozenset({b"if", b"if-match", b"if-none-match", b"if-modified-since",
                   b"if-unmodified-since", b"content-range", b"content-encoding"})
# uvicorn hands the body over in socket-read pieces (64 KiB); gathering them
# first would cost a copy and buy nothing, since the store's chunker already
# appends every piece into one segment buffer.


class BodyEnded(Exception):
    """The request body stopped before its end (client gone or short body)."""


@dataclass(frozen=True)
class Plan:
    path: str
    login: str
    length: int | None
    content_type: str | None
    new: bool


class FastPut:
    """Wraps the wsgidav ASGI app; ``lock_manager`` is that app's ``LockManager``."""

    def __init__(self, app: ASGIApp, service: Service, shared: str, lock_manager: Any) -> None:
        self.app, self.service, self.shared = app, service, shared
        self.lock_manager = lock_manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "PUT":
            try:
                plan = await self._eligible(scope)
            except LoginRefused:
                await unauthorized(send)
                return
            if plan is not None:
                transaction = await self._begin(plan)
                if transaction is not None:
                    ending = _Ending(transaction, send)
                    try:
                        await self._put(plan, receive, ending.send)
                    finally:
                        await ending.end()
                    return
            receive = _strict(receive)
        await self.app(scope, receive, send)

    async def _eligible(self, scope: Scope) -> Plan | None:
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in DEFER:
                return None
            headers[name] = value
        raw_length = headers.get(b"content-length")
        if raw_length is not None and not raw_length.isdigit():
            return None
        parts = tree_parts(scope, self.shared)
        if parts is None:
            return None
        path = join(parts)
        root: str = scope.get("root_path", "")
        if scope["path"] != root + path:  # "/a//b", "/a/b/": wsgidav's own path handling
            return None
        try:
            read_target = self.service.files.put_target_read(path)
        except TwinError:
            return None
        # the target is read with the login's hashes, in one database call; it is
        # used only once the credentials are good and the owner's
        login, target = await basic_login_with(
            self.service, headers.get(b"authorization", b""), scope, read_target)
        if login is None or not self.service.users.is_owner(login) or target is None:
            return None  # another login: wsgidav, behind roles.RoleGate (#15.8)
        if (target.entry is not None and target.entry.is_dir) or not target.parent_is_dir:
            return None
        ctype = headers.get(b"content-type")
        return Plan(path, login, int(raw_length) if raw_length is not None else None,
                    ctype.decode("latin-1") if ctype is not None else None,
                    target.entry is None)

    async def _begin(self, plan: Plan) -> AbstractContextManager[Any] | None:
        """wsgidav's lock checks for this PUT; None (fall through) if a lock forbids it."""
        if self.lock_manager is None:
            return None
        mark = try_mark(self.lock_manager, quote(plan.path))
        if mark is not None:  # no lock anywhere, nothing waited: on the loop
            return mark
        begun = asyncio.ensure_future(asyncio.to_thread(self._begin_sync, plan))
        try:
            return await asyncio.shield(begun)
        except asyncio.CancelledError:
            # the thread runs on: end its transaction when it has one, or LOCKs
            # on this path would be refused for good
            begun.add_done_callback(_end_later)
            raise

    def _begin_sync(self, plan: Plan) -> AbstractContextManager[Any] | None:
        # the ref URLs wsgidav keys locks by (DAVResource.get_ref_url, share path "")
        url = quote(plan.path)
        try:
            if plan.new:
                parent = util.get_uri_parent(plan.path)
                self.lock_manager.check_write_permission(
                    url=quote(parent if parent.endswith("/") else parent + "/"),
                    depth="0", token_list=[], principal=plan.login)
            transaction: AbstractContextManager[Any] = self.lock_manager.write_transaction(
                url=url, token_list=[], principal=plan.login)
            transaction.__enter__()
        except DAVError:
            return None  # wsgidav checks again and answers 423 with its error body
        return transaction

    async def _put(self, plan: Plan, receive: Receive, send: Send) -> None:
        try:
            written = await self.service.files.put_file(
                plan.path, _body(receive, plan.length), content_type=plan.content_type,
                size_hint=plan.length or None)
        except BodyEnded as exc:
            log.info("PUT of %s stopped: %s; the previous version stays", plan.path, exc)
            body = f"{exc}\n".encode()
            await _answer(send, 400, [(b"content-type", b"text/plain"),
                                      (b"content-length", str(len(body)).encode())], body)
            return
        except TwinError as exc:
            log.info("PUT of %s refused: %s", plan.path, exc)
            await _error(send, exc)
            return
        etag = (b"etag", f'"{written.entry.etag}"'.encode())
        # 201 only for the PUT whose switch made the file: of concurrent PUTs of a
        # new name exactly one (RFC 9110 section 9.3.4); the others replaced it: 204
        if written.created:  # wsgidav's send_status_response, header for header
            ctype, page = DAVError(201).get_response_page()  # it carries the time
            await _answer(send, 201, [(b"content-type", ctype.encode()),
                                      (b"content-length", str(len(page)).encode()), etag], page)
        else:
            await _answer(send, 204, [(b"content-length", b"0"), etag], b"")


class _Ending:
    """Ends the lock manager's write transaction before the answer goes out.

    Ended after the answer, a client that LOCKs the file as soon as its PUT is
    answered could find the transaction still open and get 423 (seen with
    uvloop, whose answers go out sooner)."""

    def __init__(self, transaction: AbstractContextManager[Any], send: Send) -> None:
        self.transaction, self._send, self._ended = transaction, send, False

    async def end(self) -> None:
        if not self._ended:
            self._ended = True
            if isinstance(self.transaction, WriteMark) and self.transaction.end_now():
                return
            await asyncio.to_thread(self.transaction.__exit__, None, None, None)

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            await self.end()  # the write is committed by now
        await self._send(message)


def _strict(receive: Receive) -> Receive:
    """``receive`` for a PUT left to wsgidav: a client gone raises instead of ending the body.

    a2wsgi turns ``http.disconnect`` into end-of-input, so wsgidav would take a
    broken upload for a complete one and replace the file with its first part;
    raising makes wsgidav's ``do_PUT`` call ``end_write(with_errors=True)``.
    """
    async def strict() -> Message:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BodyEnded("client gone during the PUT body")
        return message
    return strict


def _end_later(begun: asyncio.Future[AbstractContextManager[Any] | None]) -> None:
    if not begun.cancelled() and begun.exception() is None:
        transaction = begun.result()
        if transaction is not None:
            asyncio.get_running_loop().run_in_executor(
                None, transaction.__exit__, None, None, None)


async def _body(receive: Receive, length: int | None) -> AsyncIterator[bytes]:
    """The request body as uvicorn delivers it; raises unless it arrives whole."""
    got = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise BodyEnded(f"client gone after {got} bytes")
        chunk: bytes = message.get("body", b"")
        if chunk:
            got += len(chunk)
            if length is not None and got > length:
                raise BodyEnded(f"body longer than Content-Length {length}")
            yield chunk
        if not message.get("more_body", False):
            break
    if length is not None and got != length:
        raise BodyEnded(f"body of {got} bytes, Content-Length said {length}")


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]],
                  body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
