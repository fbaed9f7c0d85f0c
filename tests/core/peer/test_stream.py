"""secretstream frames: round trip, truncation, tampering, reordering, frame limits."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from core.errors import Invalid
from core.peer import stream
from core.peer.outbox import backoff


def sealed_chunks(parts: list[bytes]) -> tuple[bytes, bytes, list[bytes]]:
    key = stream.new_key()
    enc = stream.Encryptor(key)
    out = [enc.push(p, final=i == len(parts) - 1) for i, p in enumerate(parts)]
    return key, enc.header, out


def test_round_trip_ends_with_final() -> None:
    key, header, chunks = sealed_chunks([b"a" * 10, b"b" * 5, b""])
    dec = stream.Decryptor(key, header)
    assert b"".join(dec.pull(c) for c in chunks) == b"a" * 10 + b"b" * 5
    assert dec.finished
    with pytest.raises(Invalid):
        dec.pull(chunks[0])


def test_truncation_is_visible() -> None:
    key, header, chunks = sealed_chunks([b"x", b"y", b"z"])
    dec = stream.Decryptor(key, header)
    dec.pull(chunks[0])
    dec.pull(chunks[1])
    assert not dec.finished  # the reader knows the final chunk is missing


@pytest.mark.parametrize("attack", ["flip", "swap", "wrong_key"])
def test_tampering_fails_authentication(attack: str) -> None:
    key, header, chunks = sealed_chunks([b"x" * 100, b"y" * 100])
    if attack == "flip":
        chunks[0] = bytes([chunks[0][0] ^ 1]) + chunks[0][1:]
    elif attack == "swap":
        chunks.reverse()
    else:
        key = stream.new_key()
    dec = stream.Decryptor(key, header)
    with pytest.raises(Invalid):
        dec.pull(chunks[0])


async def _source(parts: list[bytes]) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


async def test_frame_reader_reassembles_and_limits() -> None:
    data = stream.frame(b"hello") + stream.frame(b"") + stream.frame(b"x" * 1000)
    reader = stream.FrameReader(_source([data[i:i + 7] for i in range(0, len(data), 7)]))
    assert [await reader.next() for _ in range(4)] == [b"hello", b"", b"x" * 1000, None]
    with pytest.raises(Invalid):
        await stream.FrameReader(_source([stream.frame(b"x" * 100)]), max_frame=10).next()
    with pytest.raises(Invalid):
        await stream.FrameReader(_source([stream.frame(b"abc")[:-1]])).next()


def test_backoff_repeats_the_last_step() -> None:
    assert [backoff([1, 5, 30], n) for n in (1, 2, 3, 4, 10)] == [1, 5, 30, 30, 30]
