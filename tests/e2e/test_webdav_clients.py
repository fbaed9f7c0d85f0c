"""Real WebDAV clients against a real twin: litmus, rclone, cadaver, gio (gvfs)."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.tools import require, require_tool
from tests.twins import TwinProcess

SUITES = ("basic", "copymove", "props", "locks", "http")


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwinProcess]:
    t = TwinProcess.create(tmp_path_factory.mktemp("davclients"), "alice").start()
    yield t
    t.stop()


@pytest.mark.parametrize("suite", SUITES)
def test_litmus(twin: TwinProcess, suite: str, tmp_path: Path) -> None:
    litmus = require_tool("litmus")
    out = subprocess.run([litmus, f"{twin.url}/dav/", twin.login, twin.password],
                         env={**os.environ, "TESTS": suite}, capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)  # litmus writes its logs to the cwd
    text = out.stdout + out.stderr
    m = re.search(rf"summary for `{suite}': of (\d+) tests run: (\d+) passed, (\d+) failed", text)
    assert m, text
    run, passed, failed = map(int, m.groups())
    assert run > 0 and passed == run and failed == 0, text
    assert "WARNING" not in text, text


def rclone_env(twin: TwinProcess, rclone: str) -> dict[str, str]:
    obscured = subprocess.run([rclone, "obscure", twin.password], capture_output=True,
                              text=True, check=True).stdout.strip()
    return {**os.environ, "RCLONE_CONFIG_TWIN_TYPE": "webdav",
            "RCLONE_CONFIG_TWIN_URL": f"{twin.url}/dav/",
            "RCLONE_CONFIG_TWIN_VENDOR": "other",
            "RCLONE_CONFIG_TWIN_USER": twin.login, "RCLONE_CONFIG_TWIN_PASS": obscured}


def test_rclone_copy_sync_check(twin: TwinProcess, tmp_path: Path) -> None:
    rclone = require_tool("rclone")
    env = rclone_env(twin, rclone)
    src = tmp_path / "src"
    (src / "répertoire ünï").mkdir(parents=True)
    (src / "répertoire ünï" / "日本語 ファイル.txt").write_text("こんにちは\n" * 1000)
    (src / "big.bin").write_bytes(os.urandom(5 * 1024 * 1024 + 3))
    (src / "empty").write_bytes(b"")

    def run(*args: str) -> None:
        out = subprocess.run([rclone, "--no-check-certificate", *args], env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr

    run("copy", str(src), "twin:tree")
    (src / "added.txt").write_text("later")
    (src / "big.bin").unlink()
    run("sync", str(src), "twin:tree")
    run("check", "--download", str(src), "twin:tree")
    back = tmp_path / "back"
    run("copy", "twin:tree", str(back))
    for f in src.rglob("*"):
        if f.is_file():
            assert (back / f.relative_to(src)).read_bytes() == f.read_bytes()
    assert not (back / "big.bin").exists()


class Terminal:
    """cadaver only asks about the twin's self-signed certificate on a terminal: give it one."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        master, slave = pty.openpty()
        self.master = master
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     cwd=cwd, close_fds=True)
        os.close(slave)
        self.transcript = ""

    def expect(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.transcript:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.master], [], [], left)[0]:
                raise TimeoutError(f"waiting for {text!r}:\n{self.transcript}")
            try:
                self.transcript += os.read(self.master, 65536).decode(errors="replace")
            except OSError:
                raise EOFError(self.transcript) from None
        head, _, self.transcript = self.transcript.partition(text)
        return head

    def send(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self.master)


def test_cadaver_session(twin: TwinProcess, tmp_path: Path) -> None:
    cadaver = require_tool("cadaver")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text(
        f"machine 127.0.0.1\nlogin {twin.login}\npassword {twin.password}\n")
    (home / ".netrc").chmod(0o600)
    local = tmp_path / "up.txt"
    local.write_text("cadaver was here\n")
    got = tmp_path / "down.txt"
    term = Terminal([cadaver, "-t", f"{twin.url}/dav/"], {**os.environ, "HOME": str(home),
                                                         "TERM": "dumb"}, tmp_path)
    try:
        term.expect("(y/n)")
        term.send("y")
        term.expect("dav:/dav/>")
        outputs = {}
        for command in ("mkcol cad", "cd cad", f"put {local} up.txt", f"get up.txt {got}",
                        "propset up.txt colour blue", "propget up.txt colour",
                        "lock up.txt", "unlock up.txt", "copy up.txt copy.txt",
                        "move copy.txt moved.txt", "ls", "rm up.txt", "ls"):
            term.send(command)
            outputs[command] = term.expect("dav:/dav/")
            term.expect(">")
        term.send("quit")
    finally:
        term.close()
    for command, out in outputs.items():
        assert "failed" not in out.lower(), (command, out)
    assert got.read_text() == "cadaver was here\n"
    assert "blue" in outputs["propget up.txt colour"]
    assert "moved.txt" in outputs["ls"]


GIO_SESSION = r"""
set -u
printf '1\n%s\n%s\n' "$TWIN_LOGIN" "$TWIN_PASSWORD" | timeout 60 gio mount "$TWIN_URL"
echo "mount rc=$?"
gio list "$TWIN_URL" && echo "listed rc=$?"
gio copy "$TWIN_LOCAL" "$TWIN_URL" && echo "copied rc=$?"
gio cat "${TWIN_URL}gio.txt"
gio mount -u "$TWIN_URL"
"""


def test_gio_mounts_the_readme_url(twin: TwinProcess, tmp_path: Path) -> None:
    """GNOME Files' way in: ``gio mount davs://…/dav/`` (gvfs asks ``OPTIONS /dav``, issue 20).

    Needs a session bus for gvfsd (``dbus-run-session``); without one the test
    checks what gvfs needs of the twin: OPTIONS and PROPFIND on ``/dav`` answered
    without a redirect."""
    require_tool("gio")
    bus = shutil.which("dbus-run-session")
    if bus is None or not Path("/usr/libexec/gvfsd-dav").exists():
        with httpx.Client(base_url=twin.url, verify=False, timeout=30,
                          auth=(twin.login, twin.password)) as dav:
            assert dav.options("/dav").status_code == 200
            assert dav.request("PROPFIND", "/dav", headers={"Depth": "0"}).status_code == 207
        require(False, "no dbus-run-session or gvfs-backends: mounted nothing")
    home = tmp_path / "home"
    home.mkdir()
    local = tmp_path / "gio.txt"
    local.write_text("mounted by gio\n")
    url = twin.url.replace("https://", "davs://") + "/dav/"   # the README's URL
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(tmp_path),
           "GIO_USE_VFS": "gvfs", "TWIN_URL": url, "TWIN_LOGIN": twin.login,
           "TWIN_PASSWORD": twin.password, "TWIN_LOCAL": str(local)}
    out = subprocess.run([bus, "--", "bash", "-c", GIO_SESSION], env=env, capture_output=True,
                         text=True, timeout=180, cwd=tmp_path)
    text = out.stdout + out.stderr
    assert "mount rc=0" in text, text
    assert "listed rc=0" in text and "copied rc=0" in text, text
    assert "mounted by gio" in out.stdout, text
    with httpx.Client(base_url=twin.url, verify=False, timeout=30,
                      auth=(twin.login, twin.password)) as dav:
        assert dav.get("/dav/gio.txt").text == "mounted by gio\n"
