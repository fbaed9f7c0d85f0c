"""Failure domains (core.domains): one filesystem or one server is one domain."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core import domains
from core.cli import main
from tests.tools import require


def test_directories_on_one_filesystem_are_one_domain(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    assert domains.of_path(tmp_path / "a") == domains.of_path(tmp_path / "not-yet" / "b")


def test_resp_servers_are_domains_by_host_and_port() -> None:
    assert domains.of_url("redis://10.0.0.5:6379/0") == "server 10.0.0.5:6379"
    assert domains.of_url("redis://10.0.0.5/0") == domains.of_url("redis://10.0.0.5:6379/1")
    assert domains.of_url("zdb://10.0.0.6:9900/ns") != domains.of_url("zdb://10.0.0.6:9901/ns")
    assert domains.of_url("redis://:secret@h:1/0") == "server h:1"


def test_summary_warns_below_n_domains_and_says_whether_one_can_be_lost() -> None:
    one = domains.summarise(["disk"] * 6, k=4, n=6)
    assert (one.count, one.largest, one.survives_one) == (1, 6, False)
    assert "1 failure domain(s), fewer than n=6" in one.warning and "can lose data" in one.warning
    three = domains.summarise(["a", "a", "b", "b", "c", "c"], k=4, n=6)
    assert three.survives_one and "any one of them can be lost" in three.warning
    six = domains.summarise(list("abcdef"), k=4, n=6)
    assert six.count == 6 and six.survives_one and six.warning == ""


def test_status_counts_two_filesystems_as_two_domains(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shm = Path("/dev/shm")
    require(shm.is_dir() and os.stat(shm).st_dev != os.stat(tmp_path).st_dev,
            "needs /dev/shm on another filesystem than the test's tmp dir")
    other = Path(os.path.realpath(shm)) / f"twin-domains-{os.getpid()}"
    data = tmp_path / "alice"
    assert main(["--data", str(data), "init", "--name", "alice", "--json"]) == 0
    places = [tmp_path / f"d{i}" for i in range(4)] + [other / f"d{i}" for i in range(2)]
    specs = ", ".join(f'{{ name = "b{i}", kind = "local", location = "{p}" }}'
                      for i, p in enumerate(places))
    text = (data / "twin.toml").read_text()
    start = text.index("backends = [")
    end = text.index("\n", start)
    (data / "twin.toml").write_text(text[:start] + f"backends = [{specs}]" + text[end:])
    try:
        capsys.readouterr()
        assert main(["--data", str(data), "--log-level", "warning", "storage", "status"]) == 0
        out = capsys.readouterr().out
    finally:
        import shutil
        shutil.rmtree(other, ignore_errors=True)
    assert "failure domains: 2 (at most 4 backends in one)" in out
    assert "losing the one holding 4 backends can lose data (k=4)" in out
