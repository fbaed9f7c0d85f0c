"""The local phonebook: one SQLite file that several twins on a host can share.

Each twin process opens the same file; SQLite's WAL mode and file locks make
concurrent publish and resolve safe, and ``BEGIN IMMEDIATE`` serialises the
read-check-write of a publish so two twins cannot both claim a name or domain.
Every record is verified on every read: the file is not trusted, only the
signatures inside it.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from phonebook.errors import KeyChanged, PhonebookError, RecordInvalid, TwinNotFound
from phonebook.record import TwinRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS twins (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    public_key  BLOB NOT NULL UNIQUE,
    record      BLOB NOT NULL,
    updated     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS domains (
    domain  TEXT PRIMARY KEY,
    twin_id INTEGER NOT NULL REFERENCES twins(id)
);
"""
_ROW = "SELECT t.id, t.record, t.name, t.public_key FROM twins t "
HEX_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


class LocalPhonebook:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 30000")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        with self._lock:
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- reads

    def _row_to_record(self, row: tuple[int, bytes]) -> TwinRecord:
        twin_id, blob = row
        return TwinRecord.from_bytes(blob, id=twin_id).verify()

    def _bound(self, sql: str, arg: object, asked: str,
               belongs: Callable[[TwinRecord, str, bytes], bool]) -> TwinRecord | None:
        """The row ``sql`` finds (id, record, name, key) if its *signed* record was asked for.

        The file is shared and not trusted: a valid record of bob copied into
        alice's row still verifies, so the record must name what was asked
        (``belongs`` checks it against the signed fields) and agree with its
        row's name and key columns.
        """
        with self._lock:
            row = self._db.execute(sql, (arg,)).fetchone()
        if row is None:
            return None
        record = self._row_to_record((row[0], row[1]))
        if not belongs(record, str(row[2]), bytes(row[3])):
            raise RecordInvalid(f"the phonebook row for {asked!r} holds the record of twin "
                                f"{record.name!r}: refused (the phonebook file was tampered with)")
        return record

    def resolve(self, name_or_id: str | int) -> TwinRecord:
        record: TwinRecord | None
        key = str(name_or_id).strip()
        if isinstance(name_or_id, int) or key.isdigit():
            record = self._bound(_ROW + "WHERE t.id = ?", int(key), key,
                                 lambda r, name, pk: r.name == name and r.public_key == pk)
        elif HEX_KEY.match(key):
            want = bytes.fromhex(key.removeprefix("0x"))
            record = self._bound(_ROW + "WHERE t.public_key = ?", want, key,
                                 lambda r, name, pk: r.public_key == want == pk
                                 and r.name == name)
        else:
            lowered = key.lower()
            record = self._bound(_ROW + "WHERE t.name = ?", lowered, key,
                                 lambda r, name, pk: r.name == lowered == name
                                 and r.public_key == pk)
        if record is None:
            raise TwinNotFound(f"no twin {name_or_id!r} in the phonebook {self.path}")
        return record

    def by_address(self, address: str) -> TwinRecord | None:
        domain = address.rpartition("@")[2].strip().lower().rstrip(".")
        return self._bound(
            _ROW + "JOIN domains d ON t.id = d.twin_id WHERE d.domain = ?", domain, domain,
            lambda r, name, pk: domain in r.mail_domains and r.name == name
            and r.public_key == pk)

    def list(self) -> list[TwinRecord]:
        with self._lock:
            rows = self._db.execute("SELECT id, record FROM twins ORDER BY id").fetchall()
        out = []
        for row in rows:
            try:
                out.append(self._row_to_record(row))
            except RecordInvalid:
                continue  # a bad record is hidden, never shown as if valid
        return out

    # -- publish

    def publish(self, record: TwinRecord, *, replace_key: bool = False) -> TwinRecord:
        record.verify()
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                twin_id = self._publish_locked(record, replace_key)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return TwinRecord.from_bytes(record.to_bytes(), id=twin_id)

    def _publish_locked(self, record: TwinRecord, replace_key: bool) -> int:
        db = self._db
        row = db.execute("SELECT id, public_key, record FROM twins WHERE name = ?",
                         (record.name,)).fetchone()
        other = db.execute("SELECT name FROM twins WHERE public_key = ? AND name != ?",
                           (record.public_key, record.name)).fetchone()
        if other:
            raise PhonebookError(f"key already published by twin {other[0]!r}")
        now = time.time()
        if row is None:
            cur = db.execute(
                "INSERT INTO twins (name, public_key, record, updated) VALUES (?, ?, ?, ?)",
                (record.name, record.public_key, record.to_bytes(), now))
            twin_id = int(cur.lastrowid or 0)
        else:
            twin_id, old_key, old_blob = row
            old = TwinRecord.from_bytes(old_blob)
            if bytes(old_key) != record.public_key and not replace_key:
                raise KeyChanged(
                    f"twin {record.name!r} is already published with another key; "
                    "refusing to replace it (re-pin explicitly to allow)")
            if bytes(old_key) == record.public_key and record.seq < old.seq:
                raise RecordInvalid(
                    f"twin {record.name!r}: seq {record.seq} is older than stored {old.seq}")
            db.execute("UPDATE twins SET public_key = ?, record = ?, updated = ? WHERE id = ?",
                       (record.public_key, record.to_bytes(), now, twin_id))
        for domain in record.mail_domains:
            owner = db.execute("SELECT twin_id FROM domains WHERE domain = ?",
                               (domain,)).fetchone()
            if owner and owner[0] != twin_id:
                raise PhonebookError(f"mail domain {domain!r} belongs to another twin")
        db.execute("DELETE FROM domains WHERE twin_id = ?", (twin_id,))
        db.executemany("INSERT INTO domains (domain, twin_id) VALUES (?, ?)",
                       [(d, twin_id) for d in record.mail_domains])
        return twin_id
