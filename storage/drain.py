"""Drain: move every share off one backend, online, resumable.

Why: a backend leaves the store (a disk retired, six directories on one disk
traded for real failure domains) only once no segment needs it. The drain marks
it draining (``storage.backendset``: no new share goes there, across restarts),
then walks the segments the catalogue still places on it and hands each to the
repair path (``repair.repair_segment`` with ``leaving``): a share that reads
back good is copied, one that does not is rebuilt from k others, and the old one
is deleted only after the new one is durable and in the catalogue.

The state is the catalogue itself: what is left is what it still places on the
backend, so an interrupted drain (Ctrl-C, a restart) resumes by running again;
``meta`` row ``drain:<name>`` keeps the count at the first start so progress is
told against the whole. Puts and gets go on meanwhile: puts that began before
the mark are waited for (they may still place a share there), then passes run
until nothing is left; a segment being put or deleted right then is left for
the next pass. When nothing is left the catalogue is backed up, so a restore
needs nothing from the drained backend.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from storage.backendset import mark_draining, wait_for_puts
from storage.backup import backup
from storage.catalogue import Manifest
from storage.engine import Engine
from storage.errors import BackendRefused, ObjectNotFound, StorageError
from storage.model import DrainProgress, RepairReport
from storage.repair import repair_segment

log = logging.getLogger("twin.storage")
PARALLEL = 8  # segments moved at once: overlaps reads, writes and the fsyncs they share
PAGE = 256  # segments asked of the catalogue at once
MAX_PASSES = 20  # passes without getting to zero (each one must make progress)


def _meta_key(name: str) -> str:
    return f"drain:{name}"


async def drain(engine: Engine, name: str, progress: Callable[[DrainProgress], None] | None
                ) -> DrainProgress:
    if name not in engine.by_name:
        raise BackendRefused(f"no backend named {name!r}")
    mark_draining(engine, name)
    raw = engine.catalogue.get_meta(_meta_key(name))
    left = await engine.catalogue.count_on(name)
    state = DrainProgress(name, left, left)
    if raw:
        state.resumed = True
        state.total = max(int(json.loads(raw).get("total", left)), left)
    else:
        engine.catalogue.set_meta(_meta_key(name), json.dumps({"total": left}).encode())
    started = time.monotonic()

    def report() -> None:  # each step: the listener decides how often to tell
        state.seconds = time.monotonic() - started
        if progress is not None:
            progress(state)

    report()
    await wait_for_puts(engine, set(engine.inflight))
    leaving = frozenset({name})
    for _ in range(MAX_PASSES):
        before = state.left
        failures = await _pass(engine, name, leaving, state, report)
        state.left = await engine.catalogue.count_on(name)
        state.failures = failures[:20]
        if state.left == 0:
            break
        if state.left >= before:  # no progress: a backend down, a segment lost, or busy
            if failures:
                break
            await asyncio.sleep(0.2)
    if state.left == 0:
        state.done = True
        engine.catalogue.set_meta(_meta_key(name), b"")
        try:
            engine.check_open()  # as Store.backup does: closed meanwhile is a warning
            await backup(engine)  # the newest backup needs nothing from the drained backend
        except StorageError as exc:
            log.warning("drain of %s: catalogue backup failed: %s", name, exc)
    report()
    log.info("drain of %s: %d shares moved (%.1f MiB) in %.1f s, %d left", name, state.moved,
             state.bytes_written / 2**20, state.seconds, state.left)
    return state


async def _pass(engine: Engine, name: str, leaving: frozenset[str], state: DrainProgress,
                report: Callable[[], None]) -> list[str]:
    """One walk over what the catalogue places on ``name``; returns what failed."""
    healthy = {h.name for h in await engine.health() if h.reachable and h.writable}
    failures: list[str] = []
    sem = asyncio.Semaphore(PARALLEL)
    after = ("", -1)

    async def one(m: Manifest, seg: int) -> None:
        async with sem:
            if m.id in engine.inflight:
                return  # being deleted (or written): the next pass sees what is left
            fix = RepairReport()
            try:
                written = await repair_segment(engine, m, seg, healthy, fix, leaving)
            except Exception as exc:  # one bad segment must not stop the others
                failures.append(f"{m.id}/{seg}: {exc}")
                return
            failures.extend(fix.failures)
            failures.extend(f"{oid}/{seg}: fewer than k good shares" for oid in fix.unrecoverable)
            if fix.shares_rebuilt:
                state.moved += 1
                state.left = max(0, state.left - 1)
                state.bytes_written += written
            report()

    while True:
        page = await engine.catalogue.segments_on(name, after, PAGE)
        if not page:
            break
        after = page[-1]
        tasks = []
        for oid in dict.fromkeys(oid for oid, _ in page):
            try:
                m = await engine.manifest(oid)
            except ObjectNotFound:
                continue  # deleted meanwhile
            tasks += [one(m, seg) for o, seg in page if o == oid]
        await asyncio.gather(*tasks)
    return failures
