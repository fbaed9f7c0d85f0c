"""Verify (find what is wrong) and repair (put it right) for the whole store.

Both read every share in full: a header can look fine over a rotten payload,
and only the hash over all of it tells. Repair needs no object key: zfec
rebuilds the missing shares from any k good ones without decrypting, and the
rebuilt share is bit-identical to the lost one (same hash as the catalogue).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from storage import erasure
from storage.backends import ShardBackend
from storage.backup import live_backup_ids
from storage.catalogue import Manifest, SegmentEntry
from storage.codec import EncodedSegment, SegmentKey, cipher_len
from storage.engine import NS_BACKUP, NS_OBJECT, Engine, parse_share_key
from storage.errors import ObjectNotFound
from storage.model import RepairReport, ShareProblem, VerifyReport
from storage.share import HEADER_BYTES, header_matching

log = logging.getLogger("twin.storage")
PARALLEL_OBJECTS = 4


def _segment_key(m: Manifest, seg: int) -> SegmentKey:
    # headers and hashes are checked without decrypting: the key is not needed
    return SegmentKey(b"", m.prefix, bytes.fromhex(m.id), seg, seg == m.segment_count - 1,
                      m.k, m.n)


async def _probe_segment(engine: Engine, m: Manifest, seg: int
                         ) -> tuple[dict[int, memoryview], dict[int, str]]:
    entry = m.entry(seg)
    sk = _segment_key(m, seg)
    plain = m.plain_len(seg)
    results = await asyncio.gather(*(engine.probe_share(NS_OBJECT, m.id, sk, plain, i, entry)
                                     for i in range(m.n)))
    good = {i: p for i, (p, _) in enumerate(results) if p is not None}
    bad = {i: why for i, (p, why) in enumerate(results) if p is None}
    return good, bad


async def _each_object(engine: Engine, sample: float | None,
                       work: Callable[[Manifest], Awaitable[None]]) -> int:
    sem = asyncio.Semaphore(PARALLEL_OBJECTS)
    tasks: set[asyncio.Task[None]] = set()
    count = 0

    async def run(oid: str) -> None:
        async with sem:
            try:
                m = await engine.manifest(oid)
            except ObjectNotFound:
                return  # deleted meanwhile
            await work(m)

    async for info in engine.iter_objects():
        if sample is not None and random.random() >= sample:  # noqa: S311 - sampling only
            continue
        count += 1
        tasks.add(asyncio.create_task(run(info.id)))
        if len(tasks) >= 4 * PARALLEL_OBJECTS:
            done, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome
    return count


async def verify(engine: Engine, sample: float | None, clean: bool) -> VerifyReport:
    if sample is not None and not 0.0 < sample <= 1.0:
        raise ValueError("sample must be a fraction in (0, 1]")
    report = VerifyReport()
    health = await engine.health()
    report.unreachable_backends = [h.name for h in health if not h.reachable]

    async def check(m: Manifest) -> None:
        fewest = m.n
        found: list[ShareProblem] = []
        for seg in range(m.segment_count):
            good, bad = await _probe_segment(engine, m, seg)
            report.shares_checked += m.n
            entry = m.entry(seg)
            for i, why in bad.items():
                found.append(ShareProblem(m.id, seg, i, entry.placement[i], why))
            fewest = min(fewest, len(good))
        if found and (m.id in engine.inflight or await engine.catalogue.info(m.id) is None):
            return  # deleted while we read it: its shares were going, not broken
        report.problems.extend(found)
        if fewest < m.n:
            report.degraded[m.id] = fewest
        if fewest < m.k:
            report.unreadable.append(m.id)

    report.objects_checked = await _each_object(engine, sample, check)
    if sample is None or clean:
        reachable = [b for b in engine.backends if b.name not in report.unreachable_backends]
        for backend in reachable:
            found, removed = await _orphans(engine, backend, clean)
            report.orphans += found
            report.orphans_removed += removed
    log.info("verify: %d objects, %d shares checked, %d problems, %d degraded, %d unreadable, "
             "%d orphans (%d removed)", report.objects_checked, report.shares_checked,
             len(report.problems), len(report.degraded), len(report.unreadable), report.orphans,
             report.orphans_removed)
    return report


async def remove_orphans(engine: Engine) -> int:
    """The orphan pass of ``verify(clean=True)`` alone, on the backends that are up: what
    the scrub runs after its repair, so failed puts leave nothing behind for long."""
    removed = 0
    for backend in engine.backends:
        if not engine.monitor.is_down(backend.name):
            removed += (await _orphans(engine, backend, True))[1]
    return removed


async def _orphans(engine: Engine, backend: ShardBackend, clean: bool) -> tuple[int, int]:
    """Shares no catalogue row (or live backup) refers to: left by crashed puts."""
    found = removed = 0
    backups = await live_backup_ids(engine)
    batch: list[tuple[str, str]] = []

    async def settle() -> None:
        nonlocal found, removed
        busy = set(engine.inflight)  # before asking the catalogue: see docs/verify race
        known = await engine.catalogue.known([oid for _, oid in batch])
        for key, oid in batch:
            ns = key[0]
            if oid in busy or (oid in known if ns == NS_OBJECT
                               else backups is None or oid in backups):
                continue
            if await backend.stat(key) is None:
                continue  # listed, then deleted with its object before we asked
            found += 1
            if clean:
                try:
                    await backend.delete(key)
                    removed += 1
                except Exception as exc:  # keep cleaning the rest
                    log.warning("cannot remove orphan %s on %s: %s", key, backend.name, exc)
        batch.clear()

    for ns in (NS_OBJECT, NS_BACKUP):
        async for key in backend.list(ns + "/"):
            parsed = parse_share_key(key)
            if parsed is None:
                continue
            batch.append((key, parsed[1]))
            if len(batch) >= 500:
                await settle()
        await settle()
    if found:
        log.info("backend %s: %d orphan shares%s", backend.name, found,
                 f", {removed} removed" if clean else "")
    return found, removed


async def repair(engine: Engine) -> RepairReport:
    report = RepairReport()
    healthy = {h.name for h in await engine.health() if h.reachable and h.writable}
    report.objects_checked = await _each_object(engine, None, _fixer(engine, healthy, report))
    _log_report(report)
    return report


async def repair_queued(engine: Engine, ids: list[str]) -> list[str]:
    """``repair`` of the objects ``ids`` only (the store's degraded list); returns those
    now whole: repaired without a failure, or deleted meanwhile."""
    report = RepairReport()
    healthy = {h.name for h in await engine.health() if h.reachable and h.writable}
    fix = _fixer(engine, healthy, report)
    whole = []
    for oid in ids:
        try:
            m = await engine.manifest(oid)
        except ObjectNotFound:
            whole.append(oid)  # deleted meanwhile
            continue
        report.objects_checked += 1
        before = len(report.failures), len(report.unrecoverable)
        await fix(m)
        if (len(report.failures), len(report.unrecoverable)) == before:
            whole.append(oid)
    _log_report(report)
    return whole


def _fixer(engine: Engine, healthy: set[str], report: RepairReport
           ) -> Callable[[Manifest], Awaitable[None]]:
    async def fix(m: Manifest) -> None:
        if m.id in engine.inflight:
            # a batch of small puts commits its rows while the shares are being written
            # (``Catalogue.insert_early``): its put places them, or lists it degraded
            return
        for seg in range(m.segment_count):
            try:
                await repair_segment(engine, m, seg, healthy, report)
            except Exception as exc:  # one bad segment must not stop the others
                log.error("repair of segment %d of object %s failed: %s", seg, m.id, exc)
                report.failures.append(f"{m.id}/{seg}: {exc}")

    return fix


def _log_report(report: RepairReport) -> None:
    log.info("repair: %d objects checked, %d segments repaired, %d shares rebuilt, "
             "%d unrecoverable, %d not restored", report.objects_checked,
             report.segments_repaired, report.shares_rebuilt, len(report.unrecoverable),
             len(report.failures))


async def repair_segment(engine: Engine, m: Manifest, seg: int, healthy: set[str],
                          report: RepairReport, leaving: frozenset[str] = frozenset()) -> int:
    """Rebuild the segment's missing or bad shares; with ``leaving`` (a drain), also move
    its good shares off those backends. Returns the share bytes written.

    A move is a copy when the share reads back good (only the leaving shares are read
    then), and the repair above when it does not: the share is rebuilt from k others.
    Either way the new shares are durable and the catalogue points at them before the
    old ones are deleted, so the segment never has fewer good shares than before."""
    entry = m.entry(seg)
    good: dict[int, memoryview] = {}
    bad: dict[int, str] = {}
    if leaving:
        good, bad = await _probe_leaving(engine, m, seg, leaving)
    if not leaving or bad:
        good, bad = await _probe_segment(engine, m, seg)
    moving = sorted(i for i in good if entry.placement[i] in leaving)
    if not bad and not moving:
        return 0
    if bad and len(good) < m.k:
        if m.id not in report.unrecoverable:
            report.unrecoverable.append(m.id)
        log.error("object %s segment %d has %d good shares, %d needed: cannot repair", m.id,
                  seg, len(good), m.k)
        return 0
    missing = sorted(bad)
    length = cipher_len(m.plain_len(seg))
    sk = _segment_key(m, seg)
    rebuilt = (await engine.run_cpu(length, erasure.rebuild, dict(good), m.k, m.n, missing)
               if missing else [])
    headers: list[bytes] = [b""] * m.n
    payloads: list[erasure.Buffer] = [b""] * m.n
    for i, payload in [*zip(missing, rebuilt, strict=True), *((i, good[i]) for i in moving)]:
        header = header_matching(sk.share_id(i, length), payload, entry.hashes[i])
        if header is None:
            raise ValueError(f"rebuilt share {i} does not match the catalogue hash")
        headers[i], payloads[i] = header, payload
    used = {entry.placement[i] for i in range(m.n)
            if entry.placement[i] and i not in bad and i not in moving}
    spare = [b for b in engine.placement_order(m.id) if b.name in healthy and b.name not in used
             and b.name not in leaving and b.name not in engine.draining]
    assigned: dict[int, ShardBackend] = {}
    for i in missing:  # a share goes back where it was when that backend is fine (or new)
        original = engine.by_name.get(entry.placement[i])
        if original is not None and original in spare:
            assigned[i] = original
            spare.remove(original)
    for i in [*missing, *moving]:
        if i not in assigned and spare:
            assigned[i] = spare.pop(0)
    todo = sorted(assigned)
    targets = [assigned[i] for i in todo]
    placed = await engine.store_shares(NS_OBJECT, m.id, seg, EncodedSegment(headers, payloads),
                                      todo, targets, used, [])
    new = SegmentEntry(list(entry.placement), list(entry.hashes))
    for i in [*missing, *moving]:
        if i in placed:
            new.placement[i] = placed[i]
    if new.placement != entry.placement:
        await engine.catalogue.set_placement(m.id, seg, new)
    # deleted while its shares were rebuilt: the delete went by the placement it read,
    # which had no share where one was written here (or the same backend, before it
    # was there): left alone, each stays an orphan (the soak found one)
    if placed and await engine.catalogue.info(m.id) is None:
        await engine.delete_keys([(placed[i], f"{NS_OBJECT}/{m.id}/{seg}/{i}")
                                 for i in placed])
        return 0
    moved = [(entry.placement[i], i) for i in placed if entry.placement[i] not in ("",
                                                                                   placed[i])]
    await engine.delete_keys([(name, f"{NS_OBJECT}/{m.id}/{seg}/{i}") for name, i in moved])
    report.segments_repaired += 1 if placed else 0
    report.shares_rebuilt += len(placed)
    unplaced = [i for i in [*missing, *moving] if i not in placed]
    if unplaced:
        report.failures.append(f"{m.id}/{seg}: shares {unplaced} not restored (no backend "
                               f"that is up accepted them)")
    (log.debug if leaving else log.info)("object %s segment %d: %s shares %s", m.id, seg,
                                         "moved" if leaving else "rebuilt", sorted(placed))
    return sum(HEADER_BYTES + len(payloads[i]) for i in placed)


async def _probe_leaving(engine: Engine, m: Manifest, seg: int, leaving: frozenset[str]
                         ) -> tuple[dict[int, memoryview], dict[int, str]]:
    """Only the segment's shares on ``leaving`` backends, each checked in full."""
    entry = m.entry(seg)
    sk = _segment_key(m, seg)
    plain = m.plain_len(seg)
    mine = [i for i in range(m.n) if entry.placement[i] in leaving]
    results = await asyncio.gather(*(engine.probe_share(NS_OBJECT, m.id, sk, plain, i, entry)
                                     for i in mine))
    good = {i: p for i, (p, _) in zip(mine, results, strict=True) if p is not None}
    bad = {i: why for i, (p, why) in zip(mine, results, strict=True) if p is None}
    return good, bad
