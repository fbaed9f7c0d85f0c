"""The bounded CBOR decoder: plain values decode as cbor2 decodes them; tags,
indefinite lengths, deep nesting, too many items and lying lengths are refused
before cbor2 sees a byte."""

from __future__ import annotations

import time
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phonebook import cbor
from tests.hostile_peer import shared_ref_bomb

plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.floats()
    | st.binary(max_size=40) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=8) | st.integers(0, 100), inner, max_size=5),
    max_leaves=30)


@settings(max_examples=150, deadline=None)
@given(plain)
def test_plain_values_decode_as_cbor2_does(value: Any) -> None:
    data = cbor2.dumps(value, canonical=True)
    assert cbor2.dumps(cbor.loads(data), canonical=True) == data


@pytest.mark.parametrize("data", [
    b"\xd8\x1c\x82\x00\x00",            # 28: shareable
    b"\x82\xd8\x1c\x80\xd8\x1d\x00",    # 29: shared reference
    b"\xd9\x01\x00\x81\x61a",           # 256: string-ref namespace
    b"\xd8\x19\x00",                    # 25: string reference
    b"\xc1\x00",                        # 1: epoch datetime
    b"\xc2\x41\x01",                    # 2: bignum
    b"\xd8\x18\x41\x00",                # 24: embedded CBOR
    b"\xdb" + bytes(8) + b"\x00",       # a tag with an 8-byte number
], ids=["shareable", "sharedref", "stringref-ns", "stringref", "datetime", "bignum",
        "embedded", "tag0-long"])
def test_every_tag_is_refused(data: bytes) -> None:
    with pytest.raises(cbor.CBORRefused, match="tag"):
        cbor.loads(data)


@pytest.mark.parametrize("data", [
    b"\x9f\x00\xff",          # indefinite array
    b"\x5f\x41\x00\xff",      # indefinite byte string
    b"\xbf\x00\x00\xff",      # indefinite map
    b"\xf7",                  # undefined
    b"\xf0",                  # simple 16
    b"\xf8\x20",              # simple 32 (one-byte form)
    b"\x1c",                  # reserved additional info
    b"\x00\x00",              # trailing bytes
    b"",                      # nothing
    b"\x82\x00",              # ends early
    b"\x5a\xff\xff\xff\xff",  # a 4 GiB byte string in five bytes
    b"\x9b" + b"\xff" * 8,    # an array of 2^64 - 1 items
    b"\xbb" + b"\x7f" * 8,    # a map of 2^63 pairs
], ids=["indef-array", "indef-bytes", "indef-map", "undefined", "simple16", "simple32",
        "reserved", "trailing", "empty", "short", "huge-string", "huge-array", "huge-map"])
def test_other_shapes_are_refused(data: bytes) -> None:
    with pytest.raises(cbor.CBORRefused):
        cbor.loads(data)


def test_depth_and_items_are_bounded() -> None:
    limits = cbor.Limits(max_depth=4, max_items=10)
    assert cbor.loads(b"\x81\x81\x81\x81\x00", limits) == [[[[0]]]]
    with pytest.raises(cbor.CBORRefused, match="deeper"):
        cbor.loads(b"\x81\x81\x81\x81\x81\x00", limits)
    with pytest.raises(cbor.CBORRefused, match="items"):
        cbor.loads(b"\x8a" + bytes(10), limits)
    deep = b"\x81" * 100_000 + b"\x00"  # would exhaust cbor2's recursion
    with pytest.raises(cbor.CBORRefused, match="deeper"):
        cbor.loads(deep)


def test_invalid_utf8_is_a_refusal_not_a_crash() -> None:
    with pytest.raises(cbor.CBORRefused):
        cbor.loads(b"\x62\xff\xfe")


def test_the_shared_reference_bomb_is_refused_at_once() -> None:
    bomb = shared_ref_bomb(30)  # 2^30 items once re-encoded without sharing
    start = time.perf_counter()
    with pytest.raises(cbor.CBORRefused, match="tag 28"):
        cbor.loads(bomb)
    assert time.perf_counter() - start < 0.01
