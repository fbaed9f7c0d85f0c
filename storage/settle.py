"""Early catalogue rows a crash left unsettled: kept if their shares landed, else removed.

Why they exist: a batch of small puts commits its manifests *while* its shares
are being written (``Catalogue.insert_early``), so the catalogue's sync and the
backends' syncs run at once instead of one after the other (issue 20: a lone
4 KiB WebDAV PUT waited for three syncs in turn). A put still returns only once
both are durable, and its ref is handed out only then, so nothing can reference
an object before its write quorum of shares is on disk. What a crash can leave
is a row whose shares never all landed: such a row is on the ``unsettled`` list
(written in the same transaction), and taken off it lazily once the put is done
(``Catalogue.settle``, with the next transaction).

``settle_unsettled`` decides each listed row by its shares: fewer than k good
shares in any segment (counting those on backends that are down) means the
object can never be read and its put never returned (it needs k+1), so the
row and the shares it has are removed; otherwise the object stays (a put that
returned, or one whose answer the crash took: an unreferenced object, as a
crash between a put and its caller's own commit always could leave), its
placement corrected to the shares found, and below n it goes on the degraded
list for the self-repair. Rows of puts running now (``Engine.inflight``) and
rows already settled in memory are left alone. ``maintain`` runs it when the
store opens with unsettled rows; ``verify`` and ``repair`` run it first.
"""

from __future__ import annotations

import asyncio
import logging

from storage.catalogue import SegmentEntry
from storage.codec import SegmentKey
from storage.engine import NS_OBJECT, Engine, share_key

log = logging.getLogger("twin.storage")


async def settle_unsettled(engine: Engine) -> tuple[int, int, int]:
    """Decide every unsettled row (see the module docstring); (kept, removed, undecided).

    A row whose shares are short of k only because a backend holding some is down
    is left undecided (``Engine.unsettled_owed`` stays set: tried again when the
    backends are back); below k even counting those, the object can never be read
    and could not have been stored by a put that returned (it needs k+1)."""
    catalogue = engine.catalogue
    kept = removed = undecided = 0
    skip = engine.inflight | catalogue.settling()
    for oid in await catalogue.unsettled():
        if oid in skip:
            continue
        m = await catalogue.load(oid)
        if m is None:
            catalogue.settle([oid])
            continue
        found: list[dict[int, str]] = []
        unknown: list[int] = []  # shares on a backend that did not answer: may be there
        for seg in range(m.segment_count):
            entry = m.entry(seg)
            sk = SegmentKey(b"", m.prefix, bytes.fromhex(m.id), seg,
                            seg == m.segment_count - 1, m.k, m.n)
            probes = await asyncio.gather(*(
                engine.probe_share(NS_OBJECT, m.id, sk, m.plain_len(seg), i, entry)
                for i in range(m.n)))
            found.append({i: entry.placement[i] for i, (payload, _) in enumerate(probes)
                          if payload is not None})
            unknown.append(sum(1 for i, (payload, _) in enumerate(probes)
                               if payload is None and entry.placement[i]
                               and engine.recently_failed(entry.placement[i])))
        if any(len(f) < m.k <= len(f) + u for f, u in zip(found, unknown, strict=True)):
            undecided += 1  # readable or not depends on a backend that is down: later
            continue
        if min(len(f) for f in found) < m.k:
            log.warning("object %s: its put never completed (a crash while its shares were "
                        "written): removed", oid)
            await catalogue.remove(oid)
            await engine.delete_keys([(name, share_key(NS_OBJECT, oid, seg, i))
                                      for seg, f in enumerate(found) for i, name in f.items()])
            removed += 1
            continue
        if m.segment_count == 1 and len(found[0]) < m.n:  # early rows are one segment
            entry = m.entry(0)
            await catalogue.fix_placement([(oid, SegmentEntry(
                [entry.placement[i] if i in found[0] else "" for i in range(m.n)],
                entry.hashes))])
            engine.note_degraded(oid)
        catalogue.settle([oid])
        kept += 1
    engine.unsettled_owed = undecided > 0
    if kept or removed or undecided:
        log.info("unsettled objects after a crash: %d kept, %d removed, %d undecided",
                 kept, removed, undecided)
    return kept, removed, undecided
