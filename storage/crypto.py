"""Segment encryption and key wrapping.

Each object gets its own random key, so deleting its catalogue row (the only
place the wrapped key lives) makes its shares unreadable, and one leaked key
exposes one object. Nonces are ``object prefix (16 random bytes) || segment
number (8 bytes)``: unique per key by construction, never random collisions.
The associated data binds object id, segment number and the last-segment flag,
so segments cannot be swapped between objects, reordered or cut off silently.
"""

from __future__ import annotations

import secrets
import struct

from nacl import bindings as nb
from nacl.exceptions import CryptoError

from storage.errors import IntegrityError

KEY_BYTES = 32
PREFIX_BYTES = 16
TAG_BYTES = nb.crypto_aead_xchacha20poly1305_ietf_ABYTES
_AD = b"twin-segment-v1"
_WRAP_NONCE = nb.crypto_secretbox_NONCEBYTES
WRAPPED_KEY_BYTES = _WRAP_NONCE + nb.crypto_secretbox_MACBYTES + KEY_BYTES


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def new_prefix() -> bytes:
    return secrets.token_bytes(PREFIX_BYTES)


def check_key(key: bytes, what: str) -> bytes:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise ValueError(f"{what} must be {KEY_BYTES} bytes")
    return key


def _nonce(prefix: bytes, segment: int) -> bytes:
    return prefix + struct.pack(">Q", segment)


def _ad(object_id: bytes, segment: int, last: bool) -> bytes:
    return _AD + object_id + struct.pack(">QB", segment, 1 if last else 0)


def encrypt_segment(
    key: bytes, prefix: bytes, object_id: bytes, segment: int, last: bool, plain: bytes
) -> bytes:
    return nb.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plain, _ad(object_id, segment, last), _nonce(prefix, segment), key
    )


def decrypt_segment(
    key: bytes, prefix: bytes, object_id: bytes, segment: int, last: bool, cipher: bytes
) -> bytes:
    try:
        return nb.crypto_aead_xchacha20poly1305_ietf_decrypt(
            cipher, _ad(object_id, segment, last), _nonce(prefix, segment), key
        )
    except CryptoError as exc:
        raise IntegrityError(
            f"segment {segment} of object {object_id.hex()} failed authentication"
        ) from exc


def seal(master: bytes, plain: bytes) -> bytes:
    """secretbox with a random nonce; used to wrap object keys and backup manifests."""
    nonce = secrets.token_bytes(_WRAP_NONCE)
    return nonce + nb.crypto_secretbox(plain, nonce, master)


def unseal(master: bytes, sealed: bytes, what: str) -> bytes:
    if len(sealed) < _WRAP_NONCE + nb.crypto_secretbox_MACBYTES:
        raise IntegrityError(f"{what}: sealed value too short")
    try:
        return nb.crypto_secretbox_open(sealed[_WRAP_NONCE:], sealed[:_WRAP_NONCE], master)
    except CryptoError as exc:
        raise IntegrityError(f"{what}: cannot be opened with this key") from exc


def wrap_key(master: bytes, key: bytes) -> bytes:
    return seal(master, key)


def unwrap_key(master: bytes, wrapped: bytes, object_id: str) -> bytes:
    key = unseal(master, wrapped, f"key of object {object_id}")
    if len(key) != KEY_BYTES:
        raise IntegrityError(f"key of object {object_id} has a wrong length")
    return key
