"""Dispersed storage benchmark: one JSON line per figure on stdout.

Run standalone: ``.venv/bin/python bench/storage.py`` (``--quick`` for a smoke run).
Figures, all at 4-of-6 with 4 MiB segments on six local backends under
``bench/out/`` (the same disk as the data dir):

- put / get MiB/s of one 256 MiB object, and the CPU time (user + system, all
  threads) each costs per MiB: a figure that other work on a shared machine
  does not move, unlike the MiB/s; and as ratios to the raw disk
  (the same share bytes written to six files with fsync, and read back) and
  to the encode / decode pipeline alone in memory (both CPU cores);
- peak RSS of a fresh process that puts and gets a 1 GiB streamed object;
- 4 KiB objects per second, put and get, 64 concurrent callers;
- CPU microseconds per 4 KiB put at 20 concurrent callers (``--small-only``
  runs just these small-object figures);
- degraded (``--degraded-only`` runs just these): 4 MiB put and get seconds on
  six redis-servers with none hung, one hung (SIGSTOP: accepts connections,
  never answers; the first put after the fault, then the worst of the next
  ones) and one slow (+200 ms per request through a proxy); and 4 KiB puts per
  second on six 0-db servers against the same on six redis-servers;
- side by side with Tahoe-LAFS (``--vs-tahoe [--rounds N]`` runs just these):
  the same 4 MiB put/get with none hung, one hung and one slow, on the twin's
  store (six redis-servers) and on a local Tahoe-LAFS grid (six storage nodes,
  4 of 6, happy 5: bench/tahoe_grid.py, Tahoe installed into
  ``bench/.venv-tahoe`` on first use), the same fault on both in turn, round
  after round; one line per figure and round with both sides' seconds, the
  ratio tahoe/twin and each side's CPU seconds, then the medians. An op that
  takes over 120 s is reported as a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage import open_store  # noqa: E402
from storage.codec import SegmentKey, decode_segment, encode_segment  # noqa: E402

MiB = 1024 * 1024
SEG = 4 * MiB
K, N = 4, 6


def emit(figure: str, value: float, unit: str, **extra: object) -> None:
    print(json.dumps({"bench": "storage", "figure": figure, "value": round(value, 2),
                      "unit": unit, "k": K, "n": N, **extra}), flush=True)


def specs(root: Path) -> list[dict[str, str]]:
    return [{"name": f"b{i}", "kind": "local", "location": str(root / f"b{i}")}
            for i in range(N)]


def open_bench_store(root: Path):  # type: ignore[no-untyped-def]
    return open_store(root / "data", k=K, n=N, segment_size=SEG, backends=specs(root),
                      master_key=b"m" * 32, metadata_key=b"d" * 32)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def big_object(root: Path, size: int) -> tuple[float, float, float, float]:
    """put and get MiB/s, then put and get CPU milliseconds per MiB."""
    data = os.urandom(size)
    store = open_bench_store(root)
    await store.put(b"warm-up")
    t, c = time.perf_counter(), cpu_seconds()
    ref = await store.put(data)
    put = size / MiB / (time.perf_counter() - t)
    put_cpu = (cpu_seconds() - c) * 1000 / (size / MiB)
    got = 0
    t, c = time.perf_counter(), cpu_seconds()
    async for chunk in store.get(ref):
        got += len(chunk)
    get = size / MiB / (time.perf_counter() - t)
    get_cpu = (cpu_seconds() - c) * 1000 / (size / MiB)
    assert got == size
    await store.close()
    return put, get, put_cpu, get_cpu


def raw_disk(root: Path, size: int) -> tuple[float, float]:
    """The share bytes of ``size`` (x n/k) written to n files with fsync, and read back."""
    per_file = size * N // K // N
    block = os.urandom(SEG // K)
    root.mkdir(parents=True, exist_ok=True)

    def write(i: int) -> None:
        with open(root / f"raw{i}", "wb") as f:
            for _ in range(per_file // len(block)):
                f.write(block)
                f.flush()
                os.fdatasync(f.fileno())

    def read(i: int) -> None:
        with open(root / f"raw{i}", "rb") as f:
            while f.read(len(block)):
                pass

    with ThreadPoolExecutor(N) as ex:
        t = time.perf_counter()
        list(ex.map(write, range(N)))
        w = size / MiB / (time.perf_counter() - t)
        t = time.perf_counter()
        list(ex.map(read, range(N)))
        r = size / MiB / (time.perf_counter() - t)
    for i in range(N):
        (root / f"raw{i}").unlink()
    return w, r


def pipeline(size: int) -> tuple[float, float]:
    """encrypt + encode + frame (and back) of ``size`` bytes, in memory, on all cores."""
    plain = os.urandom(SEG)
    count = size // SEG
    keys = [SegmentKey(b"k" * 32, b"p" * 16, b"o" * 16, i, i == count - 1, K, N)
            for i in range(count)]
    with ThreadPoolExecutor(os.cpu_count() or 2) as ex:
        t = time.perf_counter()
        encoded = list(ex.map(lambda sk: encode_segment(sk, plain), keys[:8]))
        list(ex.map(lambda sk: encode_segment(sk, plain), keys))
        enc = size / MiB / (time.perf_counter() - t) * (count + 8) / count
        shares = {i: encoded[0].payloads[i] for i in range(K)}
        t = time.perf_counter()
        list(ex.map(lambda _: decode_segment(keys[0], SEG, dict(shares)), range(count)))
        dec = size / MiB / (time.perf_counter() - t)
    return enc, dec


def limited_put(store, sem: asyncio.Semaphore):  # type: ignore[no-untyped-def]
    """``store.put`` with at most as many callers at once as ``sem`` allows."""
    async def put(b: bytes):  # type: ignore[no-untyped-def]
        async with sem:
            return await store.put(b)
    return put


async def small_objects(root: Path, count: int, concurrency: int = 64) -> tuple[float, float]:
    store = open_bench_store(root)
    blobs = [os.urandom(4096) for _ in range(count)]
    sem = asyncio.Semaphore(concurrency)
    put = limited_put(store, sem)

    async def get(r) -> bytes:  # type: ignore[no-untyped-def]
        async with sem:
            return await store.read(r)

    await store.put(b"warm-up")
    t = time.perf_counter()
    refs = await asyncio.gather(*(put(b) for b in blobs))
    puts = count / (time.perf_counter() - t)
    t = time.perf_counter()
    got = await asyncio.gather(*(get(r) for r in refs))
    gets = count / (time.perf_counter() - t)
    assert got == blobs
    await store.close()
    return puts, gets


async def small_put_cpu(root: Path, count: int, concurrency: int = 20) -> tuple[float, float]:
    """CPU microseconds (user + system, every thread of the process) per 4 KiB put, and puts/s.

    Why a CPU figure: SMTP delivery stores every message as one small put, and
    the twin must keep up with a bare aiosmtpd sink on the same 2 cores; the CPU
    each put costs is what bounds that, and unlike a rate it is not moved much
    by whatever else runs on a shared machine. 20 callers, as 20 SMTP sessions.
    """
    store = open_bench_store(root)
    blobs = [os.urandom(4096) for _ in range(count)]
    put = limited_put(store, asyncio.Semaphore(concurrency))

    await asyncio.gather(*(put(os.urandom(4096)) for _ in range(concurrency)))  # warm-up
    t, c = time.perf_counter(), cpu_seconds()
    refs = await asyncio.gather(*(put(b) for b in blobs))
    elapsed, cpu = time.perf_counter() - t, cpu_seconds() - c
    assert await store.read(refs[-1]) == blobs[-1]
    await store.close()
    return cpu * 1e6 / count, count / elapsed


CHILD = """
import asyncio, sys, random
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from bench.storage import open_bench_store
size = int(sys.argv[3])

