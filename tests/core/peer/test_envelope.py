"""Envelope v1: fixed test vectors, the minimal sender peek, strict parsing."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.identity import Identity
from core.peer import envelope as env
from core.peer.errors import Refusal

ALICE = Identity(bytes(range(32)))
BOB = Identity(bytes(range(32, 64)))
UID = bytes(range(16))
VECTOR_HEX = (
    "01e568e6438580e5b772a0544482fe59d8890d4a6a4b2b424bf44585a35f8772d46712540bf9f7d120f994"
    "d8a7df057a16be204cba6ef3f2a9b72673fe08214604a762746f63626f626374746c190e106375696450000"
    "102030405060708090a0b0c0d0e0f6466726f6d65616c696365646b696e64676d657373616765677061796c"
    "6f61645838000000000000000000000000000000000000000000000000794767d9abdbbe2c1f3fde5531e379"
    "8f4aa9ec624028dc6d1417e984d38ee1446974696d657374616d701a6553f100"
)
VECTOR_SHA256 = "02a73f566655043365ca9a9fc74fb08af75e800e80914dbddca48e971c33b89e"


def vector(**changes: object) -> bytes:
    args: dict[str, object] = dict(sender="alice", recipient="bob", recipient_key=BOB.public_key,
                                   kind="message", value={"text": "hello bob"}, ttl=3600,
                                   uid=UID, timestamp=1700000000, nonce=bytes(24))
    args.update(changes)
    return env.seal(ALICE, env.Boxes(ALICE), **args)  # type: ignore[arg-type]


def test_known_key_and_body_give_known_bytes() -> None:
    raw = vector()
    assert raw.hex() == VECTOR_HEX
    assert hashlib.sha256(raw).hexdigest() == VECTOR_SHA256
    assert raw[0] == 1 and len(raw) == 206


def test_vector_verifies_parses_and_decrypts() -> None:
    sig, body = env.split(vector())
    assert env.peek_sender(body) == "alice"
    env.verify(sig, body, ALICE.public_key)
    e = env.parse(body)
    assert (e.uid, e.sender, e.recipient, e.timestamp, e.ttl, e.kind) == (
        UID, "alice", "bob", 1700000000, 3600, "message")
    assert env.Boxes(BOB).decrypt(ALICE.public_key, e.payload) == {"text": "hello bob"}


def test_only_the_recipient_can_read_the_payload() -> None:
    e = env.parse(env.split(vector())[1])
    with pytest.raises(Refusal) as info:
        env.Boxes(Identity(bytes(32))).decrypt(ALICE.public_key, e.payload)
    assert info.value.code == "bad_payload"


@pytest.mark.parametrize("index", [0, 1, 40, 64, 65, 80, 120, 205])
def test_any_flipped_byte_is_refused(index: int) -> None:
    raw = bytearray(vector())
    raw[index] ^= 0x01
    sig, body = b"", b""
    with pytest.raises(Refusal) as info:
        sig, body = env.split(bytes(raw))
        assert env.peek_sender(body) == "alice"
        env.verify(sig, body, ALICE.public_key)
    assert info.value.code in ("unsupported_version", "bad_signature", "malformed")


def test_non_canonical_body_is_refused_even_when_signed() -> None:
    body = cbor2.dumps({"uid": UID, "from": "alice", "to": "bob", "timestamp": 1, "ttl": 5,
                        "kind": "ping", "payload": bytes(40)})  # insertion order, not canonical
    env.verify(ALICE.sign(body), body, ALICE.public_key)
    with pytest.raises(Refusal) as info:
        env.parse(body)
    assert info.value.code == "malformed"


def test_extra_field_is_refused() -> None:
    body = cbor2.dumps({"uid": UID, "from": "alice", "to": "bob", "timestamp": 1, "ttl": 5,
                        "kind": "ping", "payload": bytes(40), "x": 1}, canonical=True)
    with pytest.raises(Refusal) as info:
        env.peek_sender(body)
    assert info.value.code == "malformed"


def test_peek_refuses_nested_items_before_from() -> None:
    # a map whose first value is an array: peek must not descend into it
    body = bytes([0xA7]) + cbor2.dumps("to") + cbor2.dumps([1, 2]) + b"\x00" * 20
    with pytest.raises(Refusal) as info:
        env.peek_sender(body)
    assert info.value.code == "malformed"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_peek_and_parse_never_crash_on_random_bodies(body: bytes) -> None:
    for step in (env.peek_sender, env.parse):
        try:
            step(body)
        except Refusal as refusal:
            assert refusal.code == "malformed"


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_peek_never_crashes_on_mutated_vectors(data: st.DataObject) -> None:
    raw = bytearray(vector())
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        sig, body = env.split(bytes(raw[:cut]))
        env.peek_sender(body)
        env.verify(sig, body, ALICE.public_key)
        env.parse(body)
    except Refusal as refusal:
        assert refusal.code in ("malformed", "unsupported_version", "bad_signature")
