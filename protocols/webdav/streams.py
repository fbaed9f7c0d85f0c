"""File-likes that wsgidav reads from and writes to, backed by async streams.

Bytes cross between wsgidav's worker thread and the service loop through
bounded ``asyncio.Queue``s, so a 1 GiB PUT or GET holds a few blocks in
memory, never the file:

- ``UploadSink``: wsgidav ``write()``s request-body blocks; a task on the loop
  feeds them as an async iterator to ``FileTree.write`` (and so to
  ``store.put``). The thread blocks while the queue is full: back-pressure
  reaches uvicorn, which stops reading the socket. Plain PUTs of the tree
  skip it (``fastput``); conditional or lock-token PUTs come through here.
- ``DownloadReader``: a task on the loop pulls chunks from an async iterator
  (``FileTree.read`` or a peer's ``content_get``) a little ahead of wsgidav's
  ``read()`` calls, which slice them into ``webdav.block_size`` blocks.
  Plain whole-file GETs of the tree skip it (``fastget``); ranges, conditional
  GETs and ``/shared/`` files come through here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine
from typing import Any

from core.errors import Unavailable
from protocols.webdav.bridge import Bridge

UPLOAD_QUEUE = 8
# One chunk (a store segment, 4 MiB by default) waiting is enough: the store
# already decodes the next segments ahead, so a deeper queue only holds memory.
DOWNLOAD_QUEUE = 1
_END = object()


class UploadSink:
    def __init__(self, bridge: Bridge,
                 writer: Callable[[AsyncIterable[bytes]], Coroutine[Any, Any, Any]]) -> None:
        self._bridge = bridge
        self._queue: asyncio.Queue[Any] = asyncio.Queue(UPLOAD_QUEUE)
        self._task: asyncio.Task[Any] = bridge.call(self._spawn(writer))
        self.result: Any = None
        self._closed = False

    async def _spawn(self, writer: Callable[[AsyncIterable[bytes]], Coroutine[Any, Any, Any]]
                     ) -> asyncio.Task[Any]:
        return asyncio.create_task(writer(self._chunks()), name="webdav-put")

    async def _chunks(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def _feed(self, item: Any) -> None:
        put = asyncio.ensure_future(self._queue.put(item))
        await asyncio.wait({put, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
            self._task.result()  # the writer failed: raise its error here
            raise Unavailable("the upload stopped before its end")

    async def _finish(self) -> Any:
        return await self._task

    def write(self, data: bytes) -> None:
        if data:
            self._bridge.call(self._feed(bytes(data)))

    def close(self) -> None:
        """End of body: wait until the file is stored and switched (errors raise here)."""
        if self._closed:
            return
        self._closed = True
        self._bridge.call(self._feed(_END))
        self.result = self._bridge.call(self._finish())

    def abort(self) -> None:
        """Make the writer fail so the previous version of the file stays."""
        if self._closed:
            return
        self._closed = True
        self._bridge.loop.call_soon_threadsafe(self._task.cancel)


class DownloadReader:
    def __init__(self, bridge: Bridge, opener: Callable[[int, int | None], AsyncIterator[bytes]],
                 end_hint: Callable[[int], int | None] | None = None) -> None:
        self._bridge = bridge
        self._opener = opener
        self._end_hint = end_hint
        self._pos = 0
        self._queue: asyncio.Queue[Any] | None = None
        self._task: asyncio.Future[Any] | None = None
        self._buf = memoryview(b"")
        self._eof = False
        self._seeked = False  # wsgidav seeks only when it honours the Range header

    def seek(self, pos: int, whence: int = 0) -> int:
        if self._task is not None or whence != 0:
            raise OSError("only an absolute seek before the first read is supported")
        self._pos = pos
        self._seeked = True
        return pos

    def tell(self) -> int:
        return self._pos

    async def _pump(self, queue: asyncio.Queue[Any], start: int, end: int | None) -> None:
        chunks = self._opener(start, end)
        try:
            async for chunk in chunks:
                if chunk:
                    await queue.put(chunk)
            await queue.put(_END)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await queue.put(exc)
        finally:
            closer = getattr(chunks, "aclose", None)
            if closer is not None:
                await closer()

    async def _begin(self, start: int, end: int | None) -> None:
        self._queue = asyncio.Queue(DOWNLOAD_QUEUE)
        self._task = asyncio.ensure_future(self._pump(self._queue, start, end))

    async def _next(self) -> Any:
        assert self._queue is not None
        return await self._queue.get()

    def read(self, size: int = -1) -> bytes:
        if self._task is None:
            end = self._end_hint(self._pos) if self._end_hint and self._seeked else None
            self._bridge.call(self._begin(self._pos, end))
        out: list[bytes] = []
        want = size if size >= 0 else 1 << 62
        while want > 0:
            if not self._buf:
                if self._eof:
                    break
                item = self._bridge.call(self._next())
                if item is _END:
                    self._eof = True
                    break
                if isinstance(item, BaseException):
                    self._eof = True
                    if isinstance(item, Exception):
                        from core.errors import TwinError
                        from protocols.webdav.bridge import dav_error
                        if isinstance(item, TwinError):
                            raise dav_error(item) from item
                    raise item
                self._buf = memoryview(item)
            piece = self._buf[:want]
            self._buf = self._buf[len(piece):]
            out.append(bytes(piece))
            want -= len(piece)
            if size >= 0 and out:
                break
        data = b"".join(out)
        self._pos += len(data)
        return data

    def close(self) -> None:
        task = self._task
        if task is not None and not task.done():
            self._bridge.loop.call_soon_threadsafe(task.cancel)
        self._buf = memoryview(b"")