async def stream():
    rng = random.Random(1)
    left = size
    while left:
        n = min(1 << 20, left)
        yield rng.randbytes(n)
        left -= n

async def main():
    store = open_bench_store(Path(sys.argv[2]))
    ref = await store.put(stream())
    got = 0
    async for chunk in store.get(ref):
        got += len(chunk)
    assert got == size
    await store.close()
    status = open("/proc/self/status").read()
    print(next(l.split()[1] for l in status.splitlines() if l.startswith("VmHWM")))

asyncio.run(main())
"""


def peak_rss(root: Path, size: int) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(root), str(size)],
                         check=True, capture_output=True, text=True).stdout
    return int(out.strip()) / 1024  # KiB -> MiB


async def degraded(root: Path) -> None:
    """Seconds per 4 MiB put/get with 0 and 1 backend hung and 1 slow (see the doc)."""
    from tests.servers import DelayProxy, redis_servers, zdb_servers

    servers, rspecs = redis_servers(root / "redis")
    proxy = await DelayProxy(servers[0].port, 0.0).start()
    rspecs[0] = {**rspecs[0], "location": f"redis://127.0.0.1:{proxy.port}/0"}
    store = open_store(root / "data", k=K, n=N, segment_size=SEG, backends=rspecs,
                       master_key=b"m" * 32, metadata_key=b"d" * 32)
    data = os.urandom(4 * MiB)

    async def timed(op):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        result = await op
        return result, time.perf_counter() - started

    try:
        ref, put = await timed(store.put(data))
        _, get = await timed(store.read(ref))
        emit("degraded_none_put_s", put, "s", object_MiB=4, backends="6 redis")
        emit("degraded_none_get_s", get, "s", object_MiB=4)
        servers[1].hang()
        _, get = await timed(store.read(ref))
        _, first = await timed(store.put(data))
        puts = [(await timed(store.put(data)))[1] for _ in range(5)]
        emit("degraded_hung1_get_s", get, "s", object_MiB=4, target=1.5, before=20.0)
        emit("degraded_hung1_first_put_s", first, "s", object_MiB=4, target=3.0, before=20.5)
        emit("degraded_hung1_put_s", max(puts), "s", object_MiB=4, target=1.0, before=20.5,
             note="worst of the 5 puts after the first")
        servers[1].resume()
        while store.monitor.down:
            await asyncio.sleep(0.1)
        proxy.delay = 0.2
        await store.read(ref)
        _, get = await timed(store.read(ref))
        _, put = await timed(store.put(data))
        emit("degraded_slow1_get_s", get, "s", object_MiB=4, delay_ms=200)
        emit("degraded_slow1_put_s", put, "s", object_MiB=4, delay_ms=200)
    finally:
        await store.close()
        await proxy.close()
        servers.close()
    rates = {}
    for kind in ("redis", "zdb"):
        made = redis_servers(root / f"s-{kind}") if kind == "redis" \
            else zdb_servers(root / f"s-{kind}")
        st = open_store(root / f"data-{kind}", k=K, n=N, segment_size=SEG, backends=made[1],
                        master_key=b"m" * 32, metadata_key=b"d" * 32)
        try:
            blobs = [os.urandom(4096) for _ in range(400)]
            await st.put(blobs[0])
            started = time.perf_counter()
            for pos in range(0, len(blobs), 8):
                await asyncio.gather(*(st.put(b) for b in blobs[pos:pos + 8]))
            rates[kind] = len(blobs) / (time.perf_counter() - started)
        finally:
            await st.close()
            made[0].close()
    emit("zdb_small_put_per_s", rates["zdb"], "objects/s", object_KiB=4, concurrency=8,
         redis=round(rates["redis"]), ratio=round(rates["zdb"] / rates["redis"], 2),
         target_ratio=0.8)


# --- side by side with Tahoe-LAFS (--vs-tahoe) -----------------------------

OP_TIMEOUT = 120.0  # seconds: a put or get that takes longer is reported as a timeout
VS_FIGURES = ("none_put_s", "none_get_s", "hung1_get_s", "hung1_first_put_s", "hung1_put_s",
              "slow1_first_get_s", "slow1_get_s", "slow1_put_s")


@dataclass
class Op:
    """One timed put or get: seconds (None when it timed out or failed) and CPU seconds."""

    seconds: float | None
    cpu: float
    error: str | None = None
    result: Any = None


class Side(ABC):
    """The twin's store or the Tahoe grid, behind the same few calls."""

    name = ""
    last: tuple[Any, bytes] | None = None  # an object stored before the fault, and its bytes

    @abstractmethod
    async def put(self, data: bytes) -> Any:
        """Implemented by each side."""

    @abstractmethod
    async def get(self, ref: Any) -> bytes:
        """Implemented by each side."""

    @abstractmethod
    def hang(self) -> None:
        """Implemented by each side."""

    @abstractmethod
    def resume(self) -> None:
        """Implemented by each side."""

    @abstractmethod
    def slow(self, delay: float) -> None:
        """Implemented by each side."""

    @abstractmethod
    async def healthy(self) -> None:
        """Implemented by each side."""

    @abstractmethod
    def cpu(self) -> float:
        """Implemented by each side."""

    async def timed(self, op: Awaitable[Any], expect: bytes | None = None) -> Op:
        c, t = self.cpu(), time.perf_counter()
        try:
            result = await asyncio.wait_for(op, OP_TIMEOUT)
        except TimeoutError:
            return Op(None, self.cpu() - c, f"timeout after {OP_TIMEOUT:.0f} s")
        except Exception as exc:  # a failed op is a figure too
            return Op(None, self.cpu() - c, f"{type(exc).__name__}: {exc}"[:300])
        op_s, cpu = time.perf_counter() - t, self.cpu() - c
        if expect is not None and result != expect:
            return Op(None, cpu, "read back other bytes than were put")
        return Op(op_s, cpu, None, result)


