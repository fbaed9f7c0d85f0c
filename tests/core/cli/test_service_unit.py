"""``twin service unit``: the systemd unit passes ``systemd-analyze verify`` and
says what a server needs (own user, privileged ports without root, restart,
reload by SIGHUP, the journal) (#21 item 3)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.tools import require_tool
from tests.twins import twin_cli


def _verify(unit_text: str, where: Path) -> subprocess.CompletedProcess[str]:
    analyze = require_tool("systemd-analyze")
    where.mkdir()
    path = where / "twin.service"
    path.write_text(unit_text)
    return subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True,
                          timeout=60)


def test_the_unit_verifies_and_runs_the_twin_as_its_own_user(tmp_path: Path) -> None:
    data = tmp_path / "alice"
    twin_cli(data, "init", "--name", "alice", "--json")
    text = twin_cli(data, "service", "unit", "--user", "twin").stdout
    assert f"--data {data.resolve()} serve" in text
    for line in ("User=twin", "AmbientCapabilities=CAP_NET_BIND_SERVICE", "Restart=on-failure",
                 "ExecReload=/bin/kill -HUP $MAINPID", f"ReadWritePaths={data.resolve()}"):
        assert line in text.splitlines(), line
    done = _verify(text, tmp_path / "good")
    assert done.returncode == 0 and "twin.service" not in done.stderr, done.stderr

    # the verifier really checks: a unit naming a missing executable fails
    broken = twin_cli(data, "service", "unit", "--exec", "/nonexistent/twin").stdout
    failed = _verify(broken, tmp_path / "bad")
    assert failed.returncode != 0 and "/nonexistent/twin" in failed.stderr
