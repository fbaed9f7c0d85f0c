"""Segment encryption is libsodium's XChaCha20-Poly1305, byte for byte."""

from __future__ import annotations

import os

import pytest
from nacl import bindings as nb

from storage import crypto

EDGES = [bytes(16), b"\xff" * 16, b"\x00\xff" * 8, b"\x80\x00\x00\x00" * 4,
         b"\x7f\xff\xff\xff" * 4, b"\x01\x00\x00\x00" * 4]


@pytest.mark.parametrize("prefix", [*EDGES, *(os.urandom(16) for _ in range(200))])
def test_segments_encrypt_exactly_as_libsodium_does(prefix: bytes) -> None:
    """The subkey arithmetic works on four 32-bit lanes at once: prefixes whose words
    are 0, all ones or at the sign bit are the ones where a borrow would leak across."""
    for key in (bytes(32), b"\xff" * 32, os.urandom(32)):
        plain, oid = os.urandom(len(prefix) * 7), os.urandom(16)
        sealed = crypto.encrypt_segment(key, prefix, oid, 5, True, plain)
        assert sealed == nb.crypto_aead_xchacha20poly1305_ietf_encrypt(
            plain, crypto._ad(oid, 5, True), crypto._nonce(prefix, 5), key)
        assert crypto.decrypt_segment(key, prefix, oid, 5, True, sealed) == plain
