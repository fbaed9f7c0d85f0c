"""Changing the store's set of backends while it serves: add, mark draining, remove.

Why live: the twin holds the store (its local backends are locked by one
process), so ``twin storage backends add|drain|rm`` asks the running twin, and
its puts and gets must go on meanwhile. Placement is recorded per segment in
the catalogue, so a new backend changes where *new* shares go and nothing about
the old ones; a backend leaves only once no segment places a share on it.

A *draining* backend takes no new share (``Engine.placement_order`` and
``Engine.spares`` leave it out) and is read as before until ``storage.drain``
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
import logging
import time

from storage import crypto
from storage.backends import ShardBackend, check_usable, load, max_value
from storage.engine import Engine
from storage.erasure import block_size
from storage.errors import BackendRefused
from storage.health import HEALTH_LIMIT
from storage.model import BackendHealth
from storage.share import HEADER_BYTES

log = logging.getLogger("twin.storage")
INFLIGHT_WAIT = 600.0  # seconds to wait for puts begun before a backend was marked


async def wait_for_puts(engine: Engine, earlier: set[str]) -> None:
    """Puts begun before the mark may still place a share on the backend: let them end."""
    deadline = time.monotonic() + INFLIGHT_WAIT
    # polled: puts have no event to wait on, and this runs once per drain
    while earlier & engine.inflight and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


def active(engine: Engine) -> list[ShardBackend]:
    """The backends that take new shares, in configured order."""
    return [b for b in engine.backends if b.name not in engine.draining]


def _need_n(engine: Engine, left: int, what: str) -> None:
    if left < engine.n:
        raise BackendRefused(
            f"{what} would leave {left} backends taking new shares, fewer than "
            f"n={engine.n} (each segment's shares go to n distinct backends): add one "
            f"first (twin storage backends add NAME KIND LOCATION)")


async def add(engine: Engine, spec: dict[str, str]) -> BackendHealth:
    """Open ``spec`` (as ``storage.backends.load`` reads it), check that it works and
    start placing new shares on it; returns its health."""
    name = str(spec.get("name", ""))
    if name in engine.by_name:
        raise BackendRefused(f"a backend named {name!r} exists already")
    backend = load(spec, engine.data_dir, engine.io, engine.policy)
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
        share = HEADER_BYTES + block_size(engine.segment_size + crypto.TAG_BYTES, engine.k)
        if share > max_value(backend):
            raise BackendRefused(
                f"backend {name} stores values of at most {max_value(backend)} bytes, but "
                f"this store's shares take up to {share}: lower storage.segment_size")
    except BaseException:
        await backend.close()
        raise
    engine.attach(backend, health)
    log.info("backend %s (%s %s) added: new shares go to it", name, backend.kind,
             backend.location)
    return health


def mark_draining(engine: Engine, name: str) -> None:
    """Place no new share on ``name`` (kept across restarts); refused below n."""
    if name not in engine.by_name:
        raise BackendRefused(f"no backend named {name!r}")
    if name in engine.draining:
        return
    _need_n(engine, len(active(engine)) - 1, f"draining {name}")
    engine.set_draining(engine.draining | {name})
    log.info("backend %s is draining: no new shares go to it", name)


def unmark_draining(engine: Engine, name: str) -> None:
    """Take new shares on ``name`` again (a removal that turned out refused)."""
    if name in engine.draining:
        engine.set_draining(engine.draining - {name})


async def remove(engine: Engine, name: str) -> None:
    """Stop using ``name``: refused while the catalogue places any share on it."""
    backend = engine.by_name.get(name)
    if backend is None:
        raise BackendRefused(f"no backend named {name!r}")
    was_draining = name in engine.draining
    if not was_draining:  # no new share may land on it between the count and the removal
        _need_n(engine, len(active(engine)) - 1, f"removing {name}")
        mark_draining(engine, name)
        await wait_for_puts(engine, set(engine.inflight))
    held = await engine.catalogue.count_on(name)
    if held:
        if not was_draining:
            unmark_draining(engine, name)
        raise BackendRefused(
            f"backend {name} still holds {held} shares: move them first "
            f"(twin storage backends drain {name})")
    engine.detach(name)
    try:
        await backend.close()
    except Exception as exc:  # it is out of the store either way
        log.warning("backend %s: close failed: %s", name, exc)
    log.info("backend %s removed", name)
