"""The store on real 0-db servers (ThreeFold's store, built from tools/zdb).

Six servers, each with a private namespace behind a password: what a
ThreeFold user's namespaces look like. Then the namespaces twin must not or
cannot use: sequential mode, worm, lock, a reached maxsize, values above 0-db's
8 MiB limit.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from storage import BackendUnavailable, Store
from storage.backends.resp import RespBackend
from storage.errors import DeleteRefused
from tests.servers import Servers, redis_servers, start_zdb, zdb_namespace
from tests.storage.conftest import METADATA, KiB, MiB, StoreFactory

SEG = 64 * KiB


async def test_a_password_protected_namespace_works_and_a_wrong_password_is_named(
        tmp_path: Path) -> None:
    server = start_zdb(tmp_path / "z")
    try:
        zdb_namespace(server, "twin", password="right", public=0)
        url = f"zdb://127.0.0.1:{server.port}/twin"
        b = RespBackend("z", url, password="right")
        await b.put("s/x/0/1", [b"head", memoryview(b"-tail")])
        await b.put("s/x/0/2", [b"two"])
        assert await b.get("s/x/0/1") == b"head-tail"
        assert await b.stat("s/x/0/1") == 9
        assert await b.get("s/x/0/9") is None
        # SCANX: redis-py cannot parse SCAN's binary cursor
        assert sorted([k async for k in b.list("s/")]) == ["s/x/0/1", "s/x/0/2"]
        assert await b.delete("s/x/0/1") is True
        assert await b.delete("s/x/0/1") is False
        health = await b.health()
        assert health.reachable and health.writable
        assert "mode=userkey" in health.flags and "password" in health.flags
        assert health.free_bytes is not None and health.free_bytes > 0
        await b.close()
        # the password in the URL's userinfo works the same
        b = RespBackend("z", f"zdb://:right@127.0.0.1:{server.port}/twin")
        assert await b.get("s/x/0/2") == b"two"
        assert "right" not in b.location
        await b.close()
        wrong = RespBackend("z", url, password="wrong")
        with pytest.raises(BackendUnavailable, match="Access denied"):
            await wrong.get("s/x/0/2")
        health = await wrong.health()
        assert not health.reachable and "Access denied" in health.detail
        await wrong.close()
    finally:
        server.close()


async def test_store_on_six_protected_namespaces_puts_lists_verifies_repairs_restores(
        make_store: StoreFactory, tmp_path: Path,
        zdbs: tuple[Servers, list[dict[str, str]]]) -> None:
    servers, specs = zdbs
    store = make_store(segment_size=SEG, specs=specs)
    await store.check_backends()
    blobs = [os.urandom(n) for n in (0, 1, 4 * KiB, 3 * SEG + 3)]
    refs = [await store.put(b) for b in blobs]
    for ref, data in zip(refs, blobs, strict=True):
        assert await store.read(ref) == data
    assert {o.id for o in await store.list()} == {r.id for r in refs}
    assert (await store.verify()).healthy
    # one namespace loses everything: verify sees it, repair refills it
    servers[2].admin.execute_command("NSDEL", "twin")
    zdb_namespace(servers[2], "twin", password="s3cret-pass", public=0)
    report = await store.verify()
    assert set(report.degraded.values()) == {5}
    assert (await store.repair()).shares_rebuilt == sum(-(-len(b) // SEG) for b in blobs)
    assert (await store.verify()).healthy
    await store.delete(refs[0])
    assert (await store.verify(clean=True)).healthy
    await store.backup()
    await store.close()
    restored = await Store.restore(tmp_path / "restored", backends=specs,
                                   metadata_key=METADATA, master_key=store.engine.master_key,
                                   segment_size=SEG)
    assert {o.id for o in await restored.list()} == {r.id for r in refs[1:]}
    for ref, data in zip(refs[1:], blobs[1:], strict=True):
        assert await restored.read(ref) == data
    await restored.close()


async def test_a_server_in_sequential_mode_is_refused_at_start(
        make_store: StoreFactory, tmp_path: Path,
        zdbs: tuple[Servers, list[dict[str, str]]]) -> None:
    _, specs = zdbs
    seq = start_zdb(tmp_path / "seq", mode="seq")
    try:
        specs[4] = {"name": "z4", "kind": "resp",
                    "location": f"zdb://127.0.0.1:{seq.port}/default"}
        store = make_store(segment_size=SEG, specs=specs)
        with pytest.raises(ValueError, match=r"z4 .*sequential mode"):
            await store.check_backends()
        await store.close()
    finally:
        seq.close()


@pytest.mark.parametrize("flag", ["worm", "lock"])
async def test_rm_on_a_worm_or_locked_namespace_fails_loudly_and_keeps_the_object(
        make_store: StoreFactory, zdbs: tuple[Servers, list[dict[str, str]]],
        flag: str) -> None:
    servers, specs = zdbs
    store = make_store(segment_size=SEG, specs=specs)
    ref = await store.put(os.urandom(10 * KiB))
    servers[3].admin.execute_command("NSSET", "twin", flag, "1")
    with pytest.raises(DeleteRefused, match="z3"):
        await store.delete(ref)
    assert [o.id for o in await store.list()] == [ref.id]  # still listed, still readable
    assert len(await store.read(ref)) == 10 * KiB
    health = {h.name: h for h in await store.health()}
    assert flag in health["z3"].flags or "locked" in health["z3"].flags
    await store.close()


async def test_a_full_namespace_shows_read_only_and_puts_go_elsewhere(
        make_store: StoreFactory, zdbs: tuple[Servers, list[dict[str, str]]]) -> None:
    servers, specs = zdbs
    servers[1].admin.execute_command("NSSET", "twin", "maxsize", "20000")
    store = make_store(segment_size=SEG, specs=specs)
    for _ in range(4):  # fills namespace z1 past its limit
        await store.put(os.urandom(40 * KiB))
    health = {h.name: h for h in await store.health()}
    assert health["z1"].reachable and not health["z1"].writable
    assert "full" in health["z1"].detail
    data = os.urandom(40 * KiB)
    ref = await store.put(data)  # 5 of 6 shares: the quorum, queued for repair
    assert await store.read(ref) == data
    report = await store.repair()
    assert report.failures, "a share that cannot be restored is reported, not hidden"
    await store.close()


def test_a_segment_size_whose_shares_exceed_zdb_values_is_refused_naming_the_limit(
        make_store: StoreFactory, zdbs: tuple[Servers, list[dict[str, str]]]) -> None:
    _, specs = zdbs
    with pytest.raises(ValueError, match="at most 8388608 bytes"):
        make_store(segment_size=32 * MiB, specs=specs)  # 8 MiB + a header: one too many
    make_store(segment_size=32 * MiB - 4096, specs=specs)


async def test_small_puts_on_zdb_run_near_redis_speed(
        make_store: StoreFactory, tmp_path: Path,
        zdbs: tuple[Servers, list[dict[str, str]]]) -> None:
    """0-db sends each pipelined reply on its own: without TCP_QUICKACK a batch stalls
    on the client's delayed ACK (~40 ms), 0.12x Redis's small-put rate."""
    _, zspecs = zdbs
    rservers, rspecs = redis_servers(tmp_path / "redis")
    try:
        rates = {}
        for name, specs in (("redis", rspecs), ("zdb", zspecs)):
            store = make_store(segment_size=4 * MiB, specs=specs,
                               data_dir=tmp_path / f"data-{name}")
            blobs = [os.urandom(4 * KiB) for _ in range(400)]
            for b in blobs[:20]:
                await store.put(b)  # connections opened
            started = time.perf_counter()
            for pos in range(0, len(blobs), 8):  # 8 clients at a time, as WebDAV PUTs
                await asyncio.gather(*(store.put(b) for b in blobs[pos:pos + 8]))
            rates[name] = len(blobs) / (time.perf_counter() - started)
            await store.close()
        print(f"small puts/s: {rates}")
        assert rates["zdb"] >= 0.5 * rates["redis"], rates
    finally:
        rservers.close()