class TwinSide(Side):
    """The twin's store on six redis-servers, the first behind a DelayProxy; it hangs
    the second. CPU: this process (the store, and the proxy) + the six redis-servers."""

    name = "twin"

    def __init__(self, store: Any, servers: Any, proxy: Any) -> None:
        self.store, self.servers, self.proxy = store, servers, proxy

    async def put(self, data: bytes) -> Any:
        return await self.store.put(data)

    async def get(self, ref: Any) -> bytes:
        return bytes(await self.store.read(ref))

    def hang(self) -> None:
        self.servers[1].hang()

    def resume(self) -> None:
        self.servers[1].resume()

    def slow(self, delay: float) -> None:
        self.proxy.delay = delay

    async def healthy(self) -> None:
        while self.store.monitor.down:
            await asyncio.sleep(0.1)

    def cpu(self) -> float:
        from bench.tahoe_grid import proc_cpu_seconds
        return cpu_seconds() + sum(proc_cpu_seconds(s.proc.pid) for s in self.servers.servers)


class TahoeSide(Side):
    """A Tahoe-LAFS grid (bench/tahoe_grid.py), used through its client node's web API;
    storage node 0 behind a DelayProxy, node 1 the one hung. CPU: the client node + the
    six storage nodes (not this process, which only sends HTTP and runs the proxy)."""

    name = "tahoe"

    def __init__(self, grid: Any, http: Any, proxy: Any) -> None:
        self.grid, self.http, self.proxy = grid, http, proxy

    async def put(self, data: bytes) -> Any:
        return await self.grid.put(self.http, data, OP_TIMEOUT)

    async def get(self, ref: Any) -> bytes:
        return bytes(await self.grid.get(self.http, ref, OP_TIMEOUT))

    def hang(self) -> None:
        self.grid.storage[1].hang()

    def resume(self) -> None:
        self.grid.storage[1].resume()

    def slow(self, delay: float) -> None:
        self.proxy.delay = delay

    async def healthy(self) -> None:
        await self.grid.wait_connected(self.http, timeout=OP_TIMEOUT)

    def cpu(self) -> float:
        return float(self.grid.cpu_seconds())


