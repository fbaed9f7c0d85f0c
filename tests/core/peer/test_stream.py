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


async def _pieces(parts: list[bytes]) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


@pytest.mark.parametrize("sizes", [[], [0], [1], [stream.CHUNK], [4 * stream.CHUNK],
                                   [stream.CHUNK - 1, 2, stream.CHUNK * 2 + 5],
                                   [7] * 1000, [3 * stream.CHUNK + 11, 0, 9]])
async def test_seal_frames_cuts_fixed_chunks_of_the_announced_size(sizes: list[int]) -> None:
    """Whatever piece sizes the source yields: CHUNK-sized frames, the last FINAL, and
    exactly sealed_size(length) bytes (the Content-Length of a content.get answer)."""
    import os

    parts = [os.urandom(n) for n in sizes]
    data, key = b"".join(parts), stream.new_key()
    enc = stream.Encryptor(key)
    wire = b"".join([bytes(f) async for f in stream.seal_frames(_pieces(parts), enc, len(data))])
    assert len(wire) == stream.sealed_size(len(data))
    frames = stream.split_frames(wire, 10_000)
    assert all(len(f) == stream.CHUNK + stream.ABYTES for f in frames[:-1])
    dec = stream.Decryptor(key, enc.header)
    assert b"".join(dec.pull(f) for f in frames) == data and dec.finished


@pytest.mark.parametrize("announced", [99, 101])
async def test_seal_frames_refuses_a_source_of_another_length(announced: int) -> None:
    enc = stream.Encryptor(stream.new_key())
    with pytest.raises(Invalid, match=r"more than|short of"):
        async for _ in stream.seal_frames(_pieces([b"x" * 60, b"y" * 40]), enc, announced):
            pass
