"""Which backends the store uses right now, and how long it waits for each.

Why: a backend that accepts connections and never answers (a stopped
process, a dead disk behind a live server) used to cost every call its full
socket timeout plus a retry, forever. Here a backend that fails a call (an
error, or no answer within its deadline) is *down*: writes skip it, reads ask
it last, and a probe (``health()``, itself bounded) runs every
``PROBE_INTERVAL`` seconds until it passes. Listeners (the self-repair queue,
the mail filer) hear every change, so work waiting on storage resumes at once.

Deadlines follow the size of the call (``deadline``): a fixed 10 s was far too
long for a 4 KiB share and could be too short for a 64 MiB one on a slow link.

The cached health (``snapshot``) is what ``twin status`` reports, answered
without asking any backend: readable when at least k backends are reachable,
writable when at least the write quorum accepts writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from storage.backends import ShardBackend
from storage.model import BackendHealth

log = logging.getLogger("twin.storage")

PROBE_INTERVAL = 1.0  # seconds between probes of a down backend
REFRESH_INTERVAL = 10.0  # seconds between health refreshes of every backend (serving)
CALL_BASE = 2.0  # seconds any call may take, whatever its size
CALL_RATE = 4 * 1024 * 1024  # bytes/s a backend is expected to manage at the least
HEALTH_LIMIT = 5.0  # seconds any backend's health answer may take
ASK_DOWN = 0.5  # seconds ``refresh`` waits for a backend that is already down
SLOW_BY = 0.05  # seconds of extra latency over the typical backend that make one "slow"
STALL_CAP = 4.0  # a call's deadline stretches to this many times itself in a shared stall
_EWMA = 0.2  # weight of the newest call in a backend's latency average


def deadline(size: int, base: float = CALL_BASE, rate: int = CALL_RATE) -> float:
    """Seconds a call moving ``size`` bytes may take before its backend counts as down."""
    return base + size / rate


@dataclass(frozen=True)
class StorageSummary:
    """What ``twin status`` says about the store (from cached health)."""

    readable: bool
    writable: bool
    reachable: int
    accepting: int
    k: int
    write_quorum: int
    down: list[str]
    checked_at: float

    def to_json(self) -> dict[str, Any]:
        return {"readable": self.readable, "writable": self.writable,
                "reachable": self.reachable, "accepting_writes": self.accepting,
                "k": self.k, "write_quorum": self.write_quorum, "down": self.down,
                "checked_at": self.checked_at}


class BackendMonitor:
    """Up/down state of every backend, probes for the down ones, cached health."""

    def __init__(self, backends: Sequence[ShardBackend], k: int, write_quorum: int) -> None:
        self.backends = list(backends)
        self.k, self.write_quorum = k, write_quorum
        self.down: dict[str, str] = {}  # name -> why
        self.cache: dict[str, BackendHealth] = {}
        self.checked_at = 0.0
        self.listeners: list[Callable[[], None]] = []
        self._probe: asyncio.Task[None] | None = None
        self._closed = False
        self.latency: dict[str, float] = {}  # name -> average seconds per small call
        self.answered: dict[str, float] = {}  # name -> when a call last answered (``call``)
        self.busy: dict[str, int] = {}  # name -> its calls under way (``Engine.call``)

    # -- latency: a backend that answers, slowly, is asked after the others

    def observed(self, name: str, seconds: float, size: int) -> None:
        """A call to ``name`` moving ``size`` bytes took ``seconds`` (its transfer at a
        fast link's rate taken out, so big and small calls compare)."""
        overhead = max(0.0, seconds - size / (256 * 1024 * 1024))
        old = self.latency.get(name)
        self.latency[name] = overhead if old is None else old + _EWMA * (overhead - old)

    def observed_at_least(self, name: str, seconds: float, size: int) -> None:
        """A call cut off after ``seconds``: counted only if that is already slower
        than the backend's average (it would have taken longer still)."""
        overhead = max(0.0, seconds - size / (256 * 1024 * 1024))
        if overhead > self.latency.get(name, 0.0):
            self.observed(name, seconds, size)

    def stalled_together(self, name: str, since: float) -> bool:
        """Whether a call to ``name`` started at ``since`` waits in a stall every
        backend shares: other backends have calls under way, and none of them has
        answered any call since then.

        Why: the backends of one machine share its disk and CPU. When an fsync
        stalls or the machine is overloaded, every backend misses its deadline
        at once, and marking each down made every put fail ("0 of 6 shares")
        until a probe passed, for a stall that was no backend's fault. A
        backend that is slow while the others answer is down as before."""
        others = [n for n, count in self.busy.items() if count and n != name]
        return bool(others) and all(self.answered.get(n, 0.0) < since
                                    for n in self.answered if n != name)

    def answering(self, name: str, since: float) -> bool:
        """Whether ``name`` has answered another call since ``since``: it is alive,
        and a call of ``since`` still waiting waits its turn behind others.

        Why: calls wait in this process's queues (the local backends' threads, a
        connection's pipeline) before the backend sees them. Three hundred
        concurrent reads on a loaded 2-core machine queued 1,200 share reads for
        over 2.2 s, every backend answering all the while; each was marked down by
        its calls' deadlines, and reads failed with "2 of 4 needed" (CI of stop 34).
        A backend that answers nothing (hung) misses its deadline as before."""
        return self.answered.get(name, 0.0) >= since

    def slow(self, name: str) -> bool:
        """Answers SLOW_BY later than the typical (median) backend does."""
        mine = self.latency.get(name)
        if mine is None or len(self.latency) < 2:
            return False
        others = sorted(v for n, v in self.latency.items() if n != name)
        return mine > others[len(others) // 2] + SLOW_BY

    # -- state

    def is_down(self, name: str) -> bool:
        return name in self.down

    def no_writes(self, name: str) -> bool:
        """Down, or up and refusing writes (full, locked): writes go elsewhere."""
        if name in self.down:
            return True
        h = self.cache.get(name)
        return h is not None and not h.writable

    def failed(self, name: str, why: str) -> None:
        """A call to ``name`` failed: skip it until a probe passes."""
        if self._closed:
            return
        if name not in self.down:
            log.warning("backend %s is down (%s): skipped until a health probe passes",
                        name, why)
            self.down[name] = why
            self._notify()
        self._ensure_probe()

    def _up(self, name: str) -> None:
        if self.down.pop(name, None) is not None:
            log.info("backend %s is back", name)
            self._notify()

    def _notify(self) -> None:
        for listener in list(self.listeners):
            try:
                listener()
            except Exception:  # a listener's bug must not stop the store
                log.exception("storage health listener failed")

    # -- probes

    def _ensure_probe(self) -> None:
        if self._probe is not None and not self._probe.done():
            return
        try:
            self._probe = asyncio.get_running_loop().create_task(self._probe_loop(),
                                                                 name="storage-probe")
        except RuntimeError:
            self._probe = None  # no loop (a synchronous caller): the next call retries

    async def _probe_loop(self) -> None:
        while self.down and not self._closed:
            await asyncio.sleep(PROBE_INTERVAL)
            names = list(self.down)
            results = await asyncio.gather(*(self._timed_health(self._by_name(n))
                                             for n in names))
            for h in results:
                self._record(h)

    def _by_name(self, name: str) -> ShardBackend:
        return next(b for b in self.backends if b.name == name)

    def _record(self, h: BackendHealth) -> None:
        self.cache[h.name] = h
        if h.reachable:
            self._up(h.name)
        elif h.name not in self.down:
            self.failed(h.name, h.detail or "unreachable")

    async def _timed_health(self, b: ShardBackend) -> BackendHealth:
        started = time.monotonic()
        try:  # a backend's own health is bounded; a hung local disk might not be
            h = await asyncio.wait_for(b.health(), HEALTH_LIMIT)
        except TimeoutError:
            return BackendHealth(b.name, b.kind, b.location, False, None, 0,
                                 f"no health answer in {HEALTH_LIMIT:.0f} s")
        if h.reachable:  # how a backend asked last (slow) is seen to be fast again
            self.observed(b.name, time.monotonic() - started, 0)
        return h

    async def refresh(self) -> list[BackendHealth]:
        """Ask every backend now (each answer bounded by its own health timeout); one
        that is down only for ``ASK_DOWN`` seconds, then what is known of it stands.

        Asking a down backend at all brings it back at once when it is (a repair
        right after a namespace was recreated); waiting out its whole timeout made
        each caller (``twin storage status``, repair) pay for a hung backend (2.2 s
        for the status, issue 25): the probe loop keeps asking it every second."""
        async def ask(b: ShardBackend) -> BackendHealth:
            if b.name not in self.down:
                return await self._timed_health(b)
            try:
                return await asyncio.wait_for(self._timed_health(b), ASK_DOWN)
            except TimeoutError:
                return self._as_down(b)

        results = list(await asyncio.gather(*(ask(b) for b in self.backends)))
        for h in results:
            self._record(h)
        self.checked_at = time.time()
        return results

    def _as_down(self, b: ShardBackend) -> BackendHealth:
        cached = self.cache.get(b.name)
        if cached is not None and not cached.reachable:
            return cached  # what its last probe said
        return BackendHealth(b.name, b.kind, b.location, False, None,
                             cached.errors if cached else 0,
                             f"down: {self.down.get(b.name, 'no answer')}")

    async def refresh_loop(self, interval: float = REFRESH_INTERVAL) -> None:
        """Keep the cache fresh while serving; cancelled by the owner."""
        while not self._closed:
            try:
                await self.refresh()
            except Exception:
                log.exception("storage health refresh failed")
            await asyncio.sleep(interval)

    def summary(self) -> StorageSummary:
        """From the cache and the failures seen since: no backend is asked."""
        reachable = accepting = 0
        for b in self.backends:
            h = self.cache.get(b.name)
            ok = not self.is_down(b.name) and (h is None or h.reachable)
            reachable += ok
            accepting += ok and (h is None or h.writable)
        return StorageSummary(reachable >= self.k, accepting >= self.write_quorum, reachable,
                              accepting, self.k, self.write_quorum, sorted(self.down),
                              self.checked_at)

    async def close(self) -> None:
        self._closed = True
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._probe
