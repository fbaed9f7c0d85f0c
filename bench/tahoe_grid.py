"""A local Tahoe-LAFS grid for ``bench/storage.py --vs-tahoe``.

Why this exists: issue 25 asks for the twin's degraded storage figures (a
backend hung, a backend slow) side by side with Tahoe-LAFS under the same
fault in the same run, instead of a Tahoe figure quoted from elsewhere. This
module starts that grid: one introducer, six storage nodes and one client node
at 4-of-6 with shares.happy = 5 (the twin's k = 4, n = 6 and write quorum
k + 1), all on 127.0.0.1, each a ``tahoe run`` process whose pid is known, so
a node can be hung (SIGSTOP) like a redis-server, and its CPU read from /proc.

Tahoe is for this benchmark only: it is installed on first use into
``bench/.venv-tahoe`` (not committed), and nothing in ``make test`` needs it.
A storage node can announce another port than the one it listens on
(``announce``), so that a delaying proxy in front of it is what the client
connects to.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "bench" / ".venv-tahoe"
TAHOE_VERSION = "1.20.0"
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_tahoe() -> Path:
    """The ``tahoe`` executable of ``bench/.venv-tahoe``, installing it there if missing."""
    tahoe = VENV / "bin" / "tahoe"
    if not tahoe.exists():
        print(f"# installing tahoe-lafs=={TAHOE_VERSION} into {VENV}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "--quiet",
                        f"tahoe-lafs=={TAHOE_VERSION}"], check=True)
    return tahoe


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


@dataclass
class TahoeNode:
    name: str
    basedir: Path
    port: int = 0  # the port it listens on (0: none, the client)
    proc: subprocess.Popen[bytes] | None = None
    stopped: bool = False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def hang(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.stopped = True

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.stopped = False

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.stopped:
            self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@dataclass
class TahoeGrid:
    """Introducer, ``count`` storage nodes and a client node under ``root``.

    ``storage[i].port`` is chosen at construction, so a proxy in front of it can
    be started before :meth:`start`, which takes ``announce={i: proxy_port}``.
    """

    root: Path
    count: int = 6
    needed: int = 4
    total: int = 6
    happy: int = 5
    tahoe: Path = field(default_factory=ensure_tahoe)
    introducer: TahoeNode = field(init=False)
    storage: list[TahoeNode] = field(init=False)
    client: TahoeNode = field(init=False)
    web_port: int = field(init=False)

    def __post_init__(self) -> None:
        self.introducer = TahoeNode("introducer", self.root / "introducer", free_port())
        self.storage = [TahoeNode(f"storage{i}", self.root / f"storage{i}", free_port())
                        for i in range(self.count)]
        self.client = TahoeNode("client", self.root / "client")
        self.web_port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def _tahoe(self, *args: str) -> None:
        subprocess.run([str(self.tahoe), *args], check=True, capture_output=True)

    def _run(self, node: TahoeNode) -> None:
        log = open(node.basedir / "bench-run.log", "ab")  # noqa: SIM115 (kept by the child)
        # stdin a pipe that only this process holds: ``tahoe run`` exits when
        # it closes, so no node outlives the bench, even one killed.
        node.proc = subprocess.Popen([str(self.tahoe), "run", str(node.basedir)],
                                     stdin=subprocess.PIPE, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def start(self, announce: dict[int, int] | None = None) -> None:
        """Create and run every node; then :meth:`wait_connected` (async: a proxy may
        have to carry the client's connections meanwhile)."""
        announce = announce or {}
        self.root.mkdir(parents=True, exist_ok=True)
        intro = self.introducer
        self._tahoe("create-introducer", "--listen=tcp",
                    f"--port=tcp:{intro.port}:interface=127.0.0.1",
                    f"--location=tcp:127.0.0.1:{intro.port}", str(intro.basedir))
        self._run(intro)
        furl_file = intro.basedir / "private" / "introducer.furl"
        deadline = time.monotonic() + 60
        while not furl_file.exists():
            if time.monotonic() > deadline or (intro.proc and intro.proc.poll() is not None):
                raise RuntimeError(f"Tahoe introducer did not start (see {intro.basedir})")
            time.sleep(0.1)
        furl = furl_file.read_text().strip()
        shares = [f"--shares-needed={self.needed}", f"--shares-total={self.total}",
                  f"--shares-happy={self.happy}"]
        for i, node in enumerate(self.storage):
            self._tahoe("create-node", "--listen=tcp", f"--introducer={furl}",
                        f"--nickname={node.name}", "--webport=none", *shares,
                        f"--port=tcp:{node.port}:interface=127.0.0.1",
                        f"--location=tcp:127.0.0.1:{announce.get(i, node.port)}",
                        str(node.basedir))
        self._tahoe("create-client", f"--introducer={furl}", "--nickname=client",
                    f"--webport=tcp:{self.web_port}:interface=127.0.0.1", *shares,
                    str(self.client.basedir))
        for node in self.storage:
            self._run(node)
        for node in self.storage:  # listening before the client dials them (or a proxy)
            self._wait_listening(node)
        self._run(self.client)

    def _wait_listening(self, node: TahoeNode, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", node.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or (node.proc and node.proc.poll() is not None):
                    raise RuntimeError(f"Tahoe {node.name} is not listening "
                                       f"(see {node.basedir})") from None
                time.sleep(0.1)

    def nodes(self) -> list[TahoeNode]:
        return [self.introducer, *self.storage, self.client]

    async def connected(self, http: httpx.AsyncClient) -> int:
        """How many storage servers the client node is connected to now."""
        try:
            r = await http.get(f"{self.url}/?t=json", timeout=10)
            servers = r.json()["servers"]
        except (httpx.HTTPError, ValueError, KeyError):
            return 0
        return sum(1 for s in servers
                   if str(s.get("connection_status", "")).lower().startswith("connected"))

    async def wait_connected(self, http: httpx.AsyncClient, timeout: float = 120) -> float:
        """Wait until the client sees every storage server; returns the seconds waited."""
        import asyncio

        started = time.monotonic()
        while await self.connected(http) < self.count:
            for node in self.nodes():
                if node.proc is not None and node.proc.poll() is not None:
                    raise RuntimeError(f"Tahoe {node.name} exited (see {node.basedir})")
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"the Tahoe client sees {await self.connected(http)} "
                                   f"of {self.count} storage servers after {timeout} s")
            await asyncio.sleep(0.2)
        return time.monotonic() - started

    async def put(self, http: httpx.AsyncClient, data: bytes, timeout: float) -> str:
        """An immutable upload through the client's web API; returns the cap."""
        r = await http.put(f"{self.url}/uri", content=data, timeout=timeout)
        r.raise_for_status()
        return r.text.strip()

    async def get(self, http: httpx.AsyncClient, cap: str, timeout: float) -> bytes:
        r = await http.get(f"{self.url}/uri/{quote(cap, safe='')}", timeout=timeout)
        r.raise_for_status()
        return r.content

    def cpu_seconds(self) -> float:
        """CPU seconds of the client node and the storage nodes (not the introducer)."""
        return sum(n.cpu_seconds() for n in [self.client, *self.storage] if n.proc)

    def stop(self) -> None:
        for node in reversed(self.nodes()):
            node.stop()
