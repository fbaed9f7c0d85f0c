"""A real Dovecot for tests: its own config in a temporary directory, no system config.

Dovecot's login and mail processes run as unprivileged users, who cannot
enter pytest's 0700 temporary directories, so the server lives in a
directory of its own under the system temp dir (0755, a few hundred KiB),
removed by ``stop``. It listens on 127.0.0.1 without TLS (plain login is
allowed there) and keeps mail in Maildir++ under ``home/USER/Maildir``.
Dovecot needs root to start (it drops to ``nobody`` for mail).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.tools import require, require_tool

NOBODY = 65534


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Dovecot:
    def __init__(self, user: str = "source", password: str = "secret") -> None:
        self.binary = require_tool("dovecot")
        require(os.geteuid() == 0, "Dovecot needs root to start (it drops privileges)")
        self.root = Path(tempfile.mkdtemp(prefix="twin-dovecot-"))
        self.root.chmod(0o755)
        self.user, self.password = user, password
        self.port = free_port()
        self.maildir = self.root / "home" / user / "Maildir"
        (self.root / "passwd").write_text(f"{user}:{{PLAIN}}{password}::::::\n")
        (self.root / "run").mkdir()
        (self.root / "state").mkdir()
        (self.root / "home").mkdir()
        self.conf = self.root / "dovecot.conf"
        self.conf.write_text(f"""
base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = {NOBODY}
mail_location = maildir:~/Maildir
mail_fsync = never
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.root}/passwd
}}
userdb {{
  driver = static
  args = uid={NOBODY} gid={NOBODY} home={self.root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Dovecot:
        os.chown(self.root / "home", NOBODY, NOBODY)
        self.proc = subprocess.Popen([self.binary, "-F", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("dovecot did not start")

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
