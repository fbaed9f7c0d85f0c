"""Key pinning: the first key seen for a twin is the one believed afterwards.

The pin store belongs to the twin that resolves, not to the phonebook (a
shared phonebook file or a chain is exactly what pinning guards against). A
changed key raises ``KeyChanged`` until the owner runs ``twin phonebook repin``.

``GuardedPhonebook`` wraps any backend: it verifies, pins, caches with a
validity period, and when the backend is unreachable it answers from the cache
with a warning, never with an unverified key.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

from phonebook.errors import KeyChanged, PhonebookUnavailable, RecordInvalid
from phonebook.record import NAME_RE, TwinRecord

log = logging.getLogger("twin.phonebook")


class PinStore:
    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), timeout=30, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS pins (name TEXT PRIMARY KEY, public_key BLOB NOT NULL, "
            "pinned_at REAL NOT NULL)")

    def check(self, record: TwinRecord, asked: str | None = None) -> TwinRecord:
        """Pin on first sight; refuse a different key afterwards.

        The pin is kept under the record's name and also under ``asked`` (a
        mail domain as ``@domain``) when that is what the lookup was for: a
        domain that suddenly resolves to another twin's key is then refused
        like a name that changed its key, whatever name the new record bears.
        """
        keys = list(dict.fromkeys([record.name] + ([asked] if asked else [])))
        with self._lock:
            pinned = {key: self._db.execute("SELECT public_key FROM pins WHERE name = ?",
                                            (key,)).fetchone() for key in keys}
            for key, row in pinned.items():  # all checked before anything is pinned
                if row is not None and bytes(row[0]) != record.public_key:
                    log.warning("twin %s presents a new key %s (pinned %s): refused until "
                                "re-pinned", key, record.public_key.hex(), bytes(row[0]).hex())
                    raise KeyChanged(
                        f"twin {key!r} changed its key (now that of {record.name!r}); run "
                        f"`twin phonebook repin {key}` if you trust the change")
            for key, row in pinned.items():
                if row is None:
                    self._db.execute("INSERT INTO pins VALUES (?, ?, ?)",
                                     (key, record.public_key, time.time()))
                    log.info("pinned key of twin %s: %s", key, record.public_key.hex())
        return record

    def repin(self, name: str) -> None:
        """Forget ``name``'s pin and every domain pinned to the same key."""
        with self._lock:
            row = self._db.execute("SELECT public_key FROM pins WHERE name = ?",
                                   (name,)).fetchone()
            if row is not None:
                self._db.execute("DELETE FROM pins WHERE name LIKE '@%' AND public_key = ?",
                                 (row[0],))
            self._db.execute("DELETE FROM pins WHERE name = ?", (name,))
        log.info("unpinned twin %s; its next key is pinned on first sight", name)

    def pinned(self) -> dict[str, bytes]:
        with self._lock:
            return {n: bytes(k) for n, k in self._db.execute("SELECT name, public_key FROM pins")}

    def close(self) -> None:
        with self._lock:
            self._db.close()


class GuardedPhonebook:
    """Verify + pin + cache in front of any backend (implements Phonebook)."""

    def __init__(self, inner: object, pins: PinStore, ttl: float) -> None:
        from phonebook import Phonebook

        assert isinstance(inner, Phonebook)
        self.inner: Phonebook = inner
        self.pins = pins
        self.ttl = ttl
        self._cache: dict[str, tuple[float, TwinRecord]] = {}
        self._lock = threading.Lock()

    def _remember(self, keys: list[str], record: TwinRecord) -> TwinRecord:
        with self._lock:
            for k in keys:
                self._cache[k] = (time.monotonic() + self.ttl, record)
        return record

    def _cached(self, key: str, *, stale_ok: bool) -> TwinRecord | None:
        with self._lock:
            hit = self._cache.get(key)
        if hit and (stale_ok or hit[0] > time.monotonic()):
            return hit[1]
        return None

    def resolve(self, name_or_id: str | int) -> TwinRecord:
        key = f"q:{name_or_id}"
        hit = self._cached(key, stale_ok=False)
        if hit:
            return hit
        try:
            record = self.pins.check(_bound(self.inner.resolve(name_or_id).verify(),
                                            name_or_id))
        except PhonebookUnavailable:
            stale = self._cached(key, stale_ok=True)
            if stale is None:
                raise
            log.warning("phonebook unreachable; using cached record of %s", stale.name)
            return stale
        return self._remember([key, f"q:{record.name}", f"q:{record.id}"], record)

    def by_address(self, address: str) -> TwinRecord | None:
        key = "a:" + address.rpartition("@")[2].lower()
        hit = self._cached(key, stale_ok=False)
        if hit:
            return hit
        try:
            found = self.inner.by_address(address)
        except PhonebookUnavailable:
            stale = self._cached(key, stale_ok=True)
            if stale is None:
                raise
            log.warning("phonebook unreachable; using cached record of %s", stale.name)
            return stale
        if found is None:
            return None
        domain = key[2:].strip().rstrip(".")
        if domain not in found.verify().mail_domains:
            raise RecordInvalid(f"the phonebook answers {domain!r} with twin {found.name!r}, "
                                "whose signed record does not claim that domain: refused")
        return self._remember([key], self.pins.check(found, asked="@" + domain))

    def publish(self, record: TwinRecord, *, replace_key: bool = False) -> TwinRecord:
        stored = self.inner.publish(record, replace_key=replace_key)
        with self._lock:
            self._cache.clear()
        return stored

    def list(self) -> list[TwinRecord]:
        return self.inner.list()

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()

    def close(self) -> None:
        self.inner.close()
        self.pins.close()


def _bound(record: TwinRecord, asked: str | int) -> TwinRecord:
    """``record`` if it answers ``asked`` by a field of its own, whatever the backend.

    A number must be its id; a plain name of a locally signed record must be
    its signed name. (Keys and TFChain accounts or domains are matched by the
    backend, which alone knows how to read them.)
    """
    key = str(asked).strip()
    if isinstance(asked, int) or key.isdigit():
        ok = record.id == int(key)
    elif record.source == "local" and NAME_RE.match(key.lower()):
        ok = record.name == key.lower()
    else:
        ok = True
    if not ok:
        raise RecordInvalid(f"the phonebook answers {key!r} with the record of twin "
                            f"{record.name!r}: refused")
    return record
