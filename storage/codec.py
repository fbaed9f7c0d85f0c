"""One segment to n shares and back: encrypt, erasure-code, frame.

Pure functions over bytes, so the store can run them inline for small
segments and in its CPU thread pool for large ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage import crypto, erasure
from storage.erasure import Buffer
from storage.share import HEADER_BYTES, ShareId, check, make_header


@dataclass(frozen=True)
class SegmentKey:
    """Everything that identifies one segment of one object cryptographically."""

    key: bytes
    prefix: bytes
    object_id: bytes
    segment: int
    last: bool
    k: int
    n: int

    def share_id(self, index: int, cipher_len: int) -> ShareId:
        return ShareId(self.object_id, self.segment, index, self.k, self.n, cipher_len)


@dataclass
class EncodedSegment:
    headers: list[bytes]
    payloads: list[Buffer]

    @property
    def hashes(self) -> list[bytes]:
        return [h[HEADER_BYTES - 32:] for h in self.headers]


def encode_segment(sk: SegmentKey, plain: Buffer, buf: bytearray | None = None
                   ) -> EncodedSegment:
    """The n framed shares of one segment, with no copy of the ciphertext: it is
    encrypted straight into a buffer of n whole blocks, whose first k become the
    primary payloads as views, and zfec computes the parity blocks into the rest.

    ``buf``, if given, must be exactly ``segment_buffer_size(len(plain), k, n)``
    bytes; it is reused (the store pools them). A fresh multi-MiB bytearray is a
    fresh mmap: zeroing and faulting it in cost as much CPU as the encryption
    and the hashes together, so a reused one only has its padding zeroed (the
    parity blocks are overwritten whole)."""
    clen = cipher_len(len(plain))
    total = segment_buffer_size(len(plain), sk.k, sk.n)
    if buf is None:
        buf = bytearray(total)
    elif len(buf) != total:
        raise ValueError(f"segment buffer of {len(buf)} bytes, need {total}")
    view = memoryview(buf)
    crypto.encrypt_segment_into(sk.key, sk.prefix, sk.object_id, sk.segment, sk.last, plain,
                                view[:clen])
    return _coded(sk, view, clen)


def encode_filled(sk: SegmentKey, buf: bytearray, plain_len: int) -> EncodedSegment:
    """``encode_segment`` of a plaintext already in ``buf[:plain_len]`` (a stream
    read into a pooled buffer: ``storage.source.Filled``), encrypted in place.

    ``buf`` is at least ``segment_buffer_size(plain_len, k, n)`` bytes (a pooled
    buffer of a full segment holds the shorter last one too); the shares are
    views of its first that many bytes."""
    clen = cipher_len(plain_len)
    total = segment_buffer_size(plain_len, sk.k, sk.n)
    if len(buf) < total:
        raise ValueError(f"segment buffer of {len(buf)} bytes, need {total}")
    view = memoryview(buf)[:total]
    # OpenSSL encrypts in place when input and output are the same bytes
    crypto.encrypt_segment_into(sk.key, sk.prefix, sk.object_id, sk.segment, sk.last,
                                view[:plain_len], view[:clen])
    return _coded(sk, view, clen)


def _coded(sk: SegmentKey, view: memoryview, clen: int) -> EncodedSegment:
    """Parity and headers for ``view``: n blocks, the ciphertext in its first ``clen``
    bytes. The padding up to k whole blocks (under k bytes) is zeroed here, since a
    reused buffer holds stale bytes there."""
    size = len(view) // sk.n
    view[clen:size * sk.k] = bytes(size * sk.k - clen)
    payloads: list[Buffer] = list(erasure.encode(view, sk.k, sk.n))
    headers = [make_header(sk.share_id(i, clen), p) for i, p in enumerate(payloads)]
    return EncodedSegment(headers, payloads)


def segment_buffer_size(plain_len: int, k: int, n: int) -> int:
    """Bytes of the buffer ``encode_segment`` codes a segment into (n whole blocks)."""
    return erasure.block_size(cipher_len(plain_len), k) * n


def cipher_len(plain_len: int) -> int:
    return plain_len + crypto.TAG_BYTES


def check_share(sk: SegmentKey, plain_len: int, index: int, data: Buffer,
                expected_hash: bytes | None, full: bool = True) -> memoryview:
    return check(data, sk.share_id(index, cipher_len(plain_len)), expected_hash, full=full)


def decode_segment(sk: SegmentKey, plain_len: int, payloads: dict[int, Buffer]) -> bytes:
    """The plaintext of one segment from any k of its share payloads.

    ``payloads`` is emptied once the ciphertext is joined, so the shares are freed
    before the plaintext is allocated: a third less memory per segment being read."""
    cipher = erasure.join(payloads, sk.k, sk.n, cipher_len(plain_len))
    payloads.clear()
    return crypto.decrypt_segment(sk.key, sk.prefix, sk.object_id, sk.segment, sk.last, cipher)
