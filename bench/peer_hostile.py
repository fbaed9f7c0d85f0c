"""A hostile peer against a real twin: the figures of issue #15 items 3 and 5.

Figures (one JSON line each):

- ``cbor_bomb_answer``: seconds until the twin answers a ``ping`` whose 178
  payload bytes are a shared-reference bomb (tags 28/29, 2^20 items once
  re-encoded), its HTTP status and answer size, and the slowest
  ``/twin/v1/health`` answer while three such bombs land;
- ``replay_store_after_pings``: bytes the replay store (``peer-replay.db``,
  checkpointed) grows by after ``PINGS`` pings of 8 KiB each, once with the
  largest ttl a sender can write (2^31 - 1 s) and once with a ttl of 600 s.

Run: ``.venv/bin/python bench/peer_hostile.py [PINGS]`` (default 10000).
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cbor2
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import identity as ident  # noqa: E402
from tests.hostile_peer import seal_raw, shared_ref_bomb  # noqa: E402
from tests.twins import TwinProcess  # noqa: E402


def emit(figure: str, **values: Any) -> None:
    print(json.dumps({"bench": "peer_hostile", "figure": figure, **values}), flush=True)


def store_bytes(store: Path) -> int:
    with sqlite3.connect(store) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return store.stat().st_size


def main(pings: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        alice = TwinProcess.create(root, "alice")
        bob = TwinProcess.create(root, "bob", phonebook=alice.phonebook,
                                 sets=["peer.rate_per_minute=10000000"])
        alice.start()
        bob.start()
        try:
            me, key = ident.load(alice.data), ident.load(bob.data).public_key

            def seal(plain: bytes, ttl: int = 600) -> bytes:
                return seal_raw(me, sender="alice", recipient="bob", recipient_key=key,
                                plain=plain, ttl=ttl)

            with httpx.Client(verify=False, timeout=300) as client:
                url = bob.url + "/twin/v1/envelope"
                client.post(url, content=seal(cbor2.dumps(0)))  # warm up
                health: list[float] = []
                done = threading.Event()

                def probe() -> None:
                    with httpx.Client(verify=False, timeout=300) as c:
                        while not done.is_set():
                            start = time.perf_counter()
                            c.get(bob.url + "/twin/v1/health")
                            health.append(time.perf_counter() - start)
                            time.sleep(0.02)

                prober = threading.Thread(target=probe)
                prober.start()
                answers = []
                for _ in range(3):
                    start = time.perf_counter()
                    resp = client.post(url, content=seal(shared_ref_bomb(20)))
                    answers.append((time.perf_counter() - start, resp.status_code,
                                    len(resp.content)))
                done.set()
                prober.join()
                emit("cbor_bomb_answer", seconds=[round(a[0], 4) for a in answers],
                     status=answers[0][1], answer_bytes=answers[0][2],
                     health_max_seconds=round(max(health), 4), health_probes=len(health))

                store = bob.data / "peer-replay.db"
                body = cbor2.dumps(b"x" * 8192)
                for ttl in (2**31 - 1, 600):
                    before = store_bytes(store)
                    statuses: dict[int, int] = {}
                    start = time.perf_counter()
                    for _ in range(pings):
                        code = client.post(url, content=seal(body, ttl)).status_code
                        statuses[code] = statuses.get(code, 0) + 1
                    took = time.perf_counter() - start
                    emit("replay_store_after_pings", pings=pings, ttl=ttl, payload_bytes=8192,
                         grew_bytes=store_bytes(store) - before, statuses=statuses,
                         pings_per_s=round(pings / took, 1))
        finally:
            alice.stop()
            bob.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
