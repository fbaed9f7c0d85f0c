"""Large payloads: libsodium secretstream (XChaCha20-Poly1305) in framed chunks.

A streamed answer is a sequence of frames, each ``length (4 bytes, big
endian) | bytes``. The first frame is the signed ack envelope; its encrypted
payload carries the stream's fresh key and secretstream header. Every further
frame is one secretstream message: its MAC authenticates it and its position,
and the last one carries ``TAG_FINAL``, so reordering, tampering and
truncation are all detected by the receiver.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

from nacl import bindings as sodium
from nacl._sodium import ffi, lib  # PyNaCl's own cffi module: see Encryptor.seal_frame
from nacl.exceptions import CryptoError

from core.errors import Invalid

ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
CHUNK = 1024 * 1024  # plaintext per frame: big enough that per-frame costs vanish
MAX_FRAME = 4 * 1024 * 1024 + ABYTES
INLINE = 1024 * 1024 + ABYTES  # frames up to this are sealed/opened on the loop (< 1 ms)
_LEN = struct.Struct(">I")


KEY_LEN = sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES
HEADER_LEN = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES


def new_key() -> bytes:
    return bytes(sodium.crypto_secretstream_xchacha20poly1305_keygen())


def frame(data: bytes) -> bytes:
    return _LEN.pack(len(data)) + data


def split_frames(data: bytes, max_count: int) -> list[bytes]:
    """All frames of a complete buffer (a batch of envelopes); ``Invalid`` if it is
    not exactly whole frames or holds more than ``max_count``."""
    out: list[bytes] = []
    view, pos = memoryview(data), 0
    while pos < len(data):
        if len(out) == max_count:
            raise Invalid(f"more than {max_count} frames")
        if pos + 4 > len(data):
            raise Invalid("truncated frame header")
        (size,) = _LEN.unpack_from(data, pos)
        if pos + 4 + size > len(data):
            raise Invalid("truncated frame")
        out.append(bytes(view[pos + 4:pos + 4 + size]))
        pos += 4 + size
    return out


class Encryptor:
    def __init__(self, key: bytes) -> None:
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        self.header = bytes(sodium.crypto_secretstream_xchacha20poly1305_init_push(
            self._state, key))

    def push(self, chunk: bytes, final: bool = False) -> bytes:
        return bytes(sodium.crypto_secretstream_xchacha20poly1305_push(
            self._state, chunk, None, TAG_FINAL if final else TAG_MESSAGE))

    def seal_frame(self, chunk: bytes | memoryview, final: bool = False) -> memoryview:
        """``frame(push(chunk))`` without its three copies of the chunk.

        PyNaCl's ``push`` wants ``bytes`` (a copy of a slice), returns a copy of
        its output buffer, and framing copies again: a fifth of a serving
        twin's CPU on a large ``content.get``. Here libsodium reads the chunk
        where it lies and writes the ciphertext straight after the frame's
        length, through the same cffi module PyNaCl's bindings use.
        """
        size = len(chunk) + ABYTES
        out = bytearray(4 + size)
        _LEN.pack_into(out, 0, size)
        dst = ffi.from_buffer("unsigned char[]", out, require_writable=True)
        src = ffi.from_buffer("unsigned char[]", chunk)
        rc = lib.crypto_secretstream_xchacha20poly1305_push(
            self._state.statebuf, dst + 4, ffi.NULL, src, len(chunk), ffi.NULL, 0,
            TAG_FINAL if final else TAG_MESSAGE)
        if rc != 0:
            raise RuntimeError("secretstream push failed")
        return memoryview(out)


def sealed_size(length: int) -> int:
    """Bytes that ``seal_frames`` makes of ``length`` plaintext bytes (frames included)."""
    chunks = max(1, -(-length // CHUNK))
    return length + chunks * (4 + ABYTES)


async def seal_frames(source: AsyncIterator[bytes], enc: Encryptor,
                      length: int) -> AsyncIterator[memoryview]:
    """Cut ``source`` (exactly ``length`` bytes) into CHUNK-sized secretstream frames,
    the last one FINAL; ``sealed_size(length)`` bytes in all.

    Chunks are cut at fixed offsets, so the answer's size is known before the
    first byte; a chunk that lies within one piece of the source is sealed in
    place, one that spans pieces is joined first. A source that yields more or
    less than ``length`` is an error (the client sees a cut stream).
    """
    left = length
    parts: list[memoryview] = []
    have = 0
    if length == 0:
        yield await _sealed(enc, b"", True)
    async for data in source:
        view = memoryview(data)
        if len(view) > left:
            raise Invalid(f"content stream yielded more than its {length} bytes")
        left -= len(view)
        while view:
            want = min(CHUNK, have + left + len(view)) - have
            take, view = view[:want], view[want:]
            parts.append(take)
            have += len(take)
            if have == min(CHUNK, have + left + len(view)):
                chunk = parts[0] if len(parts) == 1 else memoryview(b"".join(parts))
                parts, have = [], 0
                yield await _sealed(enc, chunk, left == 0 and not view)
    if left or parts:
        raise Invalid(f"content stream ended {left + have} bytes short of {length}")


async def _sealed(enc: Encryptor, chunk: bytes | memoryview, final: bool) -> memoryview:
    if len(chunk) + ABYTES <= INLINE:
        return enc.seal_frame(chunk, final)
    return await asyncio.to_thread(enc.seal_frame, chunk, final)


class Decryptor:
    def __init__(self, key: bytes, header: bytes) -> None:
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        try:
            sodium.crypto_secretstream_xchacha20poly1305_init_pull(self._state, header, key)
        except (CryptoError, ValueError, TypeError) as exc:
            raise Invalid("peer stream: bad stream header") from exc
        self.finished = False

    def pull(self, sealed: bytes) -> bytes:
        if self.finished:
            raise Invalid("peer stream: data after the final chunk")
        try:
            plain, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(
                self._state, sealed, None)
        except (CryptoError, ValueError, TypeError) as exc:
            raise Invalid("peer stream: a chunk failed authentication") from exc
        self.finished = tag == TAG_FINAL
        return bytes(plain)


class FrameReader:
    """Cut a byte stream into frames, holding at most one frame in memory."""

    def __init__(self, source: AsyncIterator[bytes], max_frame: int = MAX_FRAME) -> None:
        self._source = source
        self._buf = bytearray()
        self._max = max_frame

    async def next(self) -> bytes | None:
        """The next frame; None at a clean end of stream."""
        while True:
            if len(self._buf) >= 4:
                (size,) = _LEN.unpack_from(self._buf)
                if size > self._max:
                    raise Invalid(f"peer stream: frame of {size} bytes is over the limit")
                if len(self._buf) >= 4 + size:
                    with memoryview(self._buf) as view:
                        data = bytes(view[4:4 + size])
                    del self._buf[:4 + size]
                    return data
            try:
                chunk = await anext(self._source)
            except StopAsyncIteration:
                if self._buf:
                    raise Invalid("peer stream: truncated frame") from None
                return None
            self._buf += chunk
