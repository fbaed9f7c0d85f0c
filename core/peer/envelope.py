"""Envelope v1: the signed, encrypted unit twins exchange.

Wire bytes::

    version (1 byte, = 1) | Ed25519 signature (64 bytes) | body

``body`` is a canonical CBOR map (cbor2 ``canonical=True``) with exactly the
keys ``uid`` (16 random bytes), ``from`` and ``to`` (twin names), ``timestamp``
(integer Unix seconds), ``ttl`` (seconds), ``kind`` and ``payload``. The
signature covers ``body`` exactly as sent.

The receiver needs ``from`` to know which key to verify with, but must not
parse anything else before the signature checks. ``peek_sender`` therefore
walks the map with a tiny reader that understands only definite-length
unsigned integers, byte strings and text strings (the only types that can come
before ``from`` in canonical key order: ``to``, ``ttl``, ``uid``) and refuses
everything else; only after ``verify`` succeeds is the body fully decoded, and
it must re-encode to the very same bytes (so there is one encoding per
envelope and nothing unsigned can hide in it).

``payload`` is the canonical CBOR of the application value, encrypted with
NaCl Box (X25519 + XSalsa20-Poly1305) from the sender's X25519 key to the
recipient's, both converted from their Ed25519 keys: only the recipient can
read it, and it authenticates the sender a second time.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import cbor2
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.public import Box
from nacl.signing import VerifyKey

from core.identity import Identity, box_public_key_of
from core.peer.errors import Refusal
from phonebook import cbor as wire

VERSION = 1
SIG_LEN = 64
HEAD_LEN = 1 + SIG_LEN
UID_LEN = 16
NONCE_LEN = Box.NONCE_SIZE
MAC_LEN = 16  # Poly1305
MAX_NAME = 253  # a local twin name (<= 63) or, on TFChain, a relay domain
MAX_KIND = 64
FIELDS = frozenset({"uid", "from", "to", "timestamp", "ttl", "kind", "payload"})
# The body is one flat map of seven plain values; a payload is an application
# value, nested a little (a content listing is a list of small maps).
BODY_LIMITS = wire.Limits(max_depth=1, max_items=2 * len(FIELDS) + 1)
PAYLOAD_LIMITS = wire.Limits(max_depth=16, max_items=1 << 20)


@dataclass(frozen=True)
class Envelope:
    """A verified envelope; ``payload`` is still the ciphertext."""

    uid: bytes
    sender: str
    recipient: str
    timestamp: int
    ttl: int
    kind: str
    payload: bytes

    @property
    def expires(self) -> int:
        return self.timestamp + self.ttl


def new_uid() -> bytes:
    return os.urandom(UID_LEN)


class Boxes:
    """NaCl Box per peer key, cached: the X25519 agreement is the costly part."""

    def __init__(self, identity: Identity, size: int = 1024) -> None:
        self.identity = identity
        self._size = size
        self._boxes: OrderedDict[bytes, Box] = OrderedDict()

    def box(self, peer_public_key: bytes) -> Box:
        box = self._boxes.get(peer_public_key)
        if box is None:
            box = Box(self.identity.box_key, box_public_key_of(peer_public_key))
            self._boxes[peer_public_key] = box
            if len(self._boxes) > self._size:
                self._boxes.popitem(last=False)
        else:
            self._boxes.move_to_end(peer_public_key)
        return box

    def encrypt(self, peer_public_key: bytes, value: Any, nonce: bytes | None = None) -> bytes:
        plain = cbor2.dumps(value, canonical=True)
        return bytes(self.box(peer_public_key).encrypt(plain, nonce))

    def decrypt(self, peer_public_key: bytes, sealed: bytes) -> Any:
        """The sender's value; ``bad_payload`` if it does not open or decode.

        Decoded by the bounded decoder (``phonebook.cbor``): no tags (so no
        shared references to blow up when the value is re-encoded), bounded
        depth and item count."""
        try:
            plain = self.box(peer_public_key).decrypt(sealed)
            return wire.loads(plain, PAYLOAD_LIMITS)
        except (CryptoError, ValueError, TypeError) as exc:
            raise Refusal("bad_payload", "payload does not decrypt or decode") from exc


def seal(identity: Identity, boxes: Boxes, *, sender: str, recipient: str,
         recipient_key: bytes, kind: str, value: Any, ttl: int, uid: bytes | None = None,
         timestamp: int | None = None, nonce: bytes | None = None) -> bytes:
    """Encrypt ``value`` to the recipient, sign, and return the wire bytes.

    ``uid``, ``timestamp`` and ``nonce`` are injectable only so that test
    vectors are reproducible; in use they are fresh every time.
    """
    body = cbor2.dumps({
        "uid": uid if uid is not None else new_uid(),
        "from": sender,
        "to": recipient,
        "timestamp": int(time.time()) if timestamp is None else timestamp,
        "ttl": ttl,
        "kind": kind,
        "payload": boxes.encrypt(recipient_key, value, nonce),
    }, canonical=True)
    return bytes([VERSION]) + identity.sign(body) + body


# -- receive side: peek, verify, parse -------------------------------------

def split(raw: bytes) -> tuple[bytes, bytes]:
    """(signature, body), refusing anything that is not a v1 envelope."""
    if len(raw) < HEAD_LEN + 1:
        raise Refusal("malformed", "envelope shorter than its header")
    if raw[0] != VERSION:
        raise Refusal("unsupported_version", f"envelope version {raw[0]} (this twin speaks 1)")
    return raw[1:HEAD_LEN], raw[HEAD_LEN:]


def _head(body: bytes, pos: int) -> tuple[int, int, int]:
    """(major type, argument, next position) of one CBOR item head, definite only."""
    if pos >= len(body):
        raise Refusal("malformed", "envelope body ends early")
    first = body[pos]
    major, info = first >> 5, first & 0x1F
    pos += 1
    if info < 24:
        return major, info, pos
    width = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
    if width is None or pos + width > len(body):
        raise Refusal("malformed", "envelope body has an unsupported CBOR head")
    return major, int.from_bytes(body[pos:pos + width], "big"), pos + width


def _simple(body: bytes, pos: int) -> tuple[int | bytes, int]:
    """One unsigned int, byte string or text string (raw bytes), nothing else."""
    major, arg, pos = _head(body, pos)
    if major == 0:
        return arg, pos
    if major in (2, 3):
        if arg > len(body) - pos:
            raise Refusal("malformed", "envelope body string runs past its end")
        return body[pos:pos + arg], pos + arg
    raise Refusal("malformed", "envelope body: unexpected item before 'from'")


def peek_sender(body: bytes) -> str:
    """The ``from`` field, read without decoding the rest of the (unverified) body."""
    major, count, pos = _head(body, 0)
    if major != 5 or count != len(FIELDS):
        raise Refusal("malformed", "envelope body is not a map of the v1 fields")
    for _ in range(count):
        key, pos = _simple(body, pos)
        value, pos = _simple(body, pos)
        if key == b"from":
            if not isinstance(value, bytes) or not 0 < len(value) <= MAX_NAME:
                raise Refusal("malformed", "envelope 'from' is not a twin name")
            try:
                return value.decode("ascii")
            except UnicodeDecodeError:
                raise Refusal("malformed", "envelope 'from' is not ASCII") from None
    raise Refusal("malformed", "envelope has no 'from'")


def verify(signature: bytes, body: bytes, public_key: bytes) -> None:
    try:
        VerifyKey(public_key).verify(body, signature)
    except (BadSignatureError, ValueError, TypeError):
        raise Refusal("bad_signature", "envelope signature does not verify") from None


def parse(body: bytes) -> Envelope:
    """Decode a body whose signature has been checked; strict on shape and encoding."""
    try:
        raw = wire.loads(body, BODY_LIMITS)
        again = cbor2.dumps(raw, canonical=True)
    except (cbor2.CBORError, ValueError, TypeError, RecursionError, OverflowError,
            MemoryError) as exc:
        raise Refusal("malformed", "envelope body is not CBOR") from exc
    if not isinstance(raw, dict) or set(raw) != FIELDS or again != body:
        raise Refusal("malformed", "envelope body is not a canonical map of the v1 fields")
    uid, sender, recipient = raw["uid"], raw["from"], raw["to"]
    timestamp, ttl, kind, payload = raw["timestamp"], raw["ttl"], raw["kind"], raw["payload"]
    ok = (isinstance(uid, bytes) and len(uid) == UID_LEN
          and isinstance(sender, str) and 0 < len(sender) <= MAX_NAME
          and isinstance(recipient, str) and 0 < len(recipient) <= MAX_NAME
          and type(timestamp) is int and 0 <= timestamp < 2**40
          and type(ttl) is int and 0 < ttl < 2**31
          and isinstance(kind, str) and 0 < len(kind) <= MAX_KIND
          and isinstance(payload, bytes) and len(payload) >= NONCE_LEN + MAC_LEN)
    if not ok:
        raise Refusal("malformed", "envelope field of the wrong type or size")
    return Envelope(uid, sender, recipient, timestamp, ttl, kind, payload)
