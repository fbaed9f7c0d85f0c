"""The storage engine: shares onto backends and back, and the state they share.

``Engine`` holds what every part of the store works on: the backends (and
which are draining), the catalogue, the health monitor, the ids in flight, the
shares and repairs still owed, the keys, the thread pools and the memory
budget. Its methods are the share-level primitives the parts are built from:
``store_shares`` and ``write_stream`` (write), ``read_segment`` and
``probe_share`` (read), ``delete_keys``, ``placement_order`` and ``spares``
(placement), ``call`` (every backend call, with its deadline). ``Store``
(``storage.store``) is the façade over it; ``storage.smallput``,
``storage.repair``, ``storage.maintain``, ``storage.backup``,
``storage.backendset`` and ``storage.drain`` take an ``Engine``.

Write path, per segment: read (bounded) -> encrypt + erasure-code (CPU pool)
-> n shares written in parallel to n distinct backends (group-committed
there) -> once every segment is stored, one catalogue row makes the object
visible. Up to ``depth`` segments of one put are in flight, so segment i+1 is
encoded while segment i is being written, and a store-wide byte budget keeps
memory bounded however many puts run at once. Full segments are encoded into
pooled buffers (``BufferPool``) so that a put does not map, fault in and unmap
a fresh multi-MiB buffer per segment.

Read path, per segment: fetch k shares (primaries first: they need no
decoding), check header and hash, fetch more when one is missing, bad or slow
(``HEDGE``), decode from the first k good ones, then decrypt in the CPU pool;
the next segment is prefetched while the current one is handed to the caller
(``ObjectStream``).

Every backend call has a deadline that follows its size
(``storage.health.deadline``); a backend that misses it or fails is skipped
until a health probe passes (``BackendMonitor``). A put returns once the write
quorum of each segment is durable and the slower shares had a short grace; the
objects stored below n shares are listed in the catalogue with their rows (a
crash forgets none), and ``maintain`` repairs them when their backends are back
(and scrubs the whole store at its own pace).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
)
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

from storage import crypto
from storage.backends import ShardBackend, max_value
from storage.backends.local import CompactPolicy
from storage.catalogue import Catalogue, Manifest, SegmentEntry
from storage.codec import (
    EncodedSegment,
    SegmentKey,
    check_share,
    decode_segment,
    encode_filled,
    encode_segment,
    segment_buffer_size,
)
from storage.erasure import Buffer, block_size, check_kn
from storage.errors import (
    BackendUnavailable,
    DeleteRefused,
    IntegrityError,
    InvalidReference,
    NotEnoughShares,
    ObjectNotFound,
    StorageError,
)
from storage.health import STALL_CAP, BackendMonitor, deadline
from storage.memory import BufferPool, ByteBudget
from storage.model import BackendHealth, ObjectInfo, check_object_id
from storage.share import HEADER_BYTES
from storage.source import Filled, Segment, Source, chunks, with_last

log = logging.getLogger("twin.storage")
T = TypeVar("T")

MiB = 1024 * 1024
DEFAULT_SEGMENT = 4 * MiB
MIN_SEGMENT = 1024
MAX_SEGMENT = 256 * MiB
MAX_OBJECT = 1 << 40  # 1 TiB
INLINE = 256 * 1024  # segments up to this size are coded on the loop: a thread hop costs more
GRACE = 0.3  # seconds the shares beyond the write quorum may lag (at least)
HEDGE = 0.15  # seconds before a read asks one more backend than it needs
HEDGE_RATE = 64 * MiB  # ... plus the time a share of that size takes at this rate
STALL_CHECK = 0.05  # seconds before a call's deadline it looks for a shared stall
NS_OBJECT = "s"
NS_BACKUP = "b"
META_DRAINING = "draining"  # catalogue meta row: the draining backends, as JSON


class _Stall:
    """A call's deadline, stretched while the wait is not its backend's fault (``Engine.call``).

    Checked ``STALL_CHECK`` s before the deadline: when its backend has answered
    other calls since this one began (``BackendMonitor.answering``: the call waits
    its turn in a queue), or no other backend has answered since then while others
    have calls waiting (``BackendMonitor.stalled_together``: the machine stalls),
    the deadline moves on by its own length, up to ``STALL_CAP`` times itself in all.

    It holds the call's ``asyncio.Timeout`` (which holds the task) and lets go
    of it when the call ends (``end``), so the call's frame never refers to
    it. Held by the frame (a closure's cell), it closed a reference cycle
    through a cancelled write (frame -> timeout -> task -> its exception's
    traceback -> frame) that kept the write's buffers until the cyclic
    collector ran: a 2 GiB put's peak memory went from under 640 MiB to
    650-1,130 MiB (three runs)."""

    __slots__ = ("base", "end_by", "handle", "monitor", "name", "started", "timeout")

    def __init__(self, monitor: BackendMonitor, name: str, started: float,
                 base: float) -> None:
        self.monitor, self.name, self.started, self.base = monitor, name, started, base
        self.timeout: asyncio.Timeout | None = asyncio.timeout(base)
        when = self.timeout.when()
        assert when is not None
        self.end_by = when + (STALL_CAP - 1) * base
        self.handle = asyncio.get_running_loop().call_at(when - STALL_CHECK, self.check)

    def check(self) -> None:
        timeout = self.timeout
        when = None if timeout is None else timeout.when()
        if timeout is None or when is None or when >= self.end_by:
            return
        monitor = self.monitor
        if (monitor.answering(self.name, self.started)
                or monitor.stalled_together(self.name, self.started)):
            when = min(when + self.base, self.end_by)
            timeout.reschedule(when)
            self.handle = asyncio.get_running_loop().call_at(when - STALL_CHECK, self.check)

    def end(self) -> None:
        self.handle.cancel()
        self.timeout = None


async def settle_writes(tasks: Iterable[asyncio.Task[T]],
                        finished: Callable[[asyncio.Task[T]], Iterable[asyncio.Task[T]]],
                        quorate: Callable[[], bool] | None,
                        cut_off: Callable[[asyncio.Task[T]], None]) -> None:
    """Wait for share writes until all are done or, once ``quorate()`` holds, a grace.

    The grace lasts as long as the quorum took, at least ``GRACE``; the writes still
    running then are cancelled and handed to ``cut_off`` (mark the backend down and
    queue what it may still land as an orphan). ``finished`` sees each write that
    ends and returns the writes it starts in its place (a retry on a spare). One loop
    for a segment's shares (``Engine.store_shares``) and a batch of small objects
    (``storage.smallput``): without the cut-off a backend that has just hung holds
    every put for its whole deadline."""
    loop = asyncio.get_running_loop()
    started, cutoff = loop.time(), None
    pending = set(tasks)
    try:
        while pending:
            wait = None if cutoff is None else max(0.0, cutoff - loop.time())
            done, pending = await asyncio.wait(pending, timeout=wait,
                                               return_when=asyncio.FIRST_COMPLETED)
            if not done:
                break  # the grace is over
            for t in done:
                pending.update(finished(t))
            if quorate is not None and cutoff is None and quorate():
                cutoff = loop.time() + max(GRACE, loop.time() - started)
    finally:
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            for t in pending:
                cut_off(t)


def share_key(ns: str, object_id: str, segment: int, index: int) -> str:
    return f"{ns}/{object_id}/{segment}/{index}"


def parse_share_key(key: str) -> tuple[str, str, int, int] | None:
    parts = key.split("/")
    if len(parts) != 4 or parts[0] not in (NS_OBJECT, NS_BACKUP):
        return None
    try:
        check_object_id(parts[1])
        return parts[0], parts[1], int(parts[2]), int(parts[3])
    except (InvalidReference, ValueError):
        return None


def _encode_pooled(pool: BufferPool, sk: SegmentKey, chunk: Segment
                   ) -> tuple[EncodedSegment, bytearray | None]:
    """Encode into a pooled buffer, taken here on the CPU thread: a fresh one is
    zero-filled (~5 ms for a 4 MiB segment) and must not stall the event loop.
    A stream's segment is already in one (``Filled``): encoded where it lies."""
    if isinstance(chunk, Filled):
        return encode_filled(sk, chunk.buf, chunk.length), chunk.buf
    buf = pool.take(segment_buffer_size(len(chunk), sk.k, sk.n)) if len(chunk) > INLINE else None
    return encode_segment(sk, chunk, buf), buf


def _results(done: set[asyncio.Task[None]]) -> None:
    """Raise the first failure of ``done`` after retrieving every one (no task's
    exception is left unretrieved, so asyncio logs no "never retrieved")."""
    errors = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]
    if any(t.cancelled() for t in done):
        raise asyncio.CancelledError()
    if errors:
        raise cast(BaseException, errors[0])


