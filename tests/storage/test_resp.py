"""The resp backend against a real redis-server (started here, on a free port)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from storage import BackendUnavailable, ObjectRef
from storage.backends.resp import RespBackend
from tests.storage.conftest import KiB, StoreFactory, local_specs
from tests.tools import require_tool

SEG = 64 * KiB


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    binary = require_tool("redis-server")
    port = _free_port()
    workdir = tmp_path / "redis"
    workdir.mkdir()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
         "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--databases", "8"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            pytest.fail("redis-server did not start")
        yield f"redis://127.0.0.1:{port}"
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def _specs(tmp_path: Path, url: str) -> list[dict[str, str]]:
    """Three local backends and three Redis databases."""
    specs = local_specs(tmp_path / "shards", count=3)
    specs += [{"name": f"r{i}", "kind": "resp", "location": f"{url}/{i}"} for i in (1, 2, 3)]
    return specs


async def test_backend_contract_on_redis(redis_url: str) -> None:
    b = RespBackend("r", f"{redis_url}/5")
    await b.put("s/x/0/1", [b"head", memoryview(b"-tail")])
    assert await b.get("s/x/0/1") == b"head-tail"
    assert await b.stat("s/x/0/1") == 9
    assert await b.get("s/x/0/2") is None
    assert [k async for k in b.list("s/")] == ["s/x/0/1"]
    assert await b.delete("s/x/0/1") is True
    assert await b.delete("s/x/0/1") is False
    health = await b.health()
    assert health.reachable and health.kind == "resp"
    await b.close()


async def test_store_over_local_and_redis_round_trips_and_repairs_a_flushed_redis(
        make_store: StoreFactory, tmp_path: Path, redis_url: str) -> None:
    store = make_store(segment_size=SEG, specs=_specs(tmp_path, redis_url))
    blobs = [os.urandom(n) for n in (0, 1, 4 * KiB, 3 * SEG + 3)]
    refs = [await store.put(b) for b in blobs]
    for ref, data in zip(refs, blobs, strict=True):
        assert await store.read(ref) == data
    assert [h.reachable for h in await store.health()] == [True] * 6

    redis.Redis.from_url(f"{redis_url}/2").flushdb()  # that server lost everything
    report = await store.verify()
    assert set(report.degraded.values()) == {5}
    assert (await store.repair()).shares_rebuilt == sum(-(-len(b) // SEG) for b in blobs)
    assert (await store.verify()).healthy
    for ref, data in zip(refs, blobs, strict=True):
        assert await store.read(ref) == data
    await store.close()


async def test_unreachable_redis_is_reported_and_reads_go_on(
        make_store: StoreFactory, tmp_path: Path, redis_url: str) -> None:
    specs = _specs(tmp_path, redis_url)
    store = make_store(segment_size=SEG, specs=specs)
    data = os.urandom(SEG + 1)
    ref = await store.put(data)
    await store.close()
    for spec in specs[3:5]:
        spec["location"] = f"redis://127.0.0.1:{_free_port()}/0"  # nobody listens there
    store = make_store(segment_size=SEG, specs=specs)
    assert await store.read(ref) == data
    health = {h.name: h for h in await store.health()}
    assert not health["r1"].reachable and not health["r2"].reachable and health["r3"].reachable
    assert (await store.verify()).unreachable_backends == ["r1", "r2"]
    await store.close()


async def test_put_many_is_one_pipelined_batch_and_a_refused_item_is_false_alone(
        redis_url: str) -> None:
    b = RespBackend("r", f"{redis_url}/6")
    items: list[tuple[str, list[bytes | memoryview]]] = [
        (f"s/{i:02x}/0/1", [b"head-", memoryview(bytes([i]) * 100)]) for i in range(50)]
    assert await b.put_many(items) == [True] * 50
    for key, parts in items:
        assert await b.get(key) == b"".join(bytes(p) for p in parts)
    assert await b.put_many([]) == []
    admin = redis.Redis.from_url(f"{redis_url}/6")
    admin.acl_setuser("default", enabled=True, nopass=True, commands=["+@all"],
                      reset_keys=True, keys=["s/a*"])  # every other key is now refused
    try:
        assert await b.put_many([("s/a1/0/0", [b"ok"]), ("s/b1/0/0", [b"no"]),
                                 ("s/a2/0/0", [b"ok"])]) == [True, False, True]
        assert await b.get("s/a2/0/0") == b"ok"
    finally:
        admin.acl_setuser("default", enabled=True, nopass=True, commands=["+@all"],
                          keys=["*"])
        admin.close()
    assert await b.get("s/b1/0/0") is None
    await b.close()


async def test_a_batch_of_small_puts_where_some_objects_miss_their_quorum(
        make_store: StoreFactory, tmp_path: Path, redis_url: str) -> None:
    """Redis refuses keys of objects whose id starts with 8-f: on three local and three
    Redis backends those objects have 3 of the 5 shares they need and fail alone; the
    others of the same batches are stored whole."""
    store = make_store(segment_size=SEG, specs=_specs(tmp_path, redis_url))
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser("default", enabled=True, nopass=True, commands=["+@all"],
                      reset_keys=True, keys=[f"s/{c}*" for c in "01234567"])
    try:
        blobs = [os.urandom(300 + i) for i in range(80)]
        results = await asyncio.gather(*(store.put(b) for b in blobs), return_exceptions=True)
    finally:
        admin.acl_setuser("default", enabled=True, nopass=True, commands=["+@all"],
                          keys=["*"])
        admin.close()
    stored = {r.id: b for r, b in zip(results, blobs, strict=True) if isinstance(r, ObjectRef)}
    failed = [r for r in results if not isinstance(r, ObjectRef)]
    assert stored and failed, "80 random ids fall on both sides"
    assert all(oid[0] in "01234567" for oid in stored)
    assert all(isinstance(r, BackendUnavailable) and "only 3 of 6 shares" in str(r)
               for r in failed)
    assert {o.id for o in await store.list()} == set(stored)
    for oid, data in stored.items():
        assert await store.read(oid) == data
    report = await store.verify()
    assert report.healthy and report.orphans == 0  # the failed objects' shares are gone
    await store.close()
