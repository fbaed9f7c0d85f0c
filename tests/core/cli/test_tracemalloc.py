"""``TWIN_TRACEMALLOC=DIR``: a serving twin writes a memory snapshot on SIGUSR2."""

from __future__ import annotations

import os
import signal
import time
import tracemalloc
from pathlib import Path

import pytest

from tests.twins import TwinProcess


def test_sigusr2_writes_a_snapshot_that_loads(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "snapshots"
    monkeypatch.setenv("TWIN_TRACEMALLOC", str(out))
    twin = TwinProcess.create(tmp_path, "alice").start()
    try:
        assert twin.proc is not None
        os.kill(twin.proc.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 20
        while not list(out.glob("*.tracemalloc")):
            assert time.monotonic() < deadline, "no snapshot written"
            time.sleep(0.1)
        snap = tracemalloc.Snapshot.load(str(next(out.glob("*.tracemalloc"))))
        assert sum(s.size for s in snap.statistics("filename")) > 1 << 20
        assert twin.proc.poll() is None  # still serving
    finally:
        twin.stop()