class Engine:
    """The state the store's parts share and the share-level primitives they use.

    Built once per store by ``Store`` (the façade); see the module docstring."""

    def __init__(
        self,
        data_dir: Path,
        backends: list[ShardBackend],
        catalogue: Catalogue,
        *,
        k: int,
        n: int,
        segment_size: int,
        master_key: bytes,
        metadata_key: bytes,
        cpu: ThreadPoolExecutor,
        io: ThreadPoolExecutor,
        write_quorum: int | None = None,
        depth: int | None = None,
        policy: CompactPolicy | None = None,
    ) -> None:
        check_kn(k, n)
        if not MIN_SEGMENT <= segment_size <= MAX_SEGMENT:
            raise ValueError(f"segment size must be in {MIN_SEGMENT}..{MAX_SEGMENT}")
        names = [b.name for b in backends]
        if len(set(names)) != len(names):
            raise ValueError(f"backend names must be unique: {names}")
        if len(backends) < n:
            raise ValueError(f"{n} shares per segment need at least {n} backends, "
                             f"got {len(backends)}")
        self.data_dir = data_dir
        self.backends = backends
        self.by_name = {b.name: b for b in backends}
        self.catalogue = catalogue
        self.k, self.n, self.segment_size = k, n, segment_size
        self.master_key = crypto.check_key(master_key, "master key")
        self.metadata_key = crypto.check_key(metadata_key, "metadata key")
        self.write_quorum = min(n, k + 1) if write_quorum is None else write_quorum
        if not k <= self.write_quorum <= n:
            raise ValueError(f"write quorum must be in {k}..{n}")
        # segments of one put in flight: enough to overlap coding with writing, fewer
        # when segments are huge so that memory stays at a few tens of MiB per put
        self.depth = max(1, depth) if depth else max(2, min(4, 32 * MiB // segment_size))
        self.cpu, self.io = cpu, io
        self.budget = ByteBudget(max(4 * segment_size, 16 * MiB))
        self.buffers = BufferPool(segment_buffer_size(segment_size, k, n),
                                  self.budget.total // segment_size + 1)
        share_bytes = HEADER_BYTES + block_size(segment_size + crypto.TAG_BYTES, k)
        for b in backends:
            if share_bytes > max_value(b):
                raise ValueError(
                    f"segment size {segment_size} makes shares of {share_bytes} bytes, but "
                    f"backend {b.name} ({b.kind}) stores values of at most {max_value(b)} "
                    f"bytes: lower storage.segment_size to at most "
                    f"{(max_value(b) - HEADER_BYTES) * k - crypto.TAG_BYTES}")
        self.inflight: set[str] = set()  # ids being written or deleted: never orphans
        self.monitor = BackendMonitor(backends, k, self.write_quorum)
        # objects stored below n shares wait in the catalogue's degraded list (written
        # with their rows); this says the list may hold some, to wake ``maintain``
        self.repair_owed = self.catalogue.has_degraded()
        self.repair_wanted = asyncio.Event()
        if self.repair_owed:
            self.repair_wanted.set()  # owed before the last stop or crash
        # early rows a crash may have left without their shares (``storage.settle``)
        self.unsettled_owed = self.catalogue.has_unsettled()
        if self.unsettled_owed:
            self.repair_wanted.set()
        self.monitor.listeners.append(self._health_changed)
        self.orphans_left: list[tuple[str, str]] = []  # (backend, key) to delete
        self.closed = False  # set by ``Store.close`` as it begins
        self._check_master_key()
        self.policy = policy  # for local backends added later (``add_backend``)
        self.draining: set[str] = self._load_draining()  # take no new shares (``drain``)

    def _check_master_key(self) -> None:
        check = hashlib.blake2b(self.master_key, digest_size=16, person=b"twin-keycheck").digest()
        stored = self.catalogue.get_meta("key_check")
        if stored is None:
            self.catalogue.set_meta("key_check", check)
        elif stored != check:
            raise StorageError("the master key does not match this catalogue")

    # -- the backend set (``storage.backendset`` decides; these change the state)

    def _load_draining(self) -> set[str]:
        """The draining marks kept in the catalogue (names no longer configured are
        dropped)."""
        raw = self.catalogue.get_meta(META_DRAINING)
        try:
            names = json.loads(raw) if raw else []
        except ValueError:
            names = []
        return {n for n in names if isinstance(n, str) and n in self.by_name}

    def set_draining(self, names: set[str]) -> None:
        """Make ``names`` the draining backends, kept in the catalogue across restarts."""
        self.draining = names
        self.catalogue.set_meta(META_DRAINING, json.dumps(sorted(self.draining)).encode())

    def attach(self, backend: ShardBackend, health: BackendHealth) -> None:
        """Place new shares on ``backend`` too (opened and checked by the caller)."""
        self.backends = [*self.backends, backend]  # new lists: iterations in flight go on
        self.by_name = {**self.by_name, backend.name: backend}
        self.monitor.backends = [*self.monitor.backends, backend]
        self.monitor.cache[backend.name] = health

    def detach(self, name: str) -> None:
        """Forget backend ``name`` (no share is placed on it any more; the caller closes
        it): out of the lists, the health cache, the draining marks and the orphans."""
        self.backends = [b for b in self.backends if b.name != name]
        self.by_name = {n: b for n, b in self.by_name.items() if n != name}
        self.monitor.backends = [b for b in self.monitor.backends if b.name != name]
        self.monitor.cache.pop(name, None)
        self.monitor.down.pop(name, None)
        if name in self.draining:
            self.set_draining(self.draining - {name})
        self.orphans_left = [(b, k) for b, k in self.orphans_left if b != name]

    # -- helpers

    def check_open(self) -> None:
        if self.closed:
            raise StorageError("store is closed")

    async def run_cpu(self, size: int, fn: Callable[..., T], *args: Any) -> T:
        if size <= INLINE:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self.cpu, fn, *args)

    def mark_failed(self, name: str, why: str = "a call failed") -> None:
        self.monitor.failed(name, why)

    def cut_off(self, backend: ShardBackend, key: str) -> None:
        """A share write cancelled after the write quorum: the backend is marked down
        and the share, which may still land, is queued (``may_land``)."""
        self.mark_failed(backend.name, "slower than the write quorum")
        self.may_land(backend, key)

    def may_land(self, backend: ShardBackend, key: str) -> None:
        """A share write that did not succeed may land all the same: one cut off or past
        its deadline still waits in a local backend's group commit, or is on the wire
        to a resp one, and is written once the backend answers, after the put (or
        repair) went on without it. Its object's catalogue row does not place it, so
        deleting the object would leave it behind: it is queued for removal once the
        backend is back (``maintain`` keeps it if the catalogue places that share
        there by then: a repair put it back)."""
        self.orphans_left.append((backend.name, key))

    def recently_failed(self, name: str) -> bool:
        """Down: failed a call and no health probe has passed since."""
        return self.monitor.is_down(name)

    def note_degraded(self, oid: str) -> None:
        """An object stored below n shares: ``maintain`` repairs it (its catalogue row
        puts it on the degraded list; this only wakes the repair)."""
        self.repair_owed = True
        self.repair_wanted.set()

    def _health_changed(self) -> None:
        if not self.monitor.down and (self.repair_owed or self.orphans_left
                                      or self.unsettled_owed):
            self.repair_wanted.set()

    async def call(self, backend: ShardBackend, op: Awaitable[T], size: int) -> T:
        """``await op`` on ``backend`` within the deadline for ``size`` bytes.

        A miss or a failure marks the backend down (BackendUnavailable); a
        ``DeleteRefused`` does not (the backend is up, it only refuses). The
        deadline stretches, up to ``STALL_CAP`` times, while the call waits its
        turn behind others the backend answers, or the stall is every backend's
        (``_Stall``)."""
        limit = deadline(size)
        started = time.monotonic()
        monitor = self.monitor
        monitor.busy[backend.name] = monitor.busy.get(backend.name, 0) + 1
        stall = _Stall(monitor, backend.name, started, limit)
        try:
            assert stall.timeout is not None
            async with stall.timeout:  # no task per call, unlike wait_for
                result = await op
            now = monitor.answered[backend.name] = time.monotonic()
            monitor.observed(backend.name, now - started, size)
            return result
        except asyncio.CancelledError:  # not needed any more (a hedged read): it took
            monitor.observed_at_least(backend.name, time.monotonic() - started, size)
            raise
        except TimeoutError:
            waited = time.monotonic() - started
            self.mark_failed(backend.name, f"no answer in {waited:.1f} s")
            raise BackendUnavailable(backend.name, f"no answer in {waited:.1f} s") from None
        except DeleteRefused:
            raise
        except BackendUnavailable as exc:
            self.mark_failed(backend.name, exc.detail)
            raise
        finally:
            monitor.busy[backend.name] -= 1
            stall.end()

    def enough_up(self, backends: Iterable[ShardBackend], need: int) -> bool:
        """Whether ``need`` of ``backends`` take writes: only then is a backend marked
        down passed over by a write (``store_shares``, ``storage.smallput``).

        With fewer it is tried all the same: on a loaded machine "down" is often
        only "was slower than the quorum", and skipped, two such made every
        small put fail (5 of 6 needed) until a health probe passed."""
        return sum(1 for b in backends if not self.monitor.no_writes(b.name)) >= need

    def placement_order(self, object_id: str) -> list[ShardBackend]:
        """Backends in the order shares 0..n-1 go to; rotated per object to spread load.

        Draining backends are left out (appended last only if, configured by hand,
        fewer than n others are left: shares somewhere beat shares nowhere)."""
        pool = self.backends
        if self.draining:
            pool = [b for b in self.backends if b.name not in self.draining]
            if len(pool) < self.n:
                pool += [b for b in self.backends if b.name in self.draining]
        start = int(object_id[:8], 16) % len(pool)
        return pool[start:] + pool[:start]

    def segment_key(self, m: Manifest, key: bytes, seg: int) -> SegmentKey:
        return SegmentKey(key, m.prefix, bytes.fromhex(m.id), seg, seg == m.segment_count - 1,
                          m.k, m.n)

    async def discard(self, written: list[tuple[ShardBackend, str]]) -> int:
        """Remove the shares of a put that failed; returns how many are left behind.

        ``written`` holds every share a put *tried* (a write cut off by its deadline
        may still land), so the count is true. Shares on a backend that is down are
        queued in ``orphans_left`` and removed by ``maintain`` once it is back."""
        if not written:
            return 0
        todo = [(b, k) for b, k in dict.fromkeys(written) if not self.monitor.is_down(b.name)]
        later = [(b.name, k) for b, k in dict.fromkeys(written) if self.monitor.is_down(b.name)]
        results = await asyncio.gather(*(self.call(b, b.delete(k), 0) for b, k in todo),
                                       return_exceptions=True)
        later += [(b.name, k) for (b, k), r in zip(todo, results, strict=True)
                  if isinstance(r, BaseException)]
        self.orphans_left.extend(later)
        removed = sum(1 for r in results if r is True)
        log.warning("put failed: removed %d shares, %d may be left on backends that did not "
                    "answer (removed once they are back, or by verify --clean)",
                    removed, len(later))
        return len(later)

    async def write_stream(self, source: Source, ns: str, oid: str, key: bytes, prefix: bytes,
                           written: list[tuple[ShardBackend, str]]
                           ) -> tuple[int, list[SegmentEntry]]:
        oid_b = bytes.fromhex(oid)
        entries: dict[int, SegmentEntry] = {}
        tasks: set[asyncio.Task[None]] = set()
        size = index = 0
        with self.buffers.streaming():  # its buffers are dropped when the last put ends
            try:
                segments = chunks(source, self.segment_size, self.io, self._stream_buffer)
                async for chunk, last in with_last(segments):
                    size += len(chunk)
                    if size > MAX_OBJECT:
                        raise StorageError(f"object larger than {MAX_OBJECT} bytes")
                    sk = SegmentKey(key, prefix, oid_b, index, last, self.k, self.n)
                    held = await self.budget.acquire(len(chunk))
                    tasks.add(asyncio.create_task(
                        self._write_segment(ns, oid, sk, chunk, held, entries, written)))
                    del chunk
                    index += 1
                    while len(tasks) >= self.depth:
                        done, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                        _results(done)
                while tasks:
                    done, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                    _results(done)
            except BaseException:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        return size, [entries[i] for i in range(index)]

    async def _stream_buffer(self) -> bytearray:
        """An encode buffer to read a stream's next segment into (``source.Filled``):
        a pooled one, or a fresh one made on an I/O thread (zero-filled: off the loop)."""
        buf = self.buffers.pop()
        if buf is None:
            size = self.buffers.size
            buf = await asyncio.get_running_loop().run_in_executor(self.io, bytearray, size)
        return buf

    async def _write_segment(self, ns: str, oid: str, sk: SegmentKey, chunk: Segment, held: int,
                             entries: dict[int, SegmentEntry],
                             written: list[tuple[ShardBackend, str]]) -> None:
        try:
            enc, buf = await self.run_cpu(len(chunk), _encode_pooled, self.buffers, sk, chunk)
            del chunk
            order = self.placement_order(oid)[: self.n]
            placed = await self.store_shares(ns, oid, sk.segment, enc, list(range(self.n)),
                                             order, set(), written, early=self.write_quorum)
            self.check_placed(oid, sk.segment, len(placed))
            if len(placed) < self.n:
                self.note_degraded(oid)
            entries[sk.segment] = SegmentEntry([placed.get(i, "") for i in range(self.n)],
                                               enc.hashes)
            del enc
            self.buffers.give(buf)  # every share from it is durable: no reader is left
        finally:
            await self.budget.release(held)

    def spares(self, used: set[str]) -> list[ShardBackend]:
        """Backends a segment does not use yet, those that are down last (draining
        ones never: a share put there would only have to move again)."""
        return sorted((b for b in self.backends if b.name not in used
                       and b.name not in self.draining),
                      key=lambda b: self.recently_failed(b.name))

    def check_placed(self, oid: str, segment: int, placed: int) -> None:
        """BackendUnavailable below the write quorum; a warning below n."""
        if placed < self.write_quorum:
            raise BackendUnavailable(
                "*", f"only {placed} of {self.n} shares of segment {segment} of object {oid} "
                     f"could be stored (need {self.write_quorum})")
        if placed < self.n:
            log.warning("object %s segment %d stored with %d of %d shares; repair will "
                        "restore redundancy", oid, segment, placed, self.n)

    async def store_shares(self, ns: str, oid: str, seg: int, enc: EncodedSegment,
                           indices: list[int], targets: list[ShardBackend],
                           used: set[str], written: list[tuple[ShardBackend, str]],
                           early: int | None = None) -> dict[int, str]:
        """Write shares ``indices`` to ``targets``; returns where each one landed.

        A target that is down is replaced by an unused backend that is up (while
        there is one); a write that fails moves its share to the next spare at
        once (and is queued with ``may_land``: past its deadline it may still be
        written). With ``early`` (a put: the write quorum), once that many shares are
        durable the others get a grace (as long as the quorum took, at least
        ``GRACE``) and are then cut off: their backend is marked down and the
        object queued for repair, so a hung backend costs a put nothing after
        its first detection and at most the grace before it.
        """
        used = used | {b.name for b in targets}
        size = HEADER_BYTES + (len(enc.payloads[indices[0]]) if indices else 0)

        async def one(i: int, backend: ShardBackend) -> bool:
            key = share_key(ns, oid, seg, i)
            written.append((backend, key))  # before: a write cut off may still land
            try:
                await self.call(backend, backend.put(key, [enc.headers[i], enc.payloads[i]]),
                                size)
            except BackendUnavailable:
                self.may_land(backend, key)
                return False
            return True

        def spare() -> ShardBackend | None:
            for b in self.spares(used):
                if not self.monitor.no_writes(b.name):
                    used.add(b.name)
                    return b
            return None

        skip_down = early is not None and self.enough_up(targets, early)
        tasks: dict[asyncio.Task[bool], tuple[int, ShardBackend]] = {}
        for i, b in zip(indices, targets, strict=True):
            if self.monitor.no_writes(b.name):
                other = spare()
                if other is not None:
                    b = other
                elif skip_down:
                    continue  # enough backends are up: do not wait on this one
            tasks[asyncio.create_task(one(i, b))] = (i, b)
        placed: dict[int, str] = {}

        def finished(t: asyncio.Task[bool]) -> tuple[asyncio.Task[bool], ...]:
            i, b = tasks[t]
            if t.result():
                placed[i] = b.name
                return ()
            other = spare()
            if other is None:
                return ()
            retry = asyncio.create_task(one(i, other))
            tasks[retry] = (i, other)
            return (retry,)

        def cut_off(t: asyncio.Task[bool]) -> None:
            i, b = tasks[t]
            self.cut_off(b, share_key(ns, oid, seg, i))

        await settle_writes(list(tasks), finished,
                            None if early is None else lambda: len(placed) >= early, cut_off)
        return placed

    async def manifest(self, oid: str, start: int = 0, end: int | None = None) -> Manifest:
        m = await self.catalogue.load(oid, start, end)
        if m is None:
            raise ObjectNotFound(f"object {oid} not found")
        return m

    async def read_segment(self, m: Manifest, key: bytes, seg: int, ns: str = NS_OBJECT
                           ) -> bytes:
        """One plaintext segment. Share hashes are skipped at first, since the AEAD tag
        authenticates the whole ciphertext; if it fails, every share is checked in full
        and the bad ones replaced (so a corrupt share costs time, never correctness)."""
        sk = self.segment_key(m, key, seg)
        plain_len = m.plain_len(seg)
        good = await self.gather_shares(m, sk, plain_len, m.k, ns, full=False)
        try:
            return await self.run_cpu(plain_len, decode_segment, sk, plain_len, good)
        except IntegrityError:
            log.warning("segment %d of object %s failed authentication: checking every share",
                        seg, m.id)
        good = await self.gather_shares(m, sk, plain_len, m.k, ns, full=True)
        return await self.run_cpu(plain_len, decode_segment, sk, plain_len, good)

    async def gather_shares(self, m: Manifest, sk: SegmentKey, plain_len: int, want: int,
                            ns: str = NS_OBJECT, full: bool = True) -> dict[int, Buffer]:
        """The first ``want`` (>= k) good share payloads to arrive.

        Asks ``want`` backends (primaries first, down ones last); asks one more
        each time one fails, and each time ``HEDGE`` (plus the share's transfer
        time) passes without enough answers, so a hung or slow backend delays a
        read by that much at most. The answers not needed are cancelled."""
        entry = m.entry(sk.segment)
        slow = self.monitor.slow
        order = sorted((i for i in range(m.n) if entry.placement[i]),
                       key=lambda i: (self.recently_failed(entry.placement[i]),
                                      slow(entry.placement[i]), i >= m.k, i))
        hedge = HEDGE + block_size(plain_len + crypto.TAG_BYTES, m.k) / HEDGE_RATE
        loop = asyncio.get_running_loop()
        good: dict[int, Buffer] = {}
        pending: dict[asyncio.Task[memoryview | None], int] = {}
        todo = iter(order)

        def ask() -> bool:
            i = next(todo, None)
            if i is None:
                return False
            pending[asyncio.create_task(
                self.fetch_share(ns, m.id, sk, plain_len, i, entry, full))] = i
            return True

        for _ in range(want):
            ask()
        next_hedge = loop.time() + hedge
        try:
            while len(good) < want and pending:
                wait = max(0.0, next_hedge - loop.time())
                done, _ = await asyncio.wait(pending, timeout=wait,
                                             return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    ask()
                    next_hedge = loop.time() + hedge
                    continue
                for t in done:
                    i = pending.pop(t)
                    payload = t.result()
                    if payload is not None:
                        good[i] = payload
                    elif len(good) + len(pending) < want:
                        ask()
        finally:
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if len(good) < m.k:
            raise NotEnoughShares(m.id, sk.segment, len(good), m.k)
        return good

    async def fetch_share(self, ns: str, oid: str, sk: SegmentKey, plain_len: int, i: int,
                          entry: SegmentEntry, full: bool = True) -> memoryview | None:
        """One checked share payload, or None (missing, unreachable or corrupt)."""
        payload, _ = await self.probe_share(ns, oid, sk, plain_len, i, entry, full)
        return payload

    async def probe_share(self, ns: str, oid: str, sk: SegmentKey, plain_len: int, i: int,
                          entry: SegmentEntry, full: bool = True
                          ) -> tuple[memoryview | None, str]:
        """A checked share payload, or None and the reason it is not usable."""
        name = entry.placement[i]
        backend = self.by_name.get(name)
        if not name:
            return None, "not stored"
        if backend is None:
            return None, f"backend {name} is not configured"
        size = HEADER_BYTES + block_size(plain_len + crypto.TAG_BYTES, sk.k)
        try:
            data = await self.call(backend, backend.get(share_key(ns, oid, sk.segment, i)),
                                   size)
        except BackendUnavailable as exc:
            return None, str(exc)
        if data is None:
            log.info("share %d of segment %d of object %s missing on %s", i, sk.segment, oid,
                     name)
            return None, "missing"
        try:
            size = len(data) if full else 0  # a header check alone is quick: inline
            return await self.run_cpu(size, check_share, sk, plain_len, i, data,
                                      entry.hashes[i], full), ""
        except IntegrityError as exc:
            log.warning("%s on backend %s: treated as missing", exc, name)
            return None, str(exc)

    async def delete_keys(self, keys: list[tuple[str, str]]) -> int:
        failed = 0
        for pos in range(0, len(keys), 64):
            batch = [(b, k) for b, k in ((self.by_name.get(n), k) for n, k in keys[pos:pos + 64])
                     if b is not None]
            results = await asyncio.gather(*(self.call(b, b.delete(k), 0) for b, k in batch),
                                           return_exceptions=True)
            for (b, k), r in zip(batch, results, strict=True):
                if isinstance(r, BaseException):
                    failed += 1
                    self.orphans_left.append((b.name, k))
        if failed:
            log.warning("%d shares could not be deleted now; removed once their backends "
                        "answer (or by verify --clean)", failed)
        return failed

    async def iter_objects(self) -> AsyncIterator[ObjectInfo]:
        after = ""
        while True:
            page = await self.catalogue.page(after)
            for info in page:
                yield info
            if len(page) < 1000:
                return
            after = page[-1].id


    async def health(self) -> list[BackendHealth]:
        """Ask every backend now (each answer bounded); refreshes the cached health."""
        return await self.monitor.refresh()

    async def close(self) -> None:
        """Close the monitor, the catalogue, the backends and the pools (once)."""
        await self.monitor.close()
        await self.catalogue.close()
        for b in self.backends:
            with contextlib.suppress(Exception):
                await b.close()
        self.cpu.shutdown(wait=False)
        self.io.shutdown(wait=False)


class ObjectStream:
    """Awaitable (checks existence) and async-iterable (yields the bytes) view of a range."""

    def __init__(self, engine: Engine, oid: str, start: int, end: int | None) -> None:
        self._engine = engine
        self._oid = oid
        self._start = start
        self._end = end
        self._manifest: Manifest | None = None
        self._iter: AsyncIterator[bytes] | None = None

    async def _open(self) -> ObjectStream:
        if self._manifest is None:
            self._manifest = await self._engine.manifest(self._oid, self._start, self._end)
        return self

    def __await__(self) -> Generator[Any, None, ObjectStream]:
        return self._open().__await__()

    @property
    def size(self) -> int | None:
        """Object size once opened (awaited or iterated)."""
        return None if self._manifest is None else self._manifest.size

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._iter is None:
            self._iter = self._iterate()
        return self._iter

    async def aclose(self) -> None:
        """Stop early (client went away): cancels the segments being prefetched."""
        if self._iter is not None:
            await cast(AsyncGenerator[bytes, None], self._iter).aclose()

    async def _iterate(self) -> AsyncIterator[bytes]:
        await self._open()
        m = self._manifest
        assert m is not None
        end = m.size if self._end is None else min(self._end, m.size)
        start = min(self._start, end)
        if start >= end:
            return
        key = crypto.unwrap_key(self._engine.master_key, m.wrapped_key, m.id)
        segs = list(range(start // m.segment_size, (end - 1) // m.segment_size + 1))
        pending: deque[asyncio.Task[bytes]] = deque()
        nxt = iter(segs)
        try:
            for seg in nxt:
                pending.append(asyncio.create_task(self._engine.read_segment(m, key, seg)))
                if len(pending) >= 2:
                    break
            for seg in segs:
                data = await pending.popleft()
                following = next(nxt, None)
                if following is not None:
                    pending.append(asyncio.create_task(
                        self._engine.read_segment(m, key, following)))
                base = seg * m.segment_size
                lo, hi = max(start - base, 0), min(end - base, len(data))
                yield data if (lo, hi) == (0, len(data)) else data[lo:hi]
        finally:
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

