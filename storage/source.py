"""A put's source (bytes, a binary file or an async iterable of bytes) cut into segments."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import BinaryIO, TypeVar, cast

from storage.erasure import Buffer

Source = bytes | bytearray | memoryview | AsyncIterable[bytes] | BinaryIO
T = TypeVar("T")


@dataclass(frozen=True)
class Filled:
    """A segment's plaintext, read into the first ``length`` bytes of an encode
    buffer (``storage.codec.encode_filled`` encrypts it where it lies)."""

    buf: bytearray
    length: int

    def __len__(self) -> int:
        return self.length


Segment = Buffer | Filled
# an encode buffer to read the next segment of a stream into (the store's pool)
Take = Callable[[], Awaitable[bytearray]]


async def chunks(source: Source, size: int, io: Executor, take: Take
                 ) -> AsyncIterator[Segment]:
    """Non-empty pieces of exactly ``size`` bytes (the last may be shorter).

    Pieces of ``bytes`` are views (immutable: no copy needed); pieces of a
    bytearray or memoryview are copied, since the caller could change them
    while the put runs; an async iterable is read into buffers from ``take``
    (``_filled``)."""
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source)
        immutable = isinstance(source, bytes)
        for pos in range(0, len(view), size):
            part = view[pos:pos + size]
            yield part if immutable else bytes(part)
        return
    if hasattr(source, "read"):
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.run_in_executor(io, _read_exactly, cast(BinaryIO, source), size)
            if data:
                yield data
            if len(data) < size:
                return
    if isinstance(source, AsyncIterable):
        async for segment in _filled(source, size, take):
            yield segment
        return
    raise TypeError(f"cannot store a {type(source).__name__}: give bytes, a binary file "
                    f"or an async iterable of bytes")


def _read_exactly(f: BinaryIO, size: int) -> bytes:
    parts: list[bytes] = []
    left = size
    while left > 0:
        data = f.read(left)
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


async def _filled(source: AsyncIterable[bytes], size: int, take: Take
                  ) -> AsyncIterator[Filled]:
    """The stream's bytes copied piece by piece into encode buffers, ``size`` a segment.

    Why: joining a segment's pieces made a plaintext copy that lived beside the
    encode buffer until it was encrypted (4 MiB more per segment in flight,
    and the pieces too until the join), and one more pass over the bytes. Here
    each piece is copied once, to where its ciphertext will be; a stream's
    lookahead (the segment being read and the one ``with_last`` holds) is two
    buffers, whatever the file's size.
    """
    buf: bytearray | None = None
    have = 0
    async for piece in source:
        if not isinstance(piece, bytes | bytearray | memoryview):
            raise TypeError(f"stream yielded {type(piece).__name__}, expected bytes")
        view = memoryview(piece)
        pos = 0
        while pos < len(view):
            if buf is None:
                buf = await take()
            n = min(size - have, len(view) - pos)
            buf[have:have + n] = view[pos:pos + n]
            have += n
            pos += n
            if have == size:
                yield Filled(buf, have)
                buf, have = None, 0
    if buf is not None and have:
        yield Filled(buf, have)


async def with_last(chunks: AsyncIterator[T]) -> AsyncIterator[tuple[T, bool]]:
    """Each chunk with a flag telling whether it is the last (bound into the segment AD)."""
    prev: T | None = None
    async for chunk in chunks:
        if prev is not None:
            yield prev, False
        prev = chunk
    if prev is not None:
        yield prev, True
