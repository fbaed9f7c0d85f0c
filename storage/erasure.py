"""k-of-n erasure coding of one encrypted segment with zfec.

zfec is systematic: shares 0..k-1 are the ciphertext itself, cut in k equal
blocks (the last zero-padded), so reading them needs no decoding at all and
encoding only computes the n-k parity blocks. Encoders are cached per thread
because zfec objects are not meant to be shared between threads.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import zfec

MAX_N = 32
PARITY_CHUNK = 128 * 1024
_local = threading.local()

Buffer = bytes | memoryview


def check_kn(k: int, n: int) -> None:
    if not (isinstance(k, int) and isinstance(n, int) and 1 <= k <= n <= MAX_N):
        raise ValueError(f"need 1 <= k <= n <= {MAX_N}, got k={k} n={n}")


def block_size(cipher_len: int, k: int) -> int:
    return max(1, -(-cipher_len // k))


def _coder(kind: str, k: int, n: int) -> object:
    cache: dict[tuple[str, int, int], object] | None = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    coder = cache.get((kind, k, n))
    if coder is None:
        coder = zfec.Encoder(k, n) if kind == "e" else zfec.Decoder(k, n)
        cache[(kind, k, n)] = coder
    return coder


def encode(buf: bytearray | memoryview, k: int, n: int) -> list[memoryview]:
    """The n share payloads of one ciphertext, as views of ``buf``: nothing is
    allocated per segment.

    ``buf`` is n blocks of ``len(buf) // n`` bytes: the ciphertext zero-padded to
    k whole blocks (the primaries, as they are: zfec is systematic), then room
    for the n-k parity blocks, which are computed into it.

    Parity is computed ``PARITY_CHUNK`` bytes of each block at a time and copied
    in. Why: zfec returns every parity block as a new ``bytes``; a 1 MiB one was a
    fresh mmap (before ``store.tune_malloc``) that the kernel zero-filled and
    faulted in page by page, and that made zfec cost 1.5x its arithmetic (1.41
    against 0.92 ms CPU per MiB of segment at 4-of-6). Chunk-sized results come
    from malloc's reused heap and are still in cache when copied. Blocks of 128
    KiB (k inputs + n-k outputs ~ 768 KiB at 4-of-6) fit in a core's L2 cache;
    64 and 256 KiB measured the same, 512 KiB worse.
    """
    size = len(buf) // n
    if size * n != len(buf) or size == 0:
        raise ValueError(f"a buffer of {len(buf)} bytes is not {n} whole blocks")
    view = memoryview(buf)
    payloads = [view[i * size:(i + 1) * size] for i in range(n)]
    if n == k:
        return payloads
    coder = _coder("e", k, n)
    wanted = tuple(range(k, n))  # a tuple: zfec's fast path for desired block numbers
    for pos in range(0, size, PARITY_CHUNK):
        end = min(pos + PARITY_CHUNK, size)
        parity = coder.encode([p[pos:end] for p in payloads[:k]], wanted)  # type: ignore[attr-defined]
        for out, block in zip(payloads[k:], parity, strict=True):
            out[pos:end] = block
    return payloads


def primaries(shares: dict[int, Buffer], k: int, n: int) -> list[Buffer]:
    """The k primary blocks from any k shares (decoding only when a primary is missing)."""
    if all(i in shares for i in range(k)):
        return [shares[i] for i in range(k)]
    chosen = sorted(shares)[:k]
    decoded: Sequence[Buffer] = _coder("d", k, n).decode(  # type: ignore[attr-defined]
        [shares[i] for i in chosen], chosen
    )
    return list(decoded)


def rebuild(shares: dict[int, Buffer], k: int, n: int, wanted: Sequence[int]) -> list[Buffer]:
    """Recompute the payloads of ``wanted`` share numbers from any k shares."""
    blocks = primaries(shares, k, n)
    out: list[Buffer] = []
    parity_wanted = [i for i in wanted if i >= k]
    parity = (
        dict(zip(parity_wanted, _coder("e", k, n).encode(blocks, parity_wanted), strict=True))  # type: ignore[attr-defined]
        if parity_wanted
        else {}
    )
    for i in wanted:
        out.append(blocks[i] if i < k else parity[i])
    return out


def join(shares: dict[int, Buffer], k: int, n: int, cipher_len: int) -> bytes:
    """The ciphertext back from any k shares."""
    blocks = primaries(shares, k, n)
    size = block_size(cipher_len, k)
    parts: list[Buffer] = []
    for i, block in enumerate(blocks):
        keep = min(size, cipher_len - i * size)
        if keep <= 0:
            break
        parts.append(block if keep == size else memoryview(block)[:keep])
    return b"".join(parts)
