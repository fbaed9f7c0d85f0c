"""Key pinning: the first key seen for a twin is the one believed afterwards.

The pin store belongs to the twin that resolves, not to the phonebook (a
shared phonebook file or a chain is exactly what pinning guards against). A
changed key raises ``KeyChanged`` until the owner runs ``twin phonebook repin``.

``GuardedPhonebook`` wraps any backend: it verifies, pins, caches with a
validity period (on disk, ``ResolveCache``, so every process of the twin shares
it), and when the backend is unreachable it answers from the cache with a
warning and the answer's age, never with an unverified key.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path

import cbor2

from phonebook.errors import KeyChanged, PhonebookUnavailable, RecordInvalid
from phonebook.record import NAME_RE, TwinRecord

log = logging.getLogger("twin.phonebook")


class PinStore:
    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), timeout=30, isolation_level=None,
                                   check_same_thread=False)
        self.db, self.lock = self._db, self._lock  # shared with the ResolveCache
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


def pk_matches(record: TwinRecord) -> bool:
    """Does the twin's published encryption key (TFChain ``pk``) agree with its account key?

    The rule: a twin's encryption key is the X25519 form of its Ed25519 account key,
    nothing else. A chain twin may publish ``pk``; when it does and it differs, the
    record says two different things and nothing is encrypted to it.
    """
    pk = record.extra.get("pk")
    if record.source != "tfchain" or pk is None:
        return True
    from phonebook.tfchain_relay import x25519_of

    return bool(pk == x25519_of(record.public_key))


def _dump(record: TwinRecord) -> bytes:
    """Every field of a verified record (the cache keeps what the backend said)."""
    extra = {k: v for k, v in record.extra.items() if k != "cache_age"}
    return cbor2.dumps({"r": record.to_bytes(), "id": record.id, "source": record.source,
                        "extra": extra})


def _load(blob: bytes) -> TwinRecord:
    raw = cbor2.loads(blob)
    record = TwinRecord.from_bytes(raw["r"], id=int(raw["id"]))
    return replace(record, source=str(raw["source"]), extra=dict(raw["extra"]))


class ResolveCache:
    """Resolved records on disk, shared by every process of the twin (``twin serve``,
    ``twin phonebook resolve``, ``twin send``...): SQLite in WAL mode next to the pins.

    A row is fresh for ``ttl`` seconds; after that, or after ``invalidate``, it is
    used only when the backend cannot be reached, and then with its age. A
    negative answer ("no twin serves that domain") is kept the same way.
    """

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self._db, self._lock = db, lock
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS resolved (key TEXT PRIMARY KEY, record BLOB, "
            "fetched_at REAL NOT NULL, fresh_until REAL NOT NULL)")

    def put(self, keys: list[str], record: TwinRecord | None, ttl: float) -> None:
        now = time.time()
        blob = None if record is None else _dump(record)
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO resolved VALUES (?, ?, ?, ?)",
                                 [(k, blob, now, now + ttl) for k in keys])

    def get(self, key: str, *, stale_ok: bool) -> tuple[TwinRecord | None, float] | None:
        """(record or None for a cached miss, age in seconds), or None when not cached."""
        with self._lock:
            row = self._db.execute("SELECT record, fetched_at, fresh_until FROM resolved "
                                   "WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        now = time.time()
        if not stale_ok and row[2] <= now:
            return None
        age = max(0.0, now - row[1])
        if row[0] is None:
            return None, age
        try:
            record = _load(bytes(row[0]))
        except (RecordInvalid, KeyError, TypeError, ValueError, cbor2.CBORDecodeError):
            return None
        return replace(record, extra={**record.extra, "cache_age": round(age, 1)}), age

    def invalidate(self) -> None:
        with self._lock:
            self._db.execute("UPDATE resolved SET fresh_until = 0")


class GuardedPhonebook:
    """Verify + pin + cache in front of any backend (implements Phonebook)."""

    def __init__(self, inner: object, pins: PinStore, ttl: float, *,
                 fresh_from_cache: bool = True) -> None:
        """``fresh_from_cache=False``: always ask the backend while it answers (a local
        file: as cheap as the cache and never stale); the cache then only stands in
        for a backend that cannot be reached."""
        from phonebook import Phonebook

        assert isinstance(inner, Phonebook)
        self.inner: Phonebook = inner
        self.pins = pins
        self.ttl = ttl
        self.fresh_from_cache = fresh_from_cache
        # This process's own fresh answers, in memory: a hot path (hundreds of envelopes
        # at once) must not wait on SQLite, nor write it, per lookup.
        self._memory: dict[str, tuple[float, TwinRecord | None]] = {}
        self._memory_lock = threading.Lock()
        self.cache = ResolveCache(pins.db, pins.lock)

    def _remember(self, keys: list[str], record: TwinRecord) -> TwinRecord:
        if not pk_matches(record):
            log.warning("twin %s publishes pk %s, which is not the X25519 form of its account "
                        "key %s: nothing will be encrypted to it", record.name,
                        record.extra["pk"].hex(), record.public_key.hex())
        self._memorize(keys, record)
        self.cache.put(keys, record, self.ttl)
        return record

    def _memorize(self, keys: list[str], record: TwinRecord | None) -> None:
        with self._memory_lock:
            if len(self._memory) > 10_000:
                self._memory.clear()
            for key in keys:
                self._memory[key] = (time.monotonic() + self.ttl, record)

    def _checked(self, hit: tuple[TwinRecord | None, float] | None,
                 ) -> tuple[TwinRecord | None, float] | None:
        """A cached record, checked again (shape, signature, expiry of local records, pin)."""
        if hit is None or hit[0] is None:
            return hit
        try:
            return self.pins.check(hit[0].verify()), hit[1]
        except (RecordInvalid, KeyChanged) as exc:
            log.warning("cached record of %s no longer usable: %s", hit[0].name, exc)
            return None

    def _fresh(self, key: str) -> tuple[TwinRecord | None, float] | None:
        with self._memory_lock:
            mine = self._memory.get(key)
        if mine is not None and mine[0] > time.monotonic():
            return mine[1], 0.0
        if not self.fresh_from_cache:
            return None
        return self._checked(self.cache.get(key, stale_ok=False))

    def _stale(self, key: str, exc: PhonebookUnavailable) -> tuple[TwinRecord | None, float]:
        hit = self._checked(self.cache.get(key, stale_ok=True))
        if hit is None:
            raise exc
        record, age = hit
        log.warning("phonebook unreachable (%s); using the cached answer for %s, %.0f s old",
                    exc, key[2:], age)
        if record is not None:
            record.extra["stale"] = True
        return record, age

    def cached(self, name_or_id: str | int, *, address: bool = False) -> TwinRecord | None:
        """The cached answer whatever its age (callers that cannot wait for the backend)."""
        key = "a:" + str(name_or_id).rpartition("@")[2].lower() if address \
            else f"q:{name_or_id}"
        hit = self._checked(self.cache.get(key, stale_ok=True))
        if hit is None:
            raise PhonebookUnavailable(f"phonebook busy and nothing cached for {name_or_id}")
        return hit[0]

    def resolve(self, name_or_id: str | int) -> TwinRecord:
        key = f"q:{name_or_id}"
        hit = self._fresh(key)
        if hit and hit[0] is not None:
            return hit[0]
        try:
            record = self.pins.check(_bound(self.inner.resolve(name_or_id).verify(),
                                            name_or_id))
        except PhonebookUnavailable as exc:
            stale, _ = self._stale(key, exc)
            if stale is None:
                raise
            return stale
        return self._remember([key, f"q:{record.name}", f"q:{record.id}"], record)

    def by_address(self, address: str) -> TwinRecord | None:
        key = "a:" + address.rpartition("@")[2].lower()
        hit = self._fresh(key)
        if hit is not None:
            return hit[0]
        try:
            found = self.inner.by_address(address)
        except PhonebookUnavailable as exc:
            return self._stale(key, exc)[0]
        if found is None:
            self._memorize([key], None)
            self.cache.put([key], None, self.ttl)
            return None
        domain = key[2:].strip().rstrip(".")
        if domain not in found.verify().mail_domains:
            raise RecordInvalid(f"the phonebook answers {domain!r} with twin {found.name!r}, "
                                "whose signed record does not claim that domain: refused")
        return self._remember([key], self.pins.check(found, asked="@" + domain))

    def publish(self, record: TwinRecord, *, replace_key: bool = False) -> TwinRecord:
        stored = self.inner.publish(record, replace_key=replace_key)
        self.invalidate()
        return stored

    def list(self) -> list[TwinRecord]:
        return self.inner.list()

    def invalidate(self) -> None:
        with self._memory_lock:
            self._memory.clear()
        self.cache.invalidate()

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
