"""Real Redis and 0-db servers for the tests, each on a free port, and ways to hurt them.

``RedisServers(tmp, 6)`` / ``ZdbServers(tmp, 6, password=...)`` start six
servers; ``hang(i)`` stops one with SIGSTOP (it keeps accepting connections
and never answers, as a wedged server does) and ``resume(i)`` lets it go on.
0-db is found as ``zdb`` on PATH or at ``/opt/zdb/zdb`` (where ``.ci/run``
builds it from ``tools/zdb``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.tools import require, require_tool

ZDB_BUILT = Path("/opt/zdb/zdb")
ZDB_DATASIZE = 16 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def zdb_binary() -> str:
    found = shutil.which("zdb") or (str(ZDB_BUILT) if ZDB_BUILT.exists() else None)
    require(found is not None,
            "0-db (zdb) is not installed: bash tools/zdb/build.sh /opt/zdb")
    assert found is not None
    return found


def _wait_ping(client: redis.Redis, proc: subprocess.Popen[bytes], what: str) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            client.ping()
            return
        except redis.ConnectionError:
            time.sleep(0.025)
    raise RuntimeError(f"{what} did not start")


def _wait_all(servers: Servers, what: str) -> None:
    try:
        for s in servers.servers:
            _wait_ping(s.admin, s.proc, what)
    except BaseException:
        servers.close()
        raise


@dataclass
class Server:
    port: int
    proc: subprocess.Popen[bytes]
    admin: redis.Redis  # no namespace selected (0-db) / database 0 (Redis)
    stopped: bool = False

    def hang(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.stopped = True

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)
        self.stopped = False

    def close(self) -> None:
        if self.stopped:
            self.resume()
        self.admin.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Servers:
    servers: list[Server] = field(default_factory=list)

    def __getitem__(self, i: int) -> Server:
        return self.servers[i]

    def __len__(self) -> int:
        return len(self.servers)

    def close(self) -> None:
        for s in self.servers:
            s.close()


def start_redis(workdir: Path, *extra: str) -> Server:
    server = spawn_redis(workdir, *extra)
    _wait_ping(server.admin, server.proc, "redis-server")
    return server


def spawn_redis(workdir: Path, *extra: str) -> Server:
    binary = require_tool("redis-server")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
         "--save", "", "--appendonly", "no", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Server(port, proc, redis.Redis(port=port))


def redis_servers(root: Path, count: int = 6) -> tuple[Servers, list[dict[str, str]]]:
    """``count`` redis-servers and the backend specs naming them."""
    servers = Servers([spawn_redis(root / f"redis{i}") for i in range(count)])
    _wait_all(servers, "redis-server")
    specs = [{"name": f"r{i}", "kind": "resp", "location": f"redis://127.0.0.1:{s.port}/0"}
             for i, s in enumerate(servers.servers)]
    return servers, specs


def start_zdb(workdir: Path, *, mode: str | None = "user") -> Server:
    server = spawn_zdb(workdir, mode=mode)
    _wait_ping(server.admin, server.proc, "zdb")
    return server


def spawn_zdb(workdir: Path, *, mode: str | None = "user") -> Server:
    """A 0-db process, not yet waited for (each takes ~1 s to start: start them together)."""
    binary = zdb_binary()
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    # 0-db preallocates every data file at full size (256 MiB per namespace
    # by default): six servers would take 3 GiB of disk per test. 16 MiB still
    # holds the largest value 0-db accepts (8 MiB), so files only split sooner.
    args = [binary, "--listen", "127.0.0.1", "--port", str(port),
            "--data", str(workdir / "data"), "--index", str(workdir / "index"),
            "--datasize", str(ZDB_DATASIZE)]
    if mode is not None:
        args += ["--mode", mode]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Server(port, proc, redis.Redis(port=port))


def zdb_namespace(server: Server, ns: str, **settings: Any) -> None:
    """``NSNEW ns`` then ``NSSET ns key value`` for each setting (password, public,
    maxsize, worm, lock, mode)."""
    server.admin.execute_command("NSNEW", ns)
    for key, value in settings.items():
        server.admin.execute_command("NSSET", ns, key, str(value))


def zdb_servers(root: Path, count: int = 6, *, password: str | None = "s3cret-pass",
                ) -> tuple[Servers, list[dict[str, str]]]:
    """``count`` 0-db servers, each with a namespace ``twin`` (private, with ``password``)."""
    servers = Servers([spawn_zdb(root / f"zdb{i}") for i in range(count)])
    _wait_all(servers, "zdb")
    specs = []
    for i, s in enumerate(servers.servers):
        settings: dict[str, Any] = {}
        if password is not None:
            settings = {"password": password, "public": 0}
        zdb_namespace(s, "twin", **settings)
        spec = {"name": f"z{i}", "kind": "resp", "location": f"zdb://127.0.0.1:{s.port}/twin"}
        if password is not None:
            spec["password"] = password
        specs.append(spec)
    return servers, specs


class DelayProxy:
    """A TCP proxy on the running event loop that holds each request ``delay`` seconds
    before passing it on: a backend that is slow (a far or loaded server), not down."""

    def __init__(self, port: int, delay: float) -> None:
        self.target, self.delay = port, delay
        self.port = 0
        self._server: Any = None

    async def start(self) -> DelayProxy:
        import asyncio

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       delay: bool) -> None:
            try:
                while data := await reader.read(1 << 16):
                    if delay and self.delay:
                        await asyncio.sleep(self.delay)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
            await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))

        self._server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self._server.close()


class DnsServer:
    """A real DNS server (dnsmasq) on a loopback port, restarted with new
    records by each ``serve(options)``; ``options`` are dnsmasq's record flags
    (``--host-record=``, ``--txt-record=``, ``--mx-host=`` ...)."""

    def __init__(self) -> None:
        self.binary = require_tool("dnsmasq")
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def serve(self, options: list[str]) -> str:
        """Start dnsmasq with ``options``; returns its ``127.0.0.1:PORT``."""
        self.stop()
        self.port = free_port()
        self.proc = subprocess.Popen(
            [self.binary, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
             "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1",
             f"--port={self.port}", "--user=root", "--pid-file=", *options],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.3)
        if self.proc.poll() is not None:
            assert self.proc.stderr is not None
            raise RuntimeError(f"dnsmasq exited: {self.proc.stderr.read().decode()}")
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
