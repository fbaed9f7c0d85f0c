"""The Containerfile and its entrypoint (#21 item 3: "a Containerfile for those who
prefer containers").

The image itself is built only where a container tool exists (this machine and CI
have none, and no registry to pull the base image from): that test skips, naming
the tool. What runs everywhere: the entrypoint, as the container runs it, makes a
twin on first start, serves it on the ports the image configures through the
environment, keeps it on the second start, and refuses a first start without a
name; and the Containerfile copies what the package needs and exposes the ports
the twin listens on by default.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.config import BY_NAME
from core.config import SCHEMA as KEYS

ROOT = Path(__file__).resolve().parents[3]
CONTAINERFILE = ROOT / "Containerfile"
ENTRYPOINT = ROOT / "packaging" / "container-entrypoint.sh"
LISTENERS = ["smtp.port", "smtp.submission_port", "smtp.submissions_port", "imap.port",
             "imap.tls_port", "http.port"]


def _env_of_image() -> dict[str, str]:
    """The ENV lines of the Containerfile (one ENV with continuation lines)."""
    text = CONTAINERFILE.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def test_the_containerfile_copies_the_package_and_exposes_the_default_ports() -> None:
    text = CONTAINERFILE.read_text()
    for src in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for path in src.split():
            assert (ROOT / path).exists(), f"COPY of a missing path {path}"
    packages = re.search(r'include = \[(.*?)\]', (ROOT / "pyproject.toml").read_text())
    assert packages is not None
    for pkg in re.findall(r'"(\w+)\*"', packages.group(1)):
        assert f"COPY {pkg} ./{pkg}" in text, f"package {pkg} is not in the image"
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", text, re.M)
               for p in line.split()}
    env = _env_of_image()
    acme = int(env.get(BY_NAME["http.acme_port"].env, BY_NAME["http.acme_port"].default))
    assert exposed == {int(BY_NAME[k].default) for k in LISTENERS} | {acme}
    known = {k.env for k in KEYS}
    for name in env:
        assert name in known or name == "PYTHONUNBUFFERED", f"ENV {name} is no config key"
    assert env[BY_NAME["listen.host"].env] == "0.0.0.0"


def _entrypoint(data: Path, **env: str) -> subprocess.Popen[bytes]:
    bin_dir = Path(sys.executable).parent  # the venv's `twin`, as pip installs it in the image
    ports = {BY_NAME[k].env: "0" for k in LISTENERS}
    return subprocess.Popen(
        ["sh", str(ENTRYPOINT), "--set", "smtp.verify_dns=false",
         "--set", "smtp.smarthost=127.0.0.1:9"],
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TWIN_DATA_DIR": str(data),
             "TWIN_LISTEN_HOST": "127.0.0.1", **ports, **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _serving(proc: subprocess.Popen[bytes], data: Path) -> dict[str, int]:
    status = data / "run" / "status.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        if status.exists():
            state = json.loads(status.read_text())
            if state["pid"] == proc.pid:  # exec: the entrypoint's pid is the twin's
                return {i["name"]: int(i["port"]) for i in state["listeners"]}
        time.sleep(0.1)
    raise TimeoutError("the twin did not start")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)  # what `podman stop` sends to PID 1
    return proc.wait(30)


def test_the_entrypoint_creates_the_twin_once_and_serves_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    refused = _entrypoint(data)
    assert refused.wait(30) == 64
    assert refused.stdout is not None and b"TWIN_NAME" in refused.stdout.read()

    first = _entrypoint(data, TWIN_NAME="box", TWIN_DOMAIN="box.example.org")
    ports = _serving(first, data)
    assert {"smtp", "imaps", "https"} <= set(ports)
    assert _stop(first) == 0
    out = first.stdout.read().decode() if first.stdout else ""
    assert "box@box.example.org" in out  # the owner's login, printed once at creation
    key = (data / "identity.key").read_bytes()

    again = _entrypoint(data, TWIN_NAME="other")  # a second start keeps the twin
    _serving(again, data)
    assert _stop(again) == 0
    assert (data / "identity.key").read_bytes() == key
    assert 'name = "box"' in (data / "twin.toml").read_text()


def test_the_image_builds_where_a_container_tool_exists(tmp_path: Path) -> None:
    def usable(tool: str) -> bool:  # docker's CLI without its daemon cannot build
        if shutil.which(tool) is None:
            return False
        probe = ["version"] if tool == "buildah" else ["info"]
        return subprocess.run([tool, *probe], capture_output=True, timeout=60).returncode == 0

    tool = next((t for t in ("podman", "buildah", "docker") if usable(t)), None)
    if tool is None:
        pytest.skip("podman, buildah or docker: none that can build here (no daemon or none "
                    "installed)")
    args = ["bud"] if tool == "buildah" else ["build"]
    done = subprocess.run([tool, *args, "-t", "twin-test", "-f", str(CONTAINERFILE), str(ROOT)],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
