"""The façade: ``Store``, the contract of the package docstring, and ``open_store``.

``Store`` composes the parts and is what callers hold. The share-level work
and the state the parts share are in ``storage.engine`` (``Engine``); each
contract call here checks its arguments and that the store is open, then does
an object-level step over the engine (``put``, ``get``, ``delete``, the named
pointers) or hands the engine to the part that does the work:

- small in-memory puts: ``storage.smallput`` (``SmallPuts``, batched);
- ``verify`` and ``repair``: ``storage.repair``;
- ``maintain`` (self-repair and scrub): ``storage.maintain``;
- ``backup`` and ``restore``: ``storage.backup``;
- ``add_backend`` and ``remove_backend``: ``storage.backendset``; ``drain``:
  ``storage.drain``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import cast

from storage import crypto
from storage.backends import ShardBackend, check_usable, claim_all, load
from storage.backends.local import CompactPolicy
from storage.backendset import add, remove
from storage.backup import backup, restore_catalogue
from storage.catalogue import FILE_NAME, Catalogue, Manifest
from storage.drain import drain
from storage.engine import DEFAULT_SEGMENT, NS_OBJECT, Engine, ObjectStream, share_key
from storage.errors import DeleteRefused, InvalidReference, ObjectNotFound, StorageError
from storage.health import BackendMonitor, deadline
from storage.maintain import maintain
from storage.memory import default_executors, release_memory
from storage.model import (
    BackendHealth,
    DrainProgress,
    ObjectInfo,
    ObjectRef,
    RepairReport,
    VerifyReport,
    ref_id,
)
from storage.repair import repair, verify
from storage.settle import settle_unsettled
from storage.smallput import SmallPuts
from storage.source import Source

log = logging.getLogger("twin.storage")

MAX_BACKENDS = 64
NAMED_KEEP = 3  # generations of a named pointer kept: as many as catalogue backups
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def open_store(data_dir: Path, *, k: int, n: int, segment_size: int,
               backends: builtins.list[dict[str, str]], master_key: bytes, metadata_key: bytes,
               write_quorum: int | None = None, policy: CompactPolicy | None = None) -> Store:
    """Open (creating if needed) the store of a twin's data dir.

    ``backends`` are ``{"name", "kind": "local"|"resp", "location"}``; local
    locations are relative to ``data_dir``. Backends are reached lazily, so an
    unreachable one does not stop the store from opening (reads use the others).
    Local directories are locked for this process at once: if another process
    (a running ``twin serve``) holds one, this raises ``StoreInUse`` with its pid.
    """
    data_dir = Path(data_dir)
    if not isinstance(backends, list) or not 1 <= len(backends) <= MAX_BACKENDS:
        raise ValueError(f"need 1..{MAX_BACKENDS} backends")
    data_dir.mkdir(parents=True, exist_ok=True)
    cpu, io = default_executors()
    loaded: builtins.list[ShardBackend] = []
    try:
        loaded = [load(spec, data_dir, io, policy) for spec in backends]
        claim_all(loaded)  # StoreInUse now, if a running twin holds the directories
        catalogue = Catalogue(data_dir / FILE_NAME, io)
        return Store(Engine(data_dir, loaded, catalogue, k=k, n=n, segment_size=segment_size,
                            master_key=master_key, metadata_key=metadata_key, cpu=cpu,
                            io=io, write_quorum=write_quorum, policy=policy))
    except BaseException:
        for b in loaded:
            unclaim = getattr(b, "unclaim", None)
            if unclaim is not None:
                unclaim()
        cpu.shutdown(wait=False)
        io.shutdown(wait=False)
        raise


class Store:
    """See the package docstring for the contract.

    ``engine`` is the ``Engine`` the parts share; the read-only properties below
    the contract are views of its state for callers that show or check it (the
    health summary, the backend list); tests reach into ``engine`` itself."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.small = SmallPuts(self.engine)  # small in-memory puts go through it, batched

    def _check_open(self) -> None:
        self.engine.check_open()

    @property
    def _closed(self) -> bool:
        return self.engine.closed

    # -- put

    async def put(self, source: Source) -> ObjectRef:
        """Store a stream; the object is visible once this returns, never before.

        Small in-memory objects (a mail message) are stored with whatever other small
        puts are waiting, in one batch (``storage.smallput``): same result, far less
        CPU per object."""
        self._check_open()
        if self.small.accepts(source):
            return await self.small.put(source)
        e = self.engine
        oid = secrets.token_hex(16)
        key = crypto.new_key()
        prefix = crypto.new_prefix()
        written: builtins.list[tuple[ShardBackend, str]] = []
        e.inflight.add(oid)
        try:
            size, entries = await e.write_stream(source, NS_OBJECT, oid, key, prefix, written)
            manifest = Manifest(oid, size, time.time(), e.k, e.n, e.segment_size,
                                crypto.wrap_key(e.master_key, key), prefix, entries,
                                len(entries))
            await e.catalogue.insert(manifest)
        except BaseException:
            await e.discard(written)
            raise
        finally:
            e.inflight.discard(oid)
        log.debug("stored object %s (%d bytes, %d segments)", oid, size, len(entries))
        return ObjectRef(oid, size)

    # -- get

    def get(self, ref: ObjectRef | str, start: int = 0, end: int | None = None) -> ObjectStream:
        """Bytes ``start..end`` (end exclusive, clamped to the size) as an async iterator.

        ``async for chunk in store.get(ref)`` works; ``await store.get(ref)`` first
        checks that the object exists (raising ObjectNotFound before any byte is
        sent, which HTTP and IMAP handlers want) and returns the same iterator.
        """
        self._check_open()
        oid = ref_id(ref)
        if not isinstance(start, int) or start < 0:
            raise ValueError(f"range start must be a non-negative integer, got {start!r}")
        if end is not None and (not isinstance(end, int) or end < start):
            raise ValueError(f"range end must be >= start, got {end!r}")
        return ObjectStream(self.engine, oid, start, end)

    async def read(self, ref: ObjectRef | str, start: int = 0, end: int | None = None) -> bytes:
        return b"".join([chunk async for chunk in self.get(ref, start, end)])

    # -- the rest of the contract

    async def stat(self, ref: ObjectRef | str) -> ObjectInfo:
        self._check_open()
        oid = ref_id(ref)
        info = await self.engine.catalogue.info(oid)
        if info is None:
            raise ObjectNotFound(f"object {oid} not found")
        return info

    async def delete(self, ref: ObjectRef | str) -> None:
        """Invisible at once (catalogue row gone); shares are removed after, best effort."""
        self._check_open()
        e = self.engine
        oid = ref_id(ref)
        m = await e.manifest(oid)
        await self._check_deletable({name for entry in m.segments for name in entry.placement
                                     if name})
        # between the catalogue row and the last share, a concurrent verify must not
        # count the shares as orphans (it skips ids in flight, as for a put)
        e.inflight.add(oid)
        try:
            if not await e.catalogue.remove(oid):
                raise ObjectNotFound(f"object {oid} not found")
            keys = [(name, share_key(NS_OBJECT, oid, seg, i))
                    for seg, entry in enumerate(m.segments)
                    for i, name in enumerate(entry.placement) if name]
            await e.delete_keys(keys)
        finally:
            e.inflight.discard(oid)
        log.debug("deleted object %s", oid)

    async def _check_deletable(self, names: set[str]) -> None:
        """``DeleteRefused`` if a backend holding shares refuses deletes (0-db worm, lock),
        before the object leaves the catalogue: otherwise it would vanish from ``ls``
        while every share stays."""
        e = self.engine

        async def refusal(b: ShardBackend) -> str | None:
            check = getattr(b, "delete_refusal", None)
            if check is None or e.monitor.is_down(b.name):
                return None
            try:
                return cast(str | None, await asyncio.wait_for(check(), deadline(0)))
            except (TimeoutError, StorageError):
                return None  # unreachable now: its shares are queued as orphans

        backends = [e.by_name[n] for n in sorted(names) if n in e.by_name]
        for b, why in zip(backends, await asyncio.gather(*(refusal(b) for b in backends)),
                          strict=True):
            if why:
                raise DeleteRefused(b.name, f"it refuses deletes: {why}")

    def iter_objects(self) -> AsyncIterator[ObjectInfo]:
        return self.engine.iter_objects()

    async def list(self) -> builtins.list[ObjectInfo]:
        self._check_open()
        return [info async for info in self.engine.iter_objects()]

    async def health(self) -> builtins.list[BackendHealth]:
        """Ask every backend now (each answer bounded); refreshes the cached health."""
        return await self.engine.health()

    async def check_backends(self) -> None:
        """ValueError naming a backend that can never hold shares (0-db seq mode)."""
        await asyncio.gather(*(check_usable(b) for b in self.engine.backends))

    async def maintain(self, scrub_interval: float = 0.0) -> None:
        """Keep redundancy up while serving, until cancelled (``storage.maintain``).

        Repairs the objects stored below n shares once no backend is down,
        removes the shares failed puts left on backends that were down, and
        every ``scrub_interval`` seconds (0: never) checks and repairs the whole
        store (``repair``: a flushed or replaced backend is refilled)."""
        await maintain(self.engine, scrub_interval)

    async def verify(self, sample: float | None = None, clean: bool = False) -> VerifyReport:
        self._check_open()
        if self.engine.unsettled_owed:  # rows a crash left: decided before they count
            await settle_unsettled(self.engine)
        try:
            return await verify(self.engine, sample, clean)
        finally:
            await asyncio.get_running_loop().run_in_executor(self.engine.io, release_memory)

    async def repair(self) -> RepairReport:
        self._check_open()
        if self.engine.unsettled_owed:
            await settle_unsettled(self.engine)
        try:
            return await repair(self.engine)
        finally:
            await asyncio.get_running_loop().run_in_executor(self.engine.io, release_memory)

    async def add_backend(self, spec: dict[str, str]) -> BackendHealth:
        """Open a new backend (a ``storage.backends`` spec) and place new shares on it too.

        Refused (``BackendRefused``) if the name is taken, or it cannot be reached,
        written or hold this store's shares."""
        self._check_open()
        return await add(self.engine, spec)

    async def drain(self, name: str, progress: Callable[[DrainProgress], None] | None = None
                    ) -> DrainProgress:
        """Move every share on backend ``name`` to the others, while puts and gets go on.

        ``name`` takes no new share from now on (kept across restarts); each share
        is copied (or rebuilt from k others, if it cannot be read) to a backend its
        segment does not use yet, the catalogue updated, then the old one deleted, so
        a segment never has fewer good shares than before. Interrupted, it resumes on
        the next call. ``progress`` hears of each step. Refused (``BackendRefused``)
        if fewer than n backends would take new shares."""
        self._check_open()
        return await drain(self.engine, name, progress)

    async def remove_backend(self, name: str) -> None:
        """Stop using backend ``name``; refused (``BackendRefused``, with the count)
        while any share is placed on it, and if fewer than n would be left."""
        self._check_open()
        await remove(self.engine, name)

    async def shares_on(self, name: str) -> int:
        """How many shares the catalogue places on backend ``name``."""
        self._check_open()
        return await self.engine.catalogue.count_on(name)

    async def set_named(self, name: str, ref: ObjectRef | str) -> None:
        """Make ``name`` point at ``ref`` (a new generation); what ``get_named`` returns.

        Named pointers live in the catalogue, so a catalogue backup carries them
        and ``restore`` brings them back: the way to find an object (the twin's
        metadata DB snapshot) knowing nothing but the twin's words. The newest
        ``NAMED_KEEP`` generations are kept (an older catalogue backup still
        finds its own); objects of older ones are deleted here.
        """
        self._check_open()
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise InvalidReference(f"invalid name {name!r:.80}")
        info = await self.stat(ref)
        try:
            dropped = await self.engine.catalogue.set_named(name, info.id, info.size,
                                                            time.time(), NAMED_KEEP)
        except KeyError:
            raise ObjectNotFound(f"object {info.id} not found") from None
        for oid in dropped:
            with contextlib.suppress(ObjectNotFound):
                await self.delete(oid)

    async def get_named(self, name: str) -> builtins.list[ObjectRef]:
        """Every kept generation of ``name``, newest first (empty if never set)."""
        self._check_open()
        return [ObjectRef(oid, size)
                for oid, size, _ in await self.engine.catalogue.named(name)]

    async def backup(self) -> str:
        self._check_open()
        return await backup(self.engine)

    async def backup_loop(self, interval: float) -> None:
        """Back the catalogue up every ``interval`` seconds until cancelled."""
        if interval <= 0:
            raise ValueError("backup interval must be positive")
        while True:
            await asyncio.sleep(interval)
            try:
                await self.backup()
            except StorageError as exc:
                log.error("scheduled catalogue backup failed: %s", exc)

    async def compact(self) -> int:
        """Reclaim dead space where a backend can (local: compaction, see its
        ``CompactPolicy``); returns files compacted."""
        done = 0
        for b in self.engine.backends:
            fn = getattr(b, "maintain", None)
            if fn is None:
                continue
            try:
                done += await fn()
            except StorageError as exc:
                log.warning("backend %s: compaction failed: %s", b.name, exc)
        return done

    async def compact_loop(self, interval: float) -> None:
        """``compact`` every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await self.compact()

    async def trim_loop(self, interval: float) -> None:
        """``release_memory`` every ``interval`` seconds until cancelled.

        Why: a serving twin frees segment buffers, share lists and SQLite pages
        all day, and glibc keeps freed pages below the heap's top (and up to
        ``tune_malloc``'s 64 MiB at it) for reuse: RSS steps up and never comes
        back, +25 to +38 MiB/h in a 37-minute soak (issue 23), though nothing
        leaked. A trim is milliseconds, off the loop, on the I/O pool."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            await loop.run_in_executor(self.engine.io, release_memory)

    @classmethod
    async def restore(cls, data_dir: Path, *, backends: builtins.list[dict[str, str]],
                      metadata_key: bytes, master_key: bytes, k: int = 4, n: int = 6,
                      segment_size: int = DEFAULT_SEGMENT) -> Store:
        """Rebuild the catalogue of an empty data dir from the newest backup on the backends."""
        await restore_catalogue(data_dir, backends=backends, metadata_key=metadata_key,
                                master_key=master_key, k=k, n=n, segment_size=segment_size)
        return open_store(data_dir, k=k, n=n, segment_size=segment_size, backends=backends,
                          master_key=master_key, metadata_key=metadata_key)

    async def close(self) -> None:
        if self.engine.closed:
            return
        self.engine.closed = True
        await self.small.drain()
        await self.engine.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- views of the engine's state (read-only; not part of the contract)

    @property
    def monitor(self) -> BackendMonitor:
        """Cached backend health (``monitor.summary()``) and its listeners."""
        return self.engine.monitor

    @property
    def data_dir(self) -> Path:
        return self.engine.data_dir

    @property
    def backends(self) -> builtins.list[ShardBackend]:
        return self.engine.backends

    @property
    def by_name(self) -> dict[str, ShardBackend]:
        return self.engine.by_name

    @property
    def draining(self) -> set[str]:
        return self.engine.draining

    @property
    def k(self) -> int:
        return self.engine.k

    @property
    def n(self) -> int:
        return self.engine.n

    @property
    def segment_size(self) -> int:
        return self.engine.segment_size