def blob() -> bytes:
    """4 MiB never put before (Tahoe's convergent encryption would find a repeat)."""
    return os.urandom(4 * MiB)


async def fault_case(side: Side, fault: str) -> dict[str, Op]:
    """One fault on one side: the ops timed, by figure name."""
    if fault == "none":
        data = blob()
        put = await side.timed(side.put(data))
        get = await side.timed(side.get(put.result), data) if put.seconds is not None \
            else Op(None, 0.0, "no put to read")
        if get.seconds is not None:
            side.last = (put.result, data)
        return {"none_put_s": put, "none_get_s": get}
    assert side.last is not None, "no object stored before the fault"
    ref, data = side.last
    if fault == "hung1":
        side.hang()
        try:
            # the order of degraded(): a get of an object whose shares include the
            # hung backend's, then the first put after the fault, then three more
            get = await side.timed(side.get(ref), data)
            first = await side.timed(side.put(blob()))
            later = [await side.timed(side.put(blob())) for _ in range(3)]
        finally:
            side.resume()
        t = time.perf_counter()
        await asyncio.wait_for(side.healthy(), OP_TIMEOUT)
        failed = [op for op in later if op.seconds is None]
        worst = failed[0] if failed else max(later, key=lambda op: op.seconds or 0.0)
        worst = Op(worst.seconds, sum(op.cpu for op in later) / len(later), worst.error,
                   round(time.perf_counter() - t, 2))  # result: seconds to see it back
        return {"hung1_get_s": get, "hung1_first_put_s": first, "hung1_put_s": worst}
    side.slow(0.2)
    try:
        first_get = await side.timed(side.get(ref), data)
        get = await side.timed(side.get(ref), data)
        put = await side.timed(side.put(blob()))
    finally:
        side.slow(0.0)
    return {"slow1_first_get_s": first_get, "slow1_get_s": get, "slow1_put_s": put}


