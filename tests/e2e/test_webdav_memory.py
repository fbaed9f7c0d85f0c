"""WebDAV memory stays bounded whatever the file size (issue 20).

A 2 GiB file, generated on the fly by the client (nothing of it on disk on the
client's side), goes up with one PUT and back with one GET through a real
twin; the twin's peak RSS (VmHWM) may grow only by what its pipelines hold
(store segments in flight, TLS and socket buffers, the allocator's kept free
memory), never by anything that scales with the file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.twins import TwinProcess

MiB = 1024 * 1024
SIZE = 2048 * MiB
BLOCK = 256 * 1024
# what a transfer may add to the twin's peak RSS over its idle RSS; a file buffered
# whole would add SIZE. The goal is +48 MiB (issue 20); the 8 MiB above it are for
# allocator fragmentation and TLS and socket buffers, which vary with timing.
# Measured +38 to +41 at load ~10 on 2 cores (README "Measured", WebDAV rows); what
# the pipelines may hold by design: a put's 4 encode buffers in flight and 2 read
# ahead (6 MiB each), then a get's 2 segments read ahead and one 256 KiB piece in TLS.
BOUND = 56 * MiB


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _body(seed: bytes) -> Iterator[bytes]:
    """SIZE bytes, different in every block (no dedup or compression could help)."""
    block = bytearray(os.urandom(BLOCK))
    for i in range(SIZE // BLOCK):
        block[:16] = hashlib.blake2b(seed + i.to_bytes(8, "big"), digest_size=16).digest()
        yield bytes(block)


@pytest.mark.slow
def test_two_gib_put_and_get_keep_rss_bounded(tmp_path: Path) -> None:
    twin = TwinProcess.create(tmp_path, "alice").start()
    try:
        assert twin.proc is not None
        pid = twin.proc.pid
        with httpx.Client(base_url=twin.url, verify=False, timeout=600,
                          auth=(twin.login, twin.password)) as dav:
            assert dav.put("/dav/warm.txt", content=b"warm").status_code == 201
            assert dav.get("/dav/warm.txt").content == b"warm"
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
            idle = _status(pid, "VmRSS")
            sent = hashlib.sha256()

            def body() -> Iterator[bytes]:
                for chunk in _body(b"issue-20"):
                    sent.update(chunk)
                    yield chunk

            r = dav.put("/dav/big.bin", content=body(),
                        headers={"Content-Length": str(SIZE)})
            assert r.status_code == 201, r.text
            put_peak = _status(pid, "VmHWM")
            got = hashlib.sha256()
            n = 0
            with dav.stream("GET", "/dav/big.bin") as resp:
                assert resp.status_code == 200
                for chunk in resp.iter_raw(BLOCK):
                    got.update(chunk)
                    n += len(chunk)
            peak = _status(pid, "VmHWM")
        assert n == SIZE and got.digest() == sent.digest()
        growth = (peak - idle) / MiB
        print(f"idle {idle / MiB:.1f} MiB, PUT peak +{(put_peak - idle) / MiB:.1f}, "
              f"PUT+GET peak +{growth:.1f} MiB")
        assert peak - idle <= BOUND, f"peak RSS grew {growth:.1f} MiB for a 2 GiB file"
    finally:
        twin.stop()
