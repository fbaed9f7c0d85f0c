"""A 201 or 204 to a WebDAV PUT means the file is durable (README, "When a file is safe").

Small files take the batched paths (shares of concurrent PUTs in one write and
sync per backend, one catalogue commit, the switches in one twin.db commit): the
twin is killed with SIGKILL right after the last answer, and every answered
file must read back whole after a restart.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.twins import TwinProcess


def client(twin: TwinProcess) -> httpx.Client:
    return httpx.Client(base_url=twin.url, verify=False, timeout=60,
                        auth=(twin.login, twin.password))


def test_answered_small_puts_survive_kill9(tmp_path: Path) -> None:
    twin = TwinProcess.create(tmp_path, "durable").start(timeout=120)
    files = {f"/dav/d/s{i:03d}.bin": os.urandom(4096 + i) for i in range(24)}
    files |= {f"/dav/d/p{i:03d}.bin": os.urandom(4096 - i) for i in range(48)}
    try:
        with client(twin) as c:
            assert c.request("MKCOL", "/dav/d").status_code == 201
            assert c.put("/dav/d/s000.bin", content=b"first version").status_code == 201
            for path, body in files.items():  # one after another, one replacing
                if path.startswith("/dav/d/s"):
                    assert c.put(path, content=body).status_code in (201, 204)

        def put(item: tuple[str, bytes]) -> int:
            with client(twin) as c:
                return c.put(item[0], content=item[1]).status_code

        parallel = [(p, b) for p, b in files.items() if p.startswith("/dav/d/p")]
        with ThreadPoolExecutor(8) as pool:  # concurrent: batched shares and switches
            assert set(pool.map(put, parallel)) == {201}
        twin.kill9()
        twin.start(timeout=120)
        with client(twin) as c:
            for path, body in files.items():
                r = c.get(path)
                assert r.status_code == 200 and r.content == body, path
    finally:
        try:
            twin.stop()
        except Exception:
            twin.kill9()
