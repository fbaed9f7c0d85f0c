"""``twin storage …`` end to end on a data dir made like ``twin init`` makes one."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from core import identity
from core.cli import storage as cli
from core.errors import Unavailable
from core.service import Service
from tests.twins import TwinProcess, twin_cli


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "twin"
    d.mkdir()
    (d / "twin.toml").write_text('[twin]\nname = "alice"\n[storage]\nsegment_size = 65536\n')
    identity.save(identity.Identity.from_mnemonic(identity.new_mnemonic()), d)
    return d


def twin(data_dir: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["--data", str(data_dir), *argv])
    return int(args.func(args))


def test_put_get_ls_status_verify_repair_backup_rm(data_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(200_000))
    assert twin(data_dir, "storage", "put", str(src)) == 0
    ref = capsys.readouterr().out.strip()
    assert twin(data_dir, "storage", "get", ref, "-o", str(tmp_path / "out.bin")) == 0
    assert (tmp_path / "out.bin").read_bytes() == src.read_bytes()
    assert twin(data_dir, "storage", "ls") == 0
    assert ref in capsys.readouterr().out
    assert twin(data_dir, "storage", "status", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert [b["name"] for b in status] == [f"local{i}" for i in range(6)]
    assert all(b["kind"] == "local" and b["health"]["reachable"] for b in status)
    assert twin(data_dir, "storage", "verify", "--sample", "1") == 0
    assert twin(data_dir, "storage", "repair") == 0
    assert twin(data_dir, "storage", "backup") == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("backup/")
    assert twin(data_dir, "storage", "rm", ref) == 0
    assert twin(data_dir, "storage", "get", ref) == 2
    assert "not found" in capsys.readouterr().err
    assert twin(data_dir, "storage", "rm", "../etc/passwd") == 2


def test_commands_on_the_store_of_a_running_twin_fail_clearly(
        twins: Callable[..., TwinProcess], tmp_path: Path) -> None:
    """Not NotEnoughShares: Unavailable, with a message naming `twin serve` and its pid.

    Every command that needs the store goes through the running twin now (`twin
    storage …`: tests/core/cli/test_storage.py; `mail send`: test_mail_admin.py), so
    this is what a second process that opens the store anyway (a race with a
    starting twin) is told.
    """
    alice = twins("alice")
    assert alice.proc is not None
    with httpx.Client(base_url=alice.url, auth=(alice.login, alice.password), verify=False,
                      timeout=30) as dav:  # the twin has certainly opened its backends now
        assert dav.put("/dav/note.txt", content=b"hello").status_code in (201, 204)
    second = Service.open(alice.data)
    try:
        with pytest.raises(Unavailable) as refused:
            second.open_store()
    finally:
        second.close()
    assert f"in use by pid {alice.proc.pid}" in str(refused.value)
    assert "twin serve" in str(refused.value) and "not enough shares" not in str(refused.value)
    alice.stop()
    done = twin_cli(alice.data, "storage", "ls")
    assert done.returncode == 0 and done.stdout.strip()
