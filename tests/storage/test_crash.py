"""kill -9 in the middle of a put leaves nothing visible, and verify cleans up after it."""

from __future__ import annotations

import signal
import textwrap
import time
from pathlib import Path

from tests.storage.conftest import (
    KiB,
    StoreFactory,
    spawn_store_child,
)

SEG = 64 * KiB

CHILD = textwrap.dedent("""
    import asyncio, json, sys
    from pathlib import Path
    from storage import open_store

    async def main():
        data_dir, specs, master, meta = sys.argv[1:5]
        store = open_store(Path(data_dir), k=4, n=6, segment_size=SEG, backends=json.loads(specs),
                           master_key=bytes.fromhex(master), metadata_key=bytes.fromhex(meta))
        await store.put(b"committed before the crash")
        async def endless():
            for i in range(10**9):
                yield bytes([i % 251]) * 8192
                if i == 64:
                    print("writing", flush=True)
        await store.put(endless())

    asyncio.run(main())
""").replace("SEG", str(SEG))


def _run_child_and_kill(tmp_path: Path) -> None:
    proc = spawn_store_child(CHILD, tmp_path)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"writing\n"
    time.sleep(0.3)  # let shares of several segments reach the backends
    assert proc.poll() is None, "the big put must still be running when it is killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


async def test_kill_9_mid_put_leaves_no_object_and_verify_cleans_orphans(
        make_store: StoreFactory, tmp_path: Path) -> None:
    _run_child_and_kill(tmp_path)

    store = make_store(segment_size=SEG)
    objects = await store.list()
    assert [o.size for o in objects] == [len(b"committed before the crash")]
    assert await store.read(objects[0].ref) == b"committed before the crash"

    found = await store.verify()
    assert found.orphans >= 6, "the killed put had written shares"
    assert found.orphans_removed == 0
    cleaned = await store.verify(clean=True)
    assert cleaned.orphans_removed == cleaned.orphans == found.orphans
    after = await store.verify()
    assert after.orphans == 0 and after.healthy
    assert await store.read(objects[0].ref) == b"committed before the crash"
    await store.close()
