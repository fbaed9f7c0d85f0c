"""A backend that flaps: hung for 5 s, up for 5 s, for a minute (issue 25).

Six real redis-servers; one is SIGSTOPped and resumed in turn while a client
puts and reads without pause. A flapping backend is the hard case for health
tracking: each time it comes back it is probed up, gets shares again, and then
hangs under calls already sent to it. No operation may wait on it for longer
than 1.5 s, and every read must return the bytes that were put.
"""

from __future__ import annotations

import asyncio
import os
import time

from tests.servers import Servers
from tests.storage.conftest import KiB, StoreFactory

FLAP = 5.0  # seconds hung, then as long up
RUN = 60.0  # seconds of flapping
LIMIT = 1.5  # seconds any one operation may take
PACE = 0.03  # seconds between a client's put+get pairs: ~1,000 pairs, ~350 MiB of shares
SEG = 256 * KiB


async def test_a_backend_flapping_every_5_s_blocks_no_operation_and_never_returns_wrong_data(
        make_store: StoreFactory, redises: tuple[Servers, list[dict[str, str]]]) -> None:
    servers, specs = redises
    store = make_store(segment_size=256 * KiB, specs=specs)
    maintain = asyncio.create_task(store.maintain())
    flapper = servers[2]
    stop = asyncio.Event()

    async def flap() -> int:
        flips = 0
        while not stop.is_set():
            flapper.hang()
            flips += 1
            await asyncio.sleep(FLAP)
            flapper.resume()
            await asyncio.sleep(FLAP)
        return flips

    stored: list[tuple[object, bytes]] = []
    times: list[tuple[float, str]] = []

    async def timed(what: str, op: object) -> object:
        started = time.perf_counter()
        result = await op  # type: ignore[misc]
        times.append((time.perf_counter() - started, what))
        return result

    flapping = asyncio.create_task(flap())
    try:
        end = time.monotonic() + RUN
        i = 0
        while time.monotonic() < end:
            size = (2 * SEG + 7, 16 * KiB, 900)[i % 3]  # streamed, and batched small puts
            data = os.urandom(size)
            ref = await timed(f"put {size}", store.put(data))
            stored.append((ref, data))
            old_ref, old = stored[(i * 7) % len(stored)]  # often one put before a hang
            got = await timed(f"get {len(old)}", store.read(old_ref))  # type: ignore[arg-type]
            assert got == old, "wrong data"
            i += 1
            await asyncio.sleep(PACE)
    finally:
        stop.set()
        flips = await flapping
        flapper.resume()
    worst, what = max(times)
    print(f"flapping {flips} times in {RUN:.0f} s: {len(times)} operations, slowest "
          f"{worst:.2f} s ({what}), median {sorted(times)[len(times) // 2][0]:.3f} s")
    assert flips >= RUN / (2 * FLAP) - 1
    assert len(times) >= 100, "too few operations to tell"
    assert worst <= LIMIT, f"{what} took {worst:.2f} s while a backend flapped"
    try:
        deadline = time.monotonic() + 15  # and then it all comes back to full redundancy
        while not (await store.verify()).healthy:
            assert time.monotonic() < deadline, "not repaired after the flapping stopped"
            await asyncio.sleep(0.5)
        for ref, data in stored:
            assert await store.read(ref) == data  # type: ignore[arg-type]
    finally:
        maintain.cancel()
        await asyncio.gather(maintain, return_exceptions=True)
        await store.close()
