"""Peer envelopes and remote content between two real twin processes.

Figures (one JSON line each): round-trip latency p50/p99 of a small signed
envelope (``ping``), envelopes per second with several in flight, MiB/s of a
256 MiB ``content.get``; and, as the ratios' base, the same on the same stack
without envelopes: a plain Starlette route on uvicorn + TLS (small POST
round trip, and a 256 MiB streamed GET).

The peer figures go through the twin's own client, which batches envelopes
in flight to one peer into shared POSTs (``core.peer.client``); the base sends
one POST per request, so under concurrency the ratio can exceed 1.

The requesting side runs in this process with the sending twin's own data dir
(``Service.open``, exactly what ``twin fetch`` does); the answering twin is a
real ``twin serve`` process. Run: ``.venv/bin/python bench/peer.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.twins import TwinProcess, twin_cli  # noqa: E402

MiB = 1024 * 1024
BIG = int(os.environ.get("BENCH_PEER_MIB", "256")) * MiB
PINGS = 1000
PARALLEL = 32
BURST = 4000


def emit(figure: str, value: float, unit: str, **extra: object) -> None:
    print(json.dumps({"bench": "peer", "figure": figure, "value": round(value, 3),
                      "unit": unit, **extra}), flush=True)


# -- the base: plain Starlette on uvicorn + TLS, same cert, same machine ------

def plain_server(port: int, data: str) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    block = os.urandom(MiB)

    async def echo(request: Request) -> Response:
        return Response(await request.body())

    async def blob(request: Request) -> StreamingResponse:
        async def gen():  # type: ignore[no-untyped-def]
            for _ in range(BIG // MiB):
                yield block
        return StreamingResponse(gen())

    app = Starlette(routes=[Route("/echo", echo, methods=["POST"]), Route("/blob", blob)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning",
                ssl_certfile=f"{data}/tls/cert.pem", ssl_keyfile=f"{data}/tls/key.pem")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def round_trips(call: Callable[[], Awaitable[None]]) -> dict[str, float]:
    """p50/p99 ms of ``call`` one at a time (after a warm-up), then calls/s, PARALLEL at once."""
    for _ in range(50):
        await call()
    times = []
    for _ in range(PINGS):
        t = time.perf_counter()
        await call()
        times.append(time.perf_counter() - t)
    sem = asyncio.Semaphore(PARALLEL)

    async def one() -> None:
        async with sem:
            await call()
    t = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(BURST)))
    return {"p50": statistics.median(times) * 1000,
            "p99": statistics.quantiles(times, n=100)[98] * 1000,
            "rps": BURST / (time.perf_counter() - t)}


async def bench_plain(url: str, size: int) -> dict[str, float]:
    import httpx

    out: dict[str, float] = {}
    async with httpx.AsyncClient(verify=False, timeout=60) as client:
        body = os.urandom(size)

        async def echo() -> None:
            await client.post(url + "/echo", content=body)
        out.update(await round_trips(echo))
        t = time.perf_counter()
        got = 0
        async with client.stream("GET", url + "/blob") as resp:
            async for chunk in resp.aiter_raw():
                got += len(chunk)
        out["mibps"] = got / MiB / (time.perf_counter() - t)
    return out


# -- the peer figures ---------------------------------------------------------

async def bench_peer(alice_data: Path, bob_data: Path) -> dict[str, float]:
    from core.service import Service

    out: dict[str, float] = {}
    bob = Service.open(bob_data)  # bob asks alice (a real running twin)
    try:
        payload = {"n": 0, "pad": b"x" * 200}

        async def ping() -> None:
            await bob.peer.request("alice", "ping", payload)
        out.update(await round_trips(ping))
        t = time.perf_counter()
        got = 0
        async for chunk in bob.peer.content_get("alice", "/bench/big.bin"):
            got += len(chunk)
        out["mibps"] = got / MiB / (time.perf_counter() - t)
        assert got == BIG, got
    finally:
        await bob.peer.stop()
        bob.close()
    return out


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        root = Path(tmp)
        alice = TwinProcess.create(root, "alice", sets=["peer.rate_per_minute=1000000"])
        bob = TwinProcess.create(root, "bob", phonebook=alice.phonebook)
        alice.start()
        big = root / "big.bin"
        with big.open("wb") as f:
            block = os.urandom(MiB)
            for _ in range(BIG // MiB):
                f.write(block)
        t = time.perf_counter()
        twin_cli(alice.data, "share", str(big), "--as", "/bench/big.bin", "--with", "bob",
                 timeout=900)
        emit("share_store_256MiB", BIG / MiB / (time.perf_counter() - t), "MiB/s",
             note="twin share --as: into the dispersed store via the running twin")
        big.unlink()
        port = free_port()
        plain = subprocess.Popen([sys.executable, __file__, "--plain", str(port),
                                  str(alice.data)])
        try:
            time.sleep(2)
            base = asyncio.run(bench_plain(f"https://127.0.0.1:{port}", 300))
            peer = asyncio.run(bench_peer(alice.data, bob.data))
        finally:
            plain.terminate()
            plain.wait()
            assert alice.proc is not None
            alice_peak = rss_mib(alice.proc.pid)
            alice.stop()
        for key, figure, unit in (("p50", "roundtrip_p50", "ms"),
                                  ("p99", "roundtrip_p99", "ms"),
                                  ("rps", f"envelopes_per_s_{PARALLEL}_in_flight", "1/s"),
                                  ("mibps", "content_get_256MiB", "MiB/s")):
            emit(figure, peer[key], unit, base=round(base[key], 3),
                 ratio=round(peer[key] / base[key], 3),
                 base_is="plain Starlette route on uvicorn+TLS, same size")
        emit("serving_twin_peak_rss", alice_peak, "MiB")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--plain":
        plain_server(int(sys.argv[2]), sys.argv[3])
    else:
        main()
