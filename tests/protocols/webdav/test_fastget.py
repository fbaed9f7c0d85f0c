"""The GET fast path's body messages (``protocols.webdav.fastget``)."""

from __future__ import annotations

import os

from protocols.webdav.fastget import SEND_PIECE, pieces


def test_a_segment_goes_out_in_pieces_of_at_most_send_piece() -> None:
    segment = os.urandom(4 * 1024 * 1024 + 17)  # a store segment and then some
    out = list(pieces(segment))
    assert b"".join(out) == segment
    assert max(len(p) for p in out) == SEND_PIECE
    assert len(out) == -(-len(segment) // SEND_PIECE)
    assert all(isinstance(p, memoryview) and p.obj is segment for p in out)  # no copy


def test_a_small_chunk_goes_out_as_it_is_and_nothing_for_none() -> None:
    small = os.urandom(1000)
    assert [p is small for p in pieces(small)] == [True]  # no copy
    assert list(pieces(b"")) == []
