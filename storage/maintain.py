"""Self-repair while the twin serves: owed repairs, left-over shares, the scrub.

``maintain`` waits on the engine's ``repair_wanted`` (set when a put stores an
object below n shares, when a put leaves shares on a backend that was down, and
when the health monitor sees every backend up again) and on the scrub timer:

- catalogue rows a crash left unsettled are decided by their shares
  (``storage.settle``);
- the objects on the catalogue's degraded list are repaired (``repair_queued``),
  a page at a time, once no backend is down;
- shares that writes which failed, were cut off or missed their deadline may
  have left behind (``Engine.orphans_left``: such a write can still land after
  the put or repair went on without it) are deleted, except those the catalogue
  places there since (a repair may have put that very share back);
- every ``scrub_interval`` seconds the whole store is checked and repaired
  (``repair.repair``) and orphan shares removed (``repair.remove_orphans``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from storage.engine import NS_OBJECT, Engine, parse_share_key
from storage.errors import StorageError
from storage.repair import remove_orphans, repair, repair_queued
from storage.settle import settle_unsettled

log = logging.getLogger("twin.storage")


async def maintain(engine: Engine, scrub_interval: float = 0.0) -> None:
    """Keep redundancy up while serving, until cancelled.

    Repairs the objects stored below n shares once no backend is down,
    removes the shares failed puts left on backends that were down, and
    every ``scrub_interval`` seconds (0: never) checks and repairs the whole
    store (``repair``: a flushed or replaced backend is refilled)."""
    loop = asyncio.get_running_loop()
    next_scrub = loop.time() + scrub_interval if scrub_interval > 0 else None
    while True:
        wait = None if next_scrub is None else max(0.0, next_scrub - loop.time())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(engine.repair_wanted.wait(), wait)
        engine.repair_wanted.clear()
        try:
            if next_scrub is not None and loop.time() >= next_scrub:
                log.info("scrub: checking every object")
                report = await repair(engine)
                removed = await remove_orphans(engine)
                log.info("scrub: %d shares rebuilt, %d not restored, %d orphan shares "
                         "removed", report.shares_rebuilt, len(report.failures), removed)
                next_scrub = loop.time() + scrub_interval
            if engine.unsettled_owed:  # decides what it can with backends down
                await settle_unsettled(engine)
            if engine.monitor.down:
                continue  # Engine._health_changed wakes us when they are back
            if engine.orphans_left:
                left, engine.orphans_left = engine.orphans_left, []
                # a failed put's share is queued twice (by its write, by ``discard``)
                await engine.delete_keys(await _not_placed(engine, list(dict.fromkeys(left))))
            if engine.repair_owed:
                await _repair_owed(engine)
        except StorageError as exc:
            log.warning("self-repair: %s", exc)


async def _not_placed(engine: Engine, keys: list[tuple[str, str]]
                      ) -> list[tuple[str, str]]:
    """``keys`` less the shares the catalogue places there: a share cut off after
    the write quorum belongs to a stored object, and a repair may since have put
    that very share back on the same backend under the same key."""
    keep = []
    for name, key in keys:
        parsed = parse_share_key(key)
        if parsed is not None and parsed[0] == NS_OBJECT:
            _ns, oid, seg, i = parsed
            if oid in engine.inflight:
                engine.orphans_left.append((name, key))  # being written or deleted now
                continue
            m = await engine.catalogue.load(oid)
            if m is not None and seg < len(m.segments) \
                    and name in m.segments[seg].placement[i:i + 1]:
                continue
        keep.append((name, key))
    return keep


async def _repair_owed(engine: Engine) -> None:
    """Repair the catalogue's degraded list, a page at a time; what could not be
    made whole stays listed and is tried again after the next health change."""
    engine.repair_owed = False  # a put degraded meanwhile sets it again
    after, left = "", False
    while ids := await engine.catalogue.degraded_page(after):
        after = ids[-1]
        log.info("self-repair: %d objects below full redundancy", len(ids))
        whole = await repair_queued(engine, ids)
        await engine.catalogue.mark_whole(whole)
        left = left or len(whole) < len(ids)
    engine.repair_owed = engine.repair_owed or left