def vs_line(figure: str, twin: Op, tahoe: Op, **extra: object) -> dict[str, object]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 3)
    line: dict[str, object] = {
        "bench": "storage", "figure": f"vs_tahoe_{figure}", **extra,
        "twin_s": r(twin.seconds), "tahoe_s": r(tahoe.seconds),
        "ratio_tahoe_over_twin": round(tahoe.seconds / twin.seconds, 2)
        if twin.seconds and tahoe.seconds is not None else None,
        "twin_cpu_s": r(twin.cpu), "tahoe_cpu_s": r(tahoe.cpu),
        "object_MiB": 4, "k": K, "n": N}
    for side, op in (("twin", twin), ("tahoe", tahoe)):
        if op.error:
            line[f"{side}_error"] = op.error
    return line


def median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


async def vs_tahoe(root: Path, rounds: int) -> None:
    """4 MiB put/get with none hung, one hung and one slow: the twin's store on six
    redis-servers and a Tahoe-LAFS grid of six storage nodes, 4 of 6 (happy 5) both,
    the same fault on both in turn, round after round (see bench/tahoe_grid.py)."""
    import httpx

    from bench.tahoe_grid import TAHOE_VERSION, TahoeGrid
    from tests.servers import DelayProxy, redis_servers

    grid = TahoeGrid(root / "tahoe")  # installs Tahoe into bench/.venv-tahoe if missing
    servers, rspecs = redis_servers(root / "redis")
    twin_proxy = await DelayProxy(servers[0].port, 0.0).start()
    rspecs[0] = {**rspecs[0], "location": f"redis://127.0.0.1:{twin_proxy.port}/0"}
    store = open_store(root / "data", k=K, n=N, segment_size=SEG, backends=rspecs,
                       master_key=b"m" * 32, metadata_key=b"d" * 32)
    tahoe_proxy = await DelayProxy(grid.storage[0].port, 0.0).start()
    try:
        async with httpx.AsyncClient() as http:
            await asyncio.to_thread(grid.start, {0: tahoe_proxy.port})
            await grid.wait_connected(http)
            twin, tahoe = TwinSide(store, servers, twin_proxy), TahoeSide(grid, http, tahoe_proxy)
            for side in (twin, tahoe):  # warm-up: connections, first-use costs
                await side.get(await side.put(blob()))
            print(json.dumps({"bench": "storage", "figure": "vs_tahoe_setup",
                              "tahoe": TAHOE_VERSION, "rounds": rounds,
                              "op_timeout_s": OP_TIMEOUT, "shares": "4 of 6, happy 5",
                              "twin": "6 redis-servers, 4 MiB segments",
                              "tahoe_grid": "6 storage nodes, introducer, client node; "
                                            "default 128 KiB segments",
                              "cpu": "twin: bench process + redis-servers; tahoe: client "
                                     "+ storage nodes",
                              "uptime": uptime()}), flush=True)
            results: dict[str, list[tuple[Op, Op]]] = {f: [] for f in VS_FIGURES}
            for rnd in range(1, rounds + 1):
                load = os.getloadavg()[0]
                for fault in ("none", "hung1", "slow1"):
                    ours = await fault_case(twin, fault)
                    theirs = await fault_case(tahoe, fault)
                    for figure, op in ours.items():
                        results[figure].append((op, theirs[figure]))
                        extra: dict[str, object] = {"round": rnd, "load_1min": load}
                        if figure == "hung1_put_s":
                            extra.update(note="worst of the 3 puts after the first; cpu: "
                                              "their mean",
                                         twin_back_s=op.result,
                                         tahoe_back_s=theirs[figure].result)
                        if fault == "slow1":
                            extra["delay_ms"] = 200
                        print(json.dumps(vs_line(figure, op, theirs[figure], **extra)),
                              flush=True)
            for figure, pairs in results.items():
                summary: dict[str, object] = {"round": "median", "uptime": uptime()}
                ops: list[Op] = []
                for i, who in enumerate(("twin", "tahoe")):
                    secs = [x for x in (p[i].seconds for p in pairs) if x is not None]
                    cpus = [p[i].cpu for p in pairs]
                    errors = [p[i].error for p in pairs if p[i].error]
                    ops.append(Op(median(secs) if secs else None, median(cpus),
                                  f"{len(errors)} of {len(pairs)}: {errors[0]}"
                                  if errors else None))
                    if secs:
                        summary[f"{who}_range_s"] = [round(min(secs), 3), round(max(secs), 3)]
                print(json.dumps(vs_line(figure, ops[0], ops[1], **summary)), flush=True)
    finally:
        await tahoe_proxy.close()  # first: no new connection to a node being stopped
        await asyncio.to_thread(grid.stop)
        await store.close()
        await twin_proxy.close()
        servers.close()


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    ap.add_argument("--small-only", action="store_true",
                    help="only the 4 KiB object figures (small puts and gets)")
    ap.add_argument("--degraded-only", action="store_true",
                    help="only the degraded figures (redis-server and 0-db needed)")
    ap.add_argument("--vs-tahoe", action="store_true",
                    help="only the degraded figures side by side with Tahoe-LAFS "
                         "(installed into bench/.venv-tahoe on first use)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of --vs-tahoe (each: every fault, twin then Tahoe)")
    args = ap.parse_args()
    big = 32 * MiB if args.quick else 256 * MiB
    huge = 64 * MiB if args.quick else 1024 * MiB
    small = 300 if args.quick else 3000
    if args.vs_tahoe:  # both sides' data under /tmp/tahoe-bench-*, removed at the end
        vs_root = Path(tempfile.mkdtemp(prefix="tahoe-bench-"))
        try:
            asyncio.run(vs_tahoe(vs_root, 1 if args.quick else args.rounds))
        finally:
            shutil.rmtree(vs_root, ignore_errors=True)
        return
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="storage-", dir=out))
    try:
        if args.small_only:
            small_figures(root, small)
            return
        if args.degraded_only:
            asyncio.run(degraded(root / "degraded"))
            return
        put, get, put_cpu, get_cpu = asyncio.run(big_object(root / "big", big))
        disk_w, disk_r = raw_disk(root / "raw", big)
        enc, dec = pipeline(big)
        emit("put_MiBps", put, "MiB/s", object_MiB=big // MiB, target=250)
        emit("get_MiBps", get, "MiB/s", object_MiB=big // MiB, target=300)
        emit("put_cpu_ms_per_MiB", put_cpu, "ms/MiB", note="user+system CPU of the process")
        emit("get_cpu_ms_per_MiB", get_cpu, "ms/MiB", note="user+system CPU of the process")
        emit("load_average_1min", os.getloadavg()[0], "", note="shared machine: read with it")
        emit("raw_disk_write_fsync_MiBps", disk_w, "MiB/s",
             note="the same n/k share bytes to n files with fsync, per MiB of object")
        emit("raw_disk_read_MiBps", disk_r, "MiB/s")
        emit("pipeline_encode_MiBps", enc, "MiB/s", note="encrypt+zfec+hash in memory")
        emit("pipeline_decode_MiBps", dec, "MiB/s", note="join+decrypt in memory")
        emit("put_vs_raw_disk", put / disk_w, "ratio")
        emit("get_vs_raw_disk", get / disk_r, "ratio")
        emit("put_vs_pipeline", put / enc, "ratio")
        emit("get_vs_pipeline", get / dec, "ratio")
        shutil.rmtree(root / "big")
        emit("peak_rss_MiB", peak_rss(root / "rss", huge), "MiB", object_MiB=huge // MiB,
             target=120, note="put+get of a streamed object in a fresh process (VmHWM)")
        shutil.rmtree(root / "rss", ignore_errors=True)
        small_figures(root, small)
        asyncio.run(degraded(root / "degraded"))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def small_figures(root: Path, small: int) -> None:
    """4 KiB objects: puts and gets per second at 64 callers, CPU per put at 20."""
    puts, gets = asyncio.run(small_objects(root / "small", small))
    emit("small_put_per_s", puts, "objects/s", object_KiB=4, concurrency=64, target=600)
    emit("small_get_per_s", gets, "objects/s", object_KiB=4, concurrency=64)
    us, rate = asyncio.run(small_put_cpu(root / "small-cpu", small))
    emit("small_put_cpu_us", us, "us/put", object_KiB=4, concurrency=20, puts_per_s=round(rate),
         note="user+system CPU of the process over the put phase, per put")


if __name__ == "__main__":
    main()
