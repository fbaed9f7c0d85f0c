"""The local phonebook: signed records, verified on every read, shared by processes."""

from __future__ import annotations

import contextlib
import multiprocessing
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from phonebook import KeyChanged, PhonebookError, RecordInvalid, TwinNotFound, TwinRecord, load
from phonebook.local import LocalPhonebook
from phonebook.pins import GuardedPhonebook, PinStore


def record(name: str, key: SigningKey, seq: int = 1, domain: str | None = None) -> TwinRecord:
    return TwinRecord(
        name=name,
        public_key=bytes(key.verify_key),
        endpoints=(f"https://127.0.0.1:1/{name}",),
        mail_domains=(domain or f"{name}.example",),
        valid_until=int(time.time()) + 3600,
        seq=seq,
    ).signed_by(key)


@pytest.fixture
def book(tmp_path: Path) -> LocalPhonebook:
    pb = load("local", path=tmp_path / "phonebook.db")
    assert isinstance(pb, LocalPhonebook)
    return pb


def test_publish_then_resolve_by_name_id_key_and_domain(book: LocalPhonebook) -> None:
    key = SigningKey.generate()
    stored = book.publish(record("alice", key))
    assert stored.id == 1
    for query in ("alice", 1, "1", bytes(key.verify_key).hex()):
        assert book.resolve(query).public_key == bytes(key.verify_key)
    found = book.by_address("someone@alice.example")
    assert found is not None and found.name == "alice"
    assert book.by_address("someone@nowhere.example") is None
    with pytest.raises(TwinNotFound):
        book.resolve("bob")


def test_a_tampered_record_is_refused(book: LocalPhonebook, tmp_path: Path) -> None:
    book.publish(record("alice", SigningKey.generate()))
    raw = sqlite3.connect(tmp_path / "phonebook.db")
    blob = raw.execute("SELECT record FROM twins WHERE name='alice'").fetchone()[0]
    forged = TwinRecord.from_bytes(blob)
    forged = replace(forged, endpoints=("https://evil.example",))
    raw.execute("UPDATE twins SET record=? WHERE name='alice'", (forged.to_bytes(),))
    raw.commit()
    with pytest.raises(RecordInvalid, match="does not verify"):
        book.resolve("alice")
    assert book.list() == []  # hidden, never shown as valid


def test_an_unsigned_or_foreign_signed_record_cannot_be_published(book: LocalPhonebook) -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    unsigned = replace(record("alice", key), signature=None)
    with pytest.raises(RecordInvalid, match="not signed"):
        book.publish(unsigned)
    with pytest.raises(RecordInvalid):
        replace(record("alice", key), public_key=bytes(other.verify_key)).verify()


def test_key_change_is_refused_unless_replaced_explicitly(book: LocalPhonebook) -> None:
    book.publish(record("alice", SigningKey.generate()))
    newkey = SigningKey.generate()
    with pytest.raises(KeyChanged):
        book.publish(record("alice", newkey, seq=2))
    book.publish(record("alice", newkey, seq=2), replace_key=True)
    assert book.resolve("alice").public_key == bytes(newkey.verify_key)


def test_old_records_cannot_replace_newer_ones(book: LocalPhonebook) -> None:
    key = SigningKey.generate()
    book.publish(record("alice", key, seq=5))
    with pytest.raises(RecordInvalid, match="older"):
        book.publish(record("alice", key, seq=4))


def test_expired_records_are_refused(book: LocalPhonebook) -> None:
    key = SigningKey.generate()
    old = replace(record("alice", key), valid_until=int(time.time()) - 1).signed_by(key)
    with pytest.raises(RecordInvalid, match="expired"):
        book.publish(old)


def test_a_mail_domain_belongs_to_one_twin(book: LocalPhonebook) -> None:
    book.publish(record("alice", SigningKey.generate(), domain="shared.example"))
    with pytest.raises(PhonebookError, match="belongs to another twin"):
        book.publish(record("bob", SigningKey.generate(), domain="shared.example"))


def test_pins_refuse_a_changed_key_until_repinned(book: LocalPhonebook, tmp_path: Path) -> None:
    guarded = GuardedPhonebook(book, PinStore(tmp_path / "pins.db"), ttl=0)
    book.publish(record("alice", SigningKey.generate()))
    first = guarded.resolve("alice")
    newkey = SigningKey.generate()
    book.publish(record("alice", newkey, seq=2), replace_key=True)  # a phonebook that lies
    with pytest.raises(KeyChanged, match="repin"):
        guarded.resolve("alice")
    guarded.pins.repin("alice")
    assert guarded.resolve("alice").public_key == bytes(newkey.verify_key) != first.public_key


def _worker(path: str, index: int, count: int, others: int) -> None:
    book = LocalPhonebook(path)
    keys = [SigningKey.generate() for _ in range(count)]
    for i, key in enumerate(keys):
        book.publish(record(f"p{index}-{i}", key))
        # resolve whatever the other processes have published so far
        for j in range(others):
            with contextlib.suppress(TwinNotFound):
                book.resolve(f"p{j}-{i // 2}")
    book.close()


def test_processes_publish_and_resolve_concurrently_in_one_file(tmp_path: Path) -> None:
    path = str(tmp_path / "phonebook.db")
    LocalPhonebook(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(path, i, 25, 4)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    book = LocalPhonebook(path)
    names = {r.name for r in book.list()}
    assert names == {f"p{i}-{j}" for i in range(4) for j in range(25)}
    assert len({r.id for r in book.list()}) == 100
