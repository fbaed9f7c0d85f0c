"""Real twin processes for end-to-end tests.

``TwinProcess.create(tmp_path, "alice")`` runs ``twin init --json`` and
``start()`` runs ``twin serve`` with every port set to 0, then waits for the
status file and reads the real ports from it. Nothing here is mocked: the
tests talk to the twin over real sockets exactly as a client would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PORT_ZERO = ["http.port", "smtp.port", "smtp.submission_port", "smtp.submissions_port",
             "imap.port", "imap.tls_port"]
TWIN = [sys.executable, "-m", "core.cli"]
# A twin process reaches nothing outside this machine: no SPF lookups, and mail for
# the legacy world goes to a closed loopback port (stays queued) instead of DNS MX.
NO_OUTSIDE = ["smtp.verify_dns=false", "smtp.smarthost=127.0.0.1:9"]


def twin_cli(data: Path, *args: str, check: bool = True, input: str | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TWIN, "--data", str(data), *args], capture_output=True, text=True,
                          check=check, input=input, timeout=timeout)


@dataclass
class TwinProcess:
    data: Path
    name: str
    login: str
    password: str
    mnemonic: str
    extra_sets: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    listeners: dict[str, dict[str, Any]] = field(default_factory=dict)
    log_path: Path | None = None

    @classmethod
    def create(cls, root: Path, name: str, *, phonebook: Path | None = None,
               sets: list[str] | None = None) -> TwinProcess:
        data = root / name
        args = ["init", "--name", name, "--json"]
        if phonebook is not None:
            args += ["--phonebook", str(phonebook)]
        out = json.loads(twin_cli(data, *args).stdout)
        return cls(data, name, out["login"], out["password"], out["mnemonic"], sets or [])

    @property
    def phonebook(self) -> Path:
        return self.data / "phonebook.db"

    def start(self, timeout: float = 30.0) -> TwinProcess:
        sets = [f"{k}=0" for k in PORT_ZERO] + NO_OUTSIDE + self.extra_sets
        args = [*TWIN, "--data", str(self.data)]
        for s in sets:
            args += ["--set", s]
        self.log_path = self.data / "serve.log"
        status = self.data / "run" / "status.json"
        status.unlink(missing_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's life
        self.proc = subprocess.Popen([*args, "serve"], stdout=log, stderr=log,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"twin {self.name} exited: {self.log()}")
            if status.exists():
                state = json.loads(status.read_text())
                if state["pid"] == self.proc.pid:
                    self.listeners = {i["name"]: i for i in state["listeners"]}
                    return self
            time.sleep(0.05)
        raise TimeoutError(f"twin {self.name} did not start: {self.log()}")

    def port(self, listener: str) -> int:
        return int(self.listeners[listener]["port"])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port('https')}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
