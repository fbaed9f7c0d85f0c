"""``twin storage …`` while ``twin serve`` runs: through the twin, with the offline output.

The commands run in-process (``core.cli.main``) against a real twin process;
the twin holds the store's locks, so a command that succeeds can only have
gone through its local storage API (its log says so too).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from core.cli import main
from core.cli.storage import open_from_config
from core.owner import TOKEN_FILE
from tests.twins import TwinProcess

MiB = 1024 * 1024


@pytest.fixture
def twin_cmd(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    def run(twin: TwinProcess, *argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--data", str(twin.data), "--log-level", "warning", "storage", *argv])
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_every_subcommand_works_through_the_running_twin(
        twins: Callable[..., TwinProcess], twin_cmd: Callable[..., tuple[int, str, str]],
        tmp_path: Path) -> None:
    alice = twins("alice", sets=[f"storage.segment_size={MiB}"])
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(9 * MiB + 123))  # ten segments, the last one short
    note = tmp_path / "note.txt"
    note.write_bytes(b"the same either way\n")
    kept = twin_cmd(alice, "put", str(note))[1].strip()

    code, out, err = twin_cmd(alice, "put", str(src))
    assert code == 0, err
    ref = out.strip()
    assert ref.endswith(f":{src.stat().st_size}")
    assert f"owner stored object {ref}" in alice.log()  # the twin did it, not this process
    assert twin_cmd(alice, "get", ref, "-o", str(tmp_path / "out.bin"))[0] == 0
    assert (tmp_path / "out.bin").read_bytes() == src.read_bytes()

    code, out, _ = twin_cmd(alice, "ls")
    assert code == 0
    [line] = [line for line in out.splitlines() if line.startswith(ref)]
    assert line.split()[1] == str(src.stat().st_size) and "10 seg  4-of-6" in line

    code, out, _ = twin_cmd(alice, "status", "--json")
    assert code == 0
    backends = json.loads(out)
    assert [b["name"] for b in backends] == [f"local{i}" for i in range(6)]
    assert all(b["kind"] == "local" and b["health"]["reachable"] for b in backends)
    # six directories of one data dir: one filesystem, one failure domain (issue #18)
    assert len({b["failure_domain"] for b in backends}) == 1
    assert backends[0]["failure_domain"].startswith("filesystem ")
    code, out, _ = twin_cmd(alice, "status")
    assert code == 0 and out.startswith(f"store: 4-of-6, segments of {MiB} bytes")
    assert "failure domains: 1 (at most 6 backends in one)" in out
    assert "WARNING: the shares span 1 failure domain(s), fewer than n=6" in out

    code, out, err = twin_cmd(alice, "verify", "--sample", "1", "--json")
    assert code == 0, (out, err)
    assert json.loads(out)["objects_checked"] >= 1 and json.loads(out)["seconds"] >= 0
    code, out, err = twin_cmd(alice, "verify", "--sample", "1")  # one line, with the time
    assert code == 0 and out.startswith("verified ") and out.rstrip().endswith(" s"), out
    assert "0 unreadable" in out and out.count("\n") == 1
    code, out, _ = twin_cmd(alice, "repair", "--json")
    assert code == 0 and json.loads(out)["unrecoverable"] == []
    code, out, _ = twin_cmd(alice, "repair")
    assert code == 0 and out.startswith("repaired: ") and "0 unrecoverable" in out
    code, out, err = twin_cmd(alice, "backup")
    assert code == 0 and out.strip().startswith("backup/") and "backed up as backup/" in err

    assert twin_cmd(alice, "rm", ref)[0] == 0
    assert ref not in twin_cmd(alice, "ls")[1]
    code, _, err = twin_cmd(alice, "get", ref)
    assert code == 2 and f"object {ref.split(':')[0]} not found" in err
    code, _, err = twin_cmd(alice, "rm", "../etc/passwd")
    assert code == 2 and "invalid object reference" in err

    # what the same commands print once the twin is stopped and the store opened here
    running = [twin_cmd(alice, "ls")[1], twin_cmd(alice, "get", kept)]
    alice.stop()
    stopped = [twin_cmd(alice, "ls")[1], twin_cmd(alice, "get", kept)]
    assert running[1] == stopped[1] == (0, note.read_text(), "")
    [line] = [line for line in running[0].splitlines() if line.startswith(kept)]
    assert line in stopped[0].splitlines()  # (stopping backed twin.db up: one object more)


@pytest.fixture
def stopped_twin(tmp_path: Path) -> TwinProcess:
    return TwinProcess.create(tmp_path, "bob")


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stale_status(twin: TwinProcess) -> None:
    """What a twin killed by SIGKILL leaves, its pid since reused by a live process."""
    run = twin.data / "run"
    run.mkdir(exist_ok=True)
    (run / "status.json").write_text(json.dumps({"pid": os.getpid(), "listeners": [
        {"name": "https", "host": "127.0.0.1", "port": _dead_port(), "tls": "implicit"}]}))
    (twin.data / TOKEN_FILE).write_text("stale")


def test_without_a_serving_twin_the_store_is_opened_here_or_its_holder_named(
        stopped_twin: TwinProcess, twin_cmd: Callable[..., tuple[int, str, str]],
        tmp_path: Path) -> None:
    """A stale status file is no obstacle; a store held by a process that does not
    serve fails at once with exit code 2 naming it, not a misleading "not enough shares"."""
    (tmp_path / "x").write_bytes(b"x")
    assert twin_cmd(stopped_twin, "put", str(tmp_path / "x"))[0] == 0  # backends now exist
    _stale_status(stopped_twin)
    code, out, err = twin_cmd(stopped_twin, "status")
    assert code == 0 and out.startswith("store: 4-of-6"), err

    store = open_from_config(stopped_twin.data)  # this test process holds the locks now
    try:
        for stale in (True, False):
            if not stale:
                (stopped_twin.data / "run" / "status.json").unlink()
            code, out, err = twin_cmd(stopped_twin, "ls")
            assert code == 2 and out == ""
            assert f"in use by pid {os.getpid()}" in err, err
            assert "twin serve" in err and "not enough shares" not in err
            if stale:  # and why the twin its status file names did not answer
                assert "connect" in err.lower(), err
    finally:
        asyncio.run(store.close())
