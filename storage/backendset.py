"""Changing the store's set of backends while it serves: add, mark draining, remove.

Why live: the twin holds the store (its local backends are locked by one
process), so ``twin storage backends add|drain|rm`` asks the running twin, and
its puts and gets must go on meanwhile. Placement is recorded per segment in
the catalogue, so a new backend changes where *new* shares go and nothing about
the old ones; a backend leaves only once no segment places a share on it.

A *draining* backend takes no new share (``Store.placement_order`` and
``Store.spares`` leave it out) and is read as before until ``storage.drain``
has moved its shares. The mark is kept in the catalogue (``meta`` row
``draining``), so it survives a restart and an interrupted drain resumes where
it stopped: what is left to move is what the catalogue still places there.

Refused here, whatever the caller: a name already used, a backend that cannot
be reached or can never hold shares, a segment size whose shares it cannot
store, and any change leaving fewer than n backends that take new shares.
The failure-domain rule is the caller's (``core.backends``): the store does not
know which backends share a disk or a machine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING

from storage import crypto
from storage.backends import ShardBackend, check_usable, load, max_value
from storage.erasure import block_size
from storage.errors import BackendRefused
from storage.health import HEALTH_LIMIT
from storage.model import BackendHealth
from storage.share import HEADER_BYTES

if TYPE_CHECKING:
    from storage.store import Store

log = logging.getLogger("twin.storage")
META_DRAINING = "draining"
INFLIGHT_WAIT = 600.0  # seconds to wait for puts begun before a backend was marked


async def wait_for_puts(store: Store, earlier: set[str]) -> None:
    """Puts begun before the mark may still place a share on the backend: let them end."""
    deadline = time.monotonic() + INFLIGHT_WAIT
    # polled: puts have no event to wait on, and this runs once per drain
    while earlier & store.inflight and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


def load_draining(store: Store) -> set[str]:
    """The draining marks kept in the catalogue (names no longer configured are dropped)."""
    raw = store.catalogue.get_meta(META_DRAINING)
    try:
        names = json.loads(raw) if raw else []
    except ValueError:
        names = []
    return {n for n in names if isinstance(n, str) and n in store.by_name}


def _save_draining(store: Store) -> None:
    store.catalogue.set_meta(META_DRAINING, json.dumps(sorted(store.draining)).encode())


def active(store: Store) -> list[ShardBackend]:
    """The backends that take new shares, in configured order."""
    return [b for b in store.backends if b.name not in store.draining]


def _need_n(store: Store, left: int, what: str) -> None:
    if left < store.n:
        raise BackendRefused(
            f"{what} would leave {left} backends taking new shares, fewer than "
            f"n={store.n} (each segment's shares go to n distinct backends): add one "
            f"first (twin storage backends add NAME KIND LOCATION)")


async def add(store: Store, spec: dict[str, str]) -> BackendHealth:
    """Open ``spec`` (as ``storage.backends.load`` reads it), check that it works and
    start placing new shares on it; returns its health."""
    name = str(spec.get("name", ""))
    if name in store.by_name:
        raise BackendRefused(f"a backend named {name!r} exists already")
    backend = load(spec, store.data_dir, store.io, store.policy)
    try:
        claim = getattr(backend, "claim", None)
        if claim is not None:
            claim()  # StoreInUse now, if another process holds that directory
        try:
            health = await asyncio.wait_for(backend.health(), HEALTH_LIMIT)
        except TimeoutError:
            raise BackendRefused(f"backend {name} gave no health answer in "
                                 f"{HEALTH_LIMIT:.0f} s") from None
        if not health.reachable:
            raise BackendRefused(f"backend {name} is not reachable: {health.detail}")
        if not health.writable:
            raise BackendRefused(f"backend {name} refuses writes: {health.detail}")
        try:
            await check_usable(backend)
        except ValueError as exc:
            raise BackendRefused(str(exc)) from exc
        share = HEADER_BYTES + block_size(store.segment_size + crypto.TAG_BYTES, store.k)
        if share > max_value(backend):
            raise BackendRefused(
                f"backend {name} stores values of at most {max_value(backend)} bytes, but "
                f"this store's shares take up to {share}: lower storage.segment_size")
    except BaseException:
        await backend.close()
        raise
    store.backends = [*store.backends, backend]  # new lists: iterations in flight go on
    store.by_name = {**store.by_name, name: backend}
    store.monitor.backends = [*store.monitor.backends, backend]
    store.monitor.cache[name] = health
    log.info("backend %s (%s %s) added: new shares go to it", name, backend.kind,
             backend.location)
    return health


def mark_draining(store: Store, name: str) -> None:
    """Place no new share on ``name`` (kept across restarts); refused below n."""
    if name not in store.by_name:
        raise BackendRefused(f"no backend named {name!r}")
    if name in store.draining:
        return
    _need_n(store, len(active(store)) - 1, f"draining {name}")
    store.draining = store.draining | {name}
    _save_draining(store)
    log.info("backend %s is draining: no new shares go to it", name)


def unmark_draining(store: Store, name: str) -> None:
    """Take new shares on ``name`` again (a removal that turned out refused)."""
    if name in store.draining:
        store.draining = store.draining - {name}
        _save_draining(store)


async def remove(store: Store, name: str) -> None:
    """Stop using ``name``: refused while the catalogue places any share on it."""
    backend = store.by_name.get(name)
    if backend is None:
        raise BackendRefused(f"no backend named {name!r}")
    was_draining = name in store.draining
    if not was_draining:  # no new share may land on it between the count and the removal
        _need_n(store, len(active(store)) - 1, f"removing {name}")
        mark_draining(store, name)
        await wait_for_puts(store, set(store.inflight))
    held = await store.catalogue.count_on(name)
    if held:
        if not was_draining:
            unmark_draining(store, name)
        raise BackendRefused(
            f"backend {name} still holds {held} shares: move them first "
            f"(twin storage backends drain {name})")
    store.backends = [b for b in store.backends if b.name != name]
    store.by_name = {n: b for n, b in store.by_name.items() if n != name}
    store.monitor.backends = [b for b in store.monitor.backends if b.name != name]
    store.monitor.cache.pop(name, None)
    store.monitor.down.pop(name, None)
    if name in store.draining:
        store.draining = store.draining - {name}
        _save_draining(store)
    store.orphans_left = [(b, k) for b, k in store.orphans_left if b != name]
    try:
        await backend.close()
    except Exception as exc:  # it is out of the store either way
        log.warning("backend %s: close failed: %s", name, exc)
    log.info("backend %s removed", name)
