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


def encode(cipher: bytes | bytearray, k: int, n: int) -> list[Buffer]:
    """The n share payloads of one ciphertext, each ``block_size`` bytes.

    Given exactly k whole blocks (already zero-padded), the primaries are views
    of ``cipher`` and nothing is copied."""
    size = block_size(len(cipher), k)
    view = memoryview(cipher)
    blocks: list[Buffer] = []
    for i in range(k):
        block = view[i * size:(i + 1) * size]
        blocks.append(block if len(block) == size else bytes(block) + bytes(size - len(block)))
    if n == k:
        return blocks
    parity = _coder("e", k, n).encode(blocks, list(range(k, n)))  # type: ignore[attr-defined]
    return [*blocks, *parity]


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
