"""Large payloads: libsodium secretstream (XChaCha20-Poly1305) in framed chunks.

A streamed answer is a sequence of frames, each ``length (4 bytes, big
endian) | bytes``. The first frame is the signed ack envelope; its encrypted
payload carries the stream's fresh key and secretstream header. Every further
frame is one secretstream message: its MAC authenticates it and its position,
and the last one carries ``TAG_FINAL``, so reordering, tampering and
truncation are all detected by the receiver.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

from nacl import bindings as sodium
from nacl.exceptions import CryptoError

from core.errors import Invalid

ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
CHUNK = 512 * 1024
MAX_FRAME = 4 * 1024 * 1024 + ABYTES
_LEN = struct.Struct(">I")


def new_key() -> bytes:
    return bytes(sodium.crypto_secretstream_xchacha20poly1305_keygen())


def frame(data: bytes) -> bytes:
    return _LEN.pack(len(data)) + data


class Encryptor:
    def __init__(self, key: bytes) -> None:
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        self.header = bytes(sodium.crypto_secretstream_xchacha20poly1305_init_push(
            self._state, key))

    def push(self, chunk: bytes, final: bool = False) -> bytes:
        return bytes(sodium.crypto_secretstream_xchacha20poly1305_push(
            self._state, chunk, None, TAG_FINAL if final else TAG_MESSAGE))


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
                    data = bytes(self._buf[4:4 + size])
                    del self._buf[:4 + size]
                    return data
            try:
                chunk = await anext(self._source)
            except StopAsyncIteration:
                if self._buf:
                    raise Invalid("peer stream: truncated frame") from None
                return None
            self._buf += chunk
