"""Batched puts of small in-memory objects: a mail message is one.

Why: the twin must take mail over SMTP as fast as a bare SMTP sink on the same
two cores, and every message is one ``Store.put`` of a few KiB. Group commit
already shares the fsyncs between concurrent puts; what was left was Python
and asyncio work *per object*: six ``backend.put`` coroutines (each a group
commit entry with its own future and shield), a gather, a catalogue entry, and
in each local backend a SELECT plus an INSERT per share. That cost ~730 µs of
CPU per 4 KiB put, several times a message's whole budget.

How: ``Store.put`` of bytes no larger than ``limit`` (one segment, and at most
``SMALL_PUT_MAX``) appends ``(data, future)`` to a queue and awaits that one
future. A single flusher task takes everything queued (up to ``MAX_ITEMS``
objects and ``MAX_BYTES`` bytes) as a batch, and for the whole batch:

1. encodes every object exactly as a one-segment put does (its own id, key
   and nonce prefix; same crypto, same share format), in one call: on the
   loop for a batch of a few objects (``INLINE_ITEMS``), else in the CPU pool;
2. writes to each backend *one* ``put_many`` (one group-commit entry, one
   fdatasync; a pipelined batch of SETs for resp), all backends in parallel;
3. places shares as a single put does: share i of an object goes to
   ``placement_order(oid)[i]``; a share whose backend failed moves to a spare
   backend the object does not use yet; an object with fewer than
   ``write_quorum`` shares stored fails alone with ``BackendUnavailable`` (its
   shares are discarded) while the rest of the batch goes on;
4. inserts every manifest with one catalogue transaction: when every share has
   a backend that is up (the common case), *while* step 2 runs
   (``Catalogue.insert_early``, the rows listed as unsettled), placed as
   planned; a share that then moved to a spare (or found none) has its row
   corrected (``fix_placement``) and an object below the write quorum its row
   removed, before anyone is answered. With a backend known down, after step 2
   (``insert_many``), as before;
5. resolves each caller's future with its ``ObjectRef`` or its own exception.

Why step 4 runs beside step 2: one after the other, a lone small put (a 4 KiB
WebDAV PUT, issue 20) waited for the backends' syncs and then the catalogue's;
side by side it waits for the slower of them.

A caller gets its ref only once its shares are durable and its manifest
committed, as with a single put, so nothing can reference an object before
then. What a kill -9 leaves: orphan shares, which ``verify(clean=True)``
removes (ids being written are in ``Engine.inflight``, so a concurrent verify
does not take them for orphans), and early rows whose shares may not all have
landed, which ``storage.settle`` decides by their shares (removed below k).
A caller cancelled before its manifest is committed gets nothing stored; one
cancelled while the manifest is being committed has its object deleted again.

One batch is in flight at a time: whatever arrives meanwhile waits
and forms the next batch. Measured with 20 callers arriving independently (as SMTP
sessions do), two batches in flight halved the batch size (6.6 against 10
objects) and cost 20-50 % more CPU per put for no better latency: the fsyncs and
commits of a batch are the fixed cost that bigger batches share.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeGuard

from storage import crypto
from storage.backends import Buffer, ShardBackend, put_many
from storage.catalogue import Manifest, SegmentEntry
from storage.codec import EncodedSegment, SegmentKey, encode_segment
from storage.engine import NS_OBJECT, Engine, settle_writes, share_key
from storage.errors import BackendUnavailable, StorageError
from storage.model import ObjectRef

log = logging.getLogger("twin.storage")

KiB = 1024
# Objects up to this size take the batched path. At 256 KiB (the store's INLINE
# threshold, where encoding moves off the loop) the per-object overhead this path
# saves (~0.5 ms) is already small next to encrypting, coding and writing 384 KiB
# of shares, while batching larger objects would only make batches heavier and
# their callers wait for each other longer.
SMALL_PUT_MAX = 256 * KiB
MAX_ITEMS = 256  # objects per batch: 1536 shares, a few ms of work
MAX_BYTES = 4 * 1024 * KiB  # plaintext bytes per batch: bounds memory and latency
# A batch up to this is encoded on the loop, larger ones in the CPU pool. A small
# object costs a fixed ~40-80 us to encode, so 256 of them held the loop 5-9 ms;
# but the hop to the pool and back costs ~0.5 ms of waiting, which was most of a
# lone 4 KiB WebDAV PUT's encode step (issue 20). Eight objects hold the loop
# well under a millisecond.
INLINE_ITEMS = 8
INLINE_BYTES = 64 * KiB


@dataclass(slots=True)
class _Object:
    """One object of a batch as it goes through encode, placement and commit."""

    data: bytes
    future: asyncio.Future[ObjectRef]
    oid: str = ""
    sk: SegmentKey | None = None
    enc: EncodedSegment | None = None
    wrapped: bytes = b""
    used: set[str] = field(default_factory=set)  # backends holding or tried for a share
    placed: dict[int, str] = field(default_factory=dict)  # share index -> backend name
    failed: builtins.list[int] = field(default_factory=list)  # shares still to place
    written: builtins.list[tuple[ShardBackend, str]] = field(default_factory=list)
    error: BaseException | None = None


def _encode_all(objs: Sequence[_Object], master: bytes) -> None:
    """Encode every object and wrap its key: pure CPU work (the CPU pool's, but for a few)."""
    for o in objs:
        assert o.sk is not None
        o.enc = encode_segment(o.sk, o.data)
        o.wrapped = crypto.wrap_key(master, o.sk.key)


class SmallPuts:
    """The store-wide batcher of small puts (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.limit = min(SMALL_PUT_MAX, engine.segment_size)
        self._queue: deque[tuple[bytes, asyncio.Future[ObjectRef]]] = deque()
        self._flusher: asyncio.Task[None] | None = None

    def accepts(self, source: object) -> TypeGuard[bytes | bytearray | memoryview]:
        """True for bytes-like objects of 1..``limit`` bytes (empty ones have no shares)."""
        if isinstance(source, bytes | bytearray):
            return 0 < len(source) <= self.limit
        return isinstance(source, memoryview) and 0 < source.nbytes <= self.limit

    async def put(self, data: bytes | bytearray | memoryview) -> ObjectRef:
        """Store ``data`` as one object with the next batch; returns once it is visible."""
        # a bytearray or view is copied now: the caller may change it while we encode
        item = data if isinstance(data, bytes) else bytes(data)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ObjectRef] = loop.create_future()
        self._queue.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return await future

    async def drain(self) -> None:
        """Wait until everything queued so far is stored (or failed): for ``Store.close``."""
        if self._flusher is not None and not self._flusher.done():
            await asyncio.wait({self._flusher})

    # -- the flusher

    async def _flush(self) -> None:
        while self._queue:
            batch = self._take()
            if batch:
                await self._run(batch)

    def _take(self) -> builtins.list[_Object]:
        batch: builtins.list[_Object] = []
        total = 0
        while self._queue and len(batch) < MAX_ITEMS:
            data, future = self._queue[0]
            if batch and total + len(data) > MAX_BYTES:
                break
            self._queue.popleft()
            if future.done():  # the caller was cancelled while queued: store nothing
                continue
            batch.append(_Object(data, future))
            total += len(data)
        return batch

    async def _run(self, batch: builtins.list[_Object]) -> None:
        """Store one batch; every caller's future ends resolved, whatever happens."""
        engine = self.engine
        try:
            await self._store(batch)
        except BaseException as exc:
            # unexpected (a bug, or the loop shutting down): nothing of this batch was
            # committed, so every caller fails and its shares are orphans verify removes
            failure = exc if isinstance(exc, Exception) else StorageError("put cancelled")
            for o in batch:
                if not o.future.done():
                    o.future.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
            log.error("batch of %d small puts failed: %s", len(batch), exc)
        finally:
            engine.inflight.difference_update(o.oid for o in batch)

    async def _store(self, batch: builtins.list[_Object]) -> None:
        engine = self.engine
        n = engine.n
        # every id, key and nonce prefix of the batch from one read of the OS's CSPRNG
        size = 16 + crypto.KEY_BYTES + crypto.PREFIX_BYTES
        randomness = os.urandom(size * len(batch))
        for pos, o in enumerate(batch):
            r = randomness[pos * size:(pos + 1) * size]
            o.oid = r[:16].hex()
            o.sk = SegmentKey(r[16:16 + crypto.KEY_BYTES], r[16 + crypto.KEY_BYTES:],
                              r[:16], 0, True, engine.k, n)
        engine.inflight.update(o.oid for o in batch)
        if len(batch) <= INLINE_ITEMS and sum(len(o.data) for o in batch) <= INLINE_BYTES:
            _encode_all(batch, engine.master_key)
        else:
            await asyncio.get_running_loop().run_in_executor(engine.cpu, _encode_all, batch,
                                                             engine.master_key)

        # a backend marked down gets no share while enough others are up (``enough_up``)
        skip_down = engine.enough_up((b for b in engine.backends if b.name not in engine.draining),
                                     engine.write_quorum)
        first: dict[ShardBackend, builtins.list[tuple[_Object, int]]] = {}
        for o in batch:
            for i, backend in enumerate(engine.placement_order(o.oid)[:n]):
                o.used.add(backend.name)
                if skip_down and engine.monitor.no_writes(backend.name):
                    o.failed.append(i)  # down: straight to a spare below, no waiting on it
                else:
                    first.setdefault(backend, []).append((o, i))
        # every share has an up backend: the rows are committed while the shares are
        # written (``Catalogue.insert_early``), the catalogue's sync beside the backends'
        created = time.time()
        planned: dict[str, builtins.list[str]] = {}
        early: asyncio.Future[None] | None = None
        if not any(o.failed for o in batch):
            for o in batch:
                planned[o.oid] = [b.name for b in engine.placement_order(o.oid)[:n]]
            early = asyncio.ensure_future(engine.catalogue.insert_early(
                [self._manifest(o, planned[o.oid], created) for o in batch]))
        try:
            await self._place(batch, first)
        except BaseException:
            if early is not None:  # its rows may be committed: decided by their shares
                early.add_done_callback(_retrieved)
                engine.unsettled_owed = True
                engine.repair_wanted.set()
            raise
        early_error: Exception | None = None
        if early is not None:
            try:
                await early
            except Exception as exc:  # rolled back: no row of the batch is there
                early_error = exc

        manifests: builtins.list[Manifest] = []
        fixes: builtins.list[tuple[str, SegmentEntry]] = []
        keep: builtins.list[_Object] = []
        drop: builtins.list[_Object] = []  # early rows to remove again
        for o in batch:
            assert o.enc is not None
            placement = [o.placed.get(i, "") for i in range(n)]
            try:
                engine.check_placed(o.oid, 0, len(o.placed))
            except BackendUnavailable as exc:
                o.error = exc
            else:
                if len(o.placed) < n:
                    engine.note_degraded(o.oid)
                if o.future.done():  # cancelled meanwhile: do not make it visible
                    o.error = asyncio.CancelledError()
                elif early is None:
                    manifests.append(self._manifest(o, placement, created))
                elif early_error is not None:
                    o.error = early_error
                elif placement != planned[o.oid]:  # a spare took a share, or none did
                    fixes.append((o.oid, SegmentEntry(placement, o.enc.hashes)))
            if o.error is None:
                keep.append(o)
            elif early is not None and early_error is None:
                drop.append(o)
        try:
            if early is None:
                await engine.catalogue.insert_many(manifests)
            else:
                await engine.catalogue.fix_placement(fixes)
        except Exception as exc:
            for o in keep:
                o.error = exc
            if early is not None:
                drop.extend(keep)
            keep = []
        for o in drop:  # before their callers hear of it: a failed put leaves no row
            try:
                await engine.catalogue.remove(o.oid)
            except Exception as exc:  # left unsettled: decided by its shares later
                log.warning("early row of failed put %s not removed: %s", o.oid, exc)
                engine.unsettled_owed = True
        for o in batch:
            if o.error is None and not o.future.done():
                o.future.set_result(ObjectRef(o.oid, len(o.data)))
            elif o.error is not None and not o.future.done():
                o.future.set_exception(o.error)
        log.debug("stored a batch of %d small objects (%d failed)", len(keep),
                  len(batch) - len(keep))

        failed = [w for o in batch if o.error is not None for w in o.written]
        lost = [o for o in keep if o.future.cancelled()]  # committed, but nobody has the ref
        for o in lost:
            await engine.catalogue.remove(o.oid)  # the row before its shares
            failed.extend(o.written)
        if early is not None and early_error is None:
            engine.catalogue.settle([o.oid for o in keep if not o.future.cancelled()])
        if failed:
            await engine.discard(failed)

    async def _place(self, batch: builtins.list[_Object],
                     first: dict[ShardBackend, builtins.list[tuple[_Object, int]]]) -> None:
        """Write every share of ``first``, then each share whose backend failed (or was
        down) to a spare the object does not use yet, until none is left to try."""
        engine = self.engine
        await self._write(first)
        while True:
            retry: dict[ShardBackend, builtins.list[tuple[_Object, int]]] = {}
            for o in batch:
                still: builtins.list[int] = []
                for i in o.failed:
                    spares = [b for b in engine.spares(o.used)
                              if not engine.monitor.no_writes(b.name)]
                    if spares:
                        o.used.add(spares[0].name)
                        retry.setdefault(spares[0], []).append((o, i))
                    else:
                        still.append(i)  # no backend left to try: stays unplaced
                o.failed = still
            if not retry:
                break
            await self._write(retry)

    def _manifest(self, o: _Object, placement: builtins.list[str], created: float) -> Manifest:
        engine = self.engine
        assert o.sk is not None and o.enc is not None
        return Manifest(o.oid, len(o.data), created, engine.k, engine.n, engine.segment_size,
                        o.wrapped, o.sk.prefix, [SegmentEntry(placement, o.enc.hashes)], 1)

    async def _write(self, plan: dict[ShardBackend, builtins.list[tuple[_Object, int]]]
                     ) -> None:
        """One ``put_many`` per backend, in parallel; records where each share landed.

        As ``Engine.store_shares`` does for one segment (``settle_writes``): once every
        object of the plan has its write quorum durable, the slower backends get a
        grace and are then cut off, their shares left unplaced for the self-repair.
        Without it a backend that has just hung held every small put for its whole
        deadline (2 s, a flapping test)."""
        backends = list(plan)
        keys = {b: [share_key(NS_OBJECT, o.oid, 0, i) for o, i in plan[b]] for b in backends}
        items = {b: self._items(plan[b], keys[b]) for b in backends}
        for b in backends:  # before: a batch cut off by its deadline may still land
            for (o, _), key in zip(plan[b], keys[b], strict=True):
                o.written.append((b, key))
        tasks = {asyncio.create_task(self._put_many(b, items[b])): b for b in backends}
        results: dict[ShardBackend, builtins.list[bool]] = {}

        def finished(t: asyncio.Task[builtins.list[bool]]) -> tuple[()]:
            results[tasks[t]] = t.result()
            return ()

        def cut_off(t: asyncio.Task[builtins.list[bool]]) -> None:
            for key in keys[tasks[t]]:
                self.engine.cut_off(tasks[t], key)

        await settle_writes(list(tasks), finished, lambda: self._quorate(plan, results),
                            cut_off)
        for backend in backends:
            oks = results.get(backend) or [False] * len(plan[backend])
            if not all(oks):
                self.engine.mark_failed(backend.name, "a batch write failed")
            for (o, i), ok in zip(plan[backend], oks, strict=True):
                if ok:
                    o.placed[i] = backend.name
                else:
                    o.failed.append(i)

    def _quorate(self, plan: dict[ShardBackend, builtins.list[tuple[_Object, int]]],
                 results: dict[ShardBackend, builtins.list[bool]]) -> bool:
        """Every object of ``plan`` has the write quorum placed, counting ``results``."""
        placed: dict[int, int] = {}
        for backend, oks in results.items():
            for (o, _), ok in zip(plan[backend], oks, strict=True):
                placed[id(o)] = placed.get(id(o), len(o.placed)) + ok
        quorum = self.engine.write_quorum
        return all(placed.get(id(o), len(o.placed)) >= quorum
                   for shares in plan.values() for o, _ in shares)

    async def _put_many(self, backend: ShardBackend,
                        items: builtins.list[tuple[str, Sequence[Buffer]]]) -> builtins.list[bool]:
        """``put_many`` within the deadline for the batch's bytes; all False past it (or on
        a failure), each key queued with ``Engine.may_land``: the batch may still land."""
        size = sum(len(p) for _, parts in items for p in parts)
        try:
            return await self.engine.call(backend, put_many(backend, items), size)
        except BackendUnavailable:
            for key, _ in items:
                self.engine.may_land(backend, key)
            return [False] * len(items)

    @staticmethod
    def _items(shares: builtins.list[tuple[_Object, int]], keys: builtins.list[str]
               ) -> builtins.list[tuple[str, Sequence[Buffer]]]:
        items: builtins.list[tuple[str, Sequence[Buffer]]] = []
        for (o, i), key in zip(shares, keys, strict=True):
            assert o.enc is not None
            items.append((key, [o.enc.headers[i], o.enc.payloads[i]]))
        return items


def _retrieved(done: asyncio.Future[None]) -> None:
    """Take a finished early commit's outcome nobody awaits (no "never retrieved")."""
    if not done.cancelled():
        done.exception()

