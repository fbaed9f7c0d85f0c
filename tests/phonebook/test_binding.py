"""A phonebook row must hold the record asked for: a valid record of another twin
copied into a row (or a domain pointed at another twin) is refused, and pins are
kept under what was asked, so a domain cannot move to another key unnoticed."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import cbor2
import pytest
from nacl.signing import SigningKey

from phonebook import KeyChanged, RecordInvalid, TwinRecord
from phonebook.local import LocalPhonebook
from phonebook.pins import GuardedPhonebook, PinStore


def record(name: str, key: SigningKey, *domains: str) -> TwinRecord:
    return TwinRecord(
        name=name, public_key=bytes(key.verify_key),
        endpoints=(f"https://127.0.0.1:1/{name}",),
        mail_domains=domains or (f"{name}.example",),
        valid_until=int(time.time()) + 3600,
    ).signed_by(key)


@pytest.fixture
def two(tmp_path: Path) -> tuple[LocalPhonebook, sqlite3.Connection, SigningKey, SigningKey]:
    book = LocalPhonebook(tmp_path / "phonebook.db")
    alice, bob = SigningKey.generate(), SigningKey.generate()
    book.publish(record("alice", alice))
    book.publish(record("bob", bob))
    raw = sqlite3.connect(tmp_path / "phonebook.db", isolation_level=None)
    return book, raw, alice, bob


def test_bobs_record_in_alices_row_is_refused(two: tuple[LocalPhonebook, sqlite3.Connection,
                                                         SigningKey, SigningKey]) -> None:
    book, raw, alice, _ = two
    bob_blob = raw.execute("SELECT record FROM twins WHERE name='bob'").fetchone()[0]
    raw.execute("UPDATE twins SET record = ? WHERE name = 'alice'", (bob_blob,))
    for query in ("alice", 1, "1", bytes(alice.verify_key).hex()):
        with pytest.raises(RecordInvalid, match="'bob'"):
            book.resolve(query)
    with pytest.raises(RecordInvalid, match="'bob'"):
        book.by_address("alice@alice.example")
    assert book.resolve("bob").name == "bob"  # bob's own row is still fine


def test_a_domain_row_pointed_at_another_twin_is_refused(
        two: tuple[LocalPhonebook, sqlite3.Connection, SigningKey, SigningKey]) -> None:
    book, raw, _, _ = two
    raw.execute("UPDATE domains SET twin_id = 2 WHERE domain = 'alice.example'")
    with pytest.raises(RecordInvalid):
        book.by_address("alice@alice.example")


def test_name_and_key_columns_must_match_the_signed_record(
        two: tuple[LocalPhonebook, sqlite3.Connection, SigningKey, SigningKey]) -> None:
    """bob's row renamed 'alice' (alice's row moved away): asking alice gets a refusal."""
    book, raw, _, bob = two
    raw.execute("UPDATE twins SET name = 'gone' WHERE name = 'alice'")
    raw.execute("UPDATE twins SET name = 'alice' WHERE name = 'bob'")
    with pytest.raises(RecordInvalid):
        book.resolve("alice")
    with pytest.raises(RecordInvalid):
        book.resolve(bytes(bob.verify_key).hex())


def test_pins_follow_the_asked_domain(tmp_path: Path) -> None:
    """bob signs a record claiming alice's domain and a hostile writer points the
    domain at it: the twin that pinned alice's key for that domain refuses."""
    book = LocalPhonebook(tmp_path / "phonebook.db")
    alice, bob = SigningKey.generate(), SigningKey.generate()
    book.publish(record("alice", alice))
    guarded = GuardedPhonebook(book, PinStore(tmp_path / "pins.db"), ttl=0)
    found = guarded.by_address("x@alice.example")
    assert found is not None and found.name == "alice"
    book.publish(record("bob", bob, "bob.example"))
    raw = sqlite3.connect(tmp_path / "phonebook.db", isolation_level=None)
    raw.execute("UPDATE twins SET record = ? WHERE name = 'bob'",
                (record("bob", bob, "bob.example", "alice.example").to_bytes(),))
    raw.execute("UPDATE domains SET twin_id = 2 WHERE domain = 'alice.example'")
    with pytest.raises(KeyChanged, match=r"@alice\.example"):
        guarded.by_address("x@alice.example")
    assert guarded.pins.pinned().keys() == {"alice", "@alice.example"}  # nothing new pinned
    # after the owner re-pins alice (a real key change), the domain is free again
    guarded.pins.repin("alice")
    assert guarded.pins.pinned() == {}
    guarded.close()


@pytest.mark.parametrize("field, value", [
    ("public_key", 2**62), ("public_key", 1_500_000_000), ("signature", 2**62),
    ("seq", "1"), ("valid_until", 2.5), ("endpoints", [1]), ("name", b"alice"),
    ("key_type", [1]), ("signature", b"short"),
])
def test_record_fields_are_typed_before_use(field: str, value: object) -> None:
    """``bytes(n)`` of a forged integer allocated n zero bytes (or raised MemoryError)."""
    good = record("alice", SigningKey.generate())
    raw = cbor2.loads(good.to_bytes())
    raw[field] = value
    with pytest.raises(RecordInvalid):
        TwinRecord.from_bytes(cbor2.dumps(raw))


def test_record_with_tags_or_too_big_is_refused() -> None:
    good = record("alice", SigningKey.generate()).to_bytes()
    with pytest.raises(RecordInvalid):
        TwinRecord.from_bytes(b"\xd8\x1c" + good)
    with pytest.raises(RecordInvalid):
        TwinRecord.from_bytes(good + bytes(9000))
