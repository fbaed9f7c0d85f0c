"""WebDAV: the twin (encrypting + dispersing 4 of 6) against wsgidav + TLS, in one run.

The peer is what a plain WebDAV server on this machine does: wsgidav's
``FilesystemProvider`` behind cheroot with the twin's own certificate and Basic
auth (issue 20). Both run side by side and every workload alternates between
them, round after round (``BENCH_ROUNDS``, default 3; the server that goes
first alternates too), because on a shared machine a server's rate swings
between minutes. For each figure one JSON line gives the median of each
server, the median and min-max of the per-round ratio, and each server's CPU
(user + system of its process, from /proc) per MiB or per file.

``ratio`` is always "twin over peer" in the sense where above 1 means the twin
does better: speed / speed for throughput, time / time inverted for latency,
and peer growth / twin growth for memory.

Workloads, per round and server:

- ``BENCH_MIB`` (256) MiB PUT and GET with curl (a file on disk, to /dev/null);
- peak RSS growth (VmHWM, reset through /proc/PID/clear_refs) over idle during a
  ``BENCH_RSS_MIB`` (1024) MiB PUT and GET, generated on the fly;
- ``BENCH_SMALL`` (500) 4 KiB PUTs of new files: one curl, one keep-alive
  connection, one after another; and the same with 8 connections in parallel;
- PROPFIND Depth: 1 (allprop) of folders of 1,000 and ``BENCH_LIST`` (10,000)
  files (filled once, before the rounds);
- ``rclone copy`` of a tree of ``BENCH_TREE`` (2,000) small files into a new
  folder, then ``rclone sync`` of the same tree again (nothing to do).

Options (the defaults run everything): ``--only small`` runs only the two
small-file figures (``--only`` takes a comma list of: big, rss, small, list,
rclone); ``--rounds N`` overrides ``BENCH_ROUNDS``.

Needs curl and rclone (Debian packages); cheroot comes with ``.[test]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.twins import TwinProcess

MiB = 1024 * 1024
BLOCK = 256 * 1024
TICK = os.sysconf("SC_CLK_TCK")

# wsgidav's FilesystemProvider behind cheroot + TLS, Basic auth, in-memory locks and
# dead properties (wsgidav's defaults when served by its own CLI); prints its port.
PEER = r"""
import sys
from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter
from wsgidav.fs_dav_provider import FilesystemProvider
from wsgidav.wsgidav_app import WsgiDAVApp
root, cert, key, user, password = sys.argv[1:6]
app = WsgiDAVApp({"provider_mapping": {"/dav": FilesystemProvider(root)},
                  "http_authenticator": {"domain_controller": None, "accept_basic": True,
                                         "accept_digest": False, "default_to_digest": False},
                  "simple_dc": {"user_mapping": {"*": {user: {"password": password}}}},
                  "lock_storage": True, "property_manager": True,
                  "verbose": 0, "block_size": 262144, "dir_browser": {"enable": False},
                  "logging": {"enable": False}})
server = wsgi.Server(("127.0.0.1", 0), app, numthreads=16)
server.ssl_adapter = BuiltinSSLAdapter(cert, key)
server.prepare()
print(server.bind_addr[1], flush=True)
server.serve()
"""


@dataclass
class Server:
    name: str
    pid: int
    url: str  # .../dav/
    login: str
    password: str
    stop: Callable[[], None]

    def cpu(self) -> float:
        """Seconds of CPU (user + system, all threads) the server process used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def status(self, key: str) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return 0.0

    def client(self) -> httpx.Client:
        return httpx.Client(verify=False, timeout=600, auth=(self.login, self.password))


@dataclass
class Figure:
    """One figure's samples, per server, in the order of the rounds."""

    name: str
    unit: str
    cpu_unit: str
    higher_is_better: bool
    values: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)

    def add(self, server: str, value: float, cpu: float) -> None:
        self.values.setdefault(server, []).append(value)
        self.cpu.setdefault(server, []).append(cpu)
        print(json.dumps({"sample": self.name, "server": server, "value": round(value, 3),
                          self.cpu_unit: round(cpu, 3)}), file=sys.stderr, flush=True)

    def report(self) -> dict[str, object]:
        t, p = self.values.get("twin", []), self.values.get("peer", [])
        ratios = [(a / b if self.higher_is_better else b / a) if a and b else 0.0
                  for a, b in zip(t, p, strict=False)]
        out: dict[str, object] = {"bench": "webdav", "figure": self.name, "unit": self.unit,
                                  "rounds": len(ratios)}
        for server, vals in (("twin", t), ("peer", p)):
            if vals:
                out[server] = round(statistics.median(vals), 2)
                out[f"{server}_min_max"] = [round(min(vals), 2), round(max(vals), 2)]
                out[f"{server}_cpu"] = round(statistics.median(self.cpu[server]), 3)
        out["cpu_unit"] = self.cpu_unit
        if ratios:
            out["ratio"] = round(statistics.median(ratios), 2)
            out["ratio_min_max"] = [round(min(ratios), 2), round(max(ratios), 2)]
        return out


def curl(server: Server, *args: str, config: str | None = None) -> None:
    cmd = ["curl", "-sS", "--no-progress-meter", "-k", "--fail",
           "-u", f"{server.login}:{server.password}", "-o", "/dev/null", *args]
    if config is not None:
        cmd += ["-K", config]
    subprocess.run(cmd, check=True, timeout=1800)


def timed(server: Server, work: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, server CPU seconds) of ``work``."""
    c0, t0 = server.cpu(), time.perf_counter()
    work()
    return time.perf_counter() - t0, server.cpu() - c0


def mkcol(server: Server, path: str) -> None:
    with server.client() as c:
        r = c.request("MKCOL", server.url + path)
        assert r.status_code in (201, 405), (server.name, path, r.status_code)


def generated(size: int) -> Iterator[bytes]:
    block = os.urandom(BLOCK)
    sent = 0
    while sent < size:
        n = min(BLOCK, size - sent)
        yield block[:n]
        sent += n


def small_config(server: Server, folder: str, count: int, source: Path, tmp: Path) -> str:
    lines = []
    for i in range(count):
        lines.append(f'upload-file = "{source}"')
        lines.append(f'url = "{server.url}{folder}/f{i:05d}.bin"')
        lines.append('output = "/dev/null"')
    cfg = tmp / f"{server.name}-{folder.replace('/', '_')}.curl"
    cfg.write_text("\n".join(lines) + "\n")
    return str(cfg)


def rclone(server: Server, *args: str) -> None:
    obscured = subprocess.run(["rclone", "obscure", server.password], capture_output=True,
                              text=True, check=True).stdout.strip()
    env = {**os.environ, "RCLONE_CONFIG_B_TYPE": "webdav", "RCLONE_CONFIG_B_URL": server.url,
           "RCLONE_CONFIG_B_VENDOR": "other", "RCLONE_CONFIG_B_USER": server.login,
           "RCLONE_CONFIG_B_PASS": obscured}
    subprocess.run(["rclone", "--no-check-certificate", "-q", *args], env=env, check=True,
                   timeout=1800)


def start_twin(tmp: Path) -> Server:
    twin = TwinProcess.create(tmp, "bench").start(timeout=120)
    assert twin.proc is not None
    return Server("twin", twin.proc.pid, f"{twin.url}/dav/", twin.login, twin.password,
                  lambda: twin.stop())


def start_peer(tmp: Path, cert_dir: Path) -> Server:
    root = tmp / "peer-root"
    root.mkdir()
    user, password = "bench", "bench-password"
    proc = subprocess.Popen([sys.executable, "-c", PEER, str(root), str(cert_dir / "cert.pem"),
                             str(cert_dir / "key.pem"), user, password],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())

    def stop() -> None:
        proc.terminate()
        proc.wait(30)
    return Server("peer", proc.pid, f"https://127.0.0.1:{port}/dav/", user, password, stop)


def fill(server: Server, folder: str, count: int, source: Path, tmp: Path) -> None:
    mkcol(server, folder)
    curl(server, "--parallel", "--parallel-max", "8",
         config=small_config(server, folder, count, source, tmp))


GROUPS = ("big", "rss", "small", "list", "rclone")


def run_round(rnd: int, server: Server, figs: dict[str, Figure], tmp: Path, big: Path,
              small: Path, tree: Path, only: frozenset[str] = frozenset(GROUPS)) -> None:
    if "big" in only:
        run_big(server, figs, big)
    if "rss" in only:
        run_rss(server, figs)
    if "small" in only:
        run_small(rnd, server, figs, tmp, small)
    if "list" in only:
        run_list(server, figs)
    if "rclone" in only:
        run_rclone(rnd, server, figs, tree)


def run_big(server: Server, figs: dict[str, Figure], big: Path) -> None:
    size = big.stat().st_size
    mib = size / MiB
    wall, cpu = timed(server, lambda: curl(server, "-T", str(big), server.url + "big.bin"))
    figs["put"].add(server.name, mib / wall, cpu * 1000 / mib)
    wall, cpu = timed(server, lambda: curl(server, server.url + "big.bin"))
    figs["get"].add(server.name, mib / wall, cpu * 1000 / mib)


def run_rss(server: Server, figs: dict[str, Figure]) -> None:
    rss_size = int(os.environ.get("BENCH_RSS_MIB", "1024")) * MiB
    Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    idle = server.status("VmRSS")
    with server.client() as c:
        r = c.put(server.url + "huge.bin", content=generated(rss_size),
                  headers={"Content-Length": str(rss_size)})
        assert r.status_code in (201, 204), r.text
        got = 0
        with c.stream("GET", server.url + "huge.bin") as resp:
            for chunk in resp.iter_raw(BLOCK):
                got += len(chunk)
        assert got == rss_size
        figs["rss"].add(server.name, server.status("VmHWM") - idle, idle)
        c.delete(server.url + "huge.bin")


def run_small(rnd: int, server: Server, figs: dict[str, Figure], tmp: Path, small: Path
              ) -> None:
    count = int(os.environ.get("BENCH_SMALL", "500"))
    for key, parallel in (("small1", []), ("small8", ["--parallel", "--parallel-max", "8"])):
        folder = f"{key}-r{rnd}"
        mkcol(server, folder)
        cfg = small_config(server, folder, count, small, tmp)
        wall, cpu = timed(server, lambda cfg=cfg, parallel=parallel: curl(  # type: ignore[misc]
            server, *parallel, config=cfg))
        figs[key].add(server.name, count / wall, cpu * 1000 / count)


def run_list(server: Server, figs: dict[str, Figure]) -> None:
    for key in ("list1k", "list10k"):
        folder = key
        entries = int(figs[key].name.split()[3].replace(",", ""))
        wall, cpu = timed(server, lambda folder=folder: curl(  # type: ignore[misc]
            server, "-X", "PROPFIND", "-H", "Depth: 1", server.url + folder + "/"))
        figs[key].add(server.name, wall * 1000, cpu * 1e6 / entries)


def run_rclone(rnd: int, server: Server, figs: dict[str, Figure], tree: Path) -> None:
    files = sum(1 for p in tree.rglob("*") if p.is_file())
    wall, cpu = timed(server, lambda: rclone(server, "copy", str(tree), f"b:tree-r{rnd}"))
    figs["rcopy"].add(server.name, files / wall, cpu * 1000 / files)
    wall, cpu = timed(server, lambda: rclone(server, "sync", str(tree), f"b:tree-r{rnd}"))
    figs["rsync"].add(server.name, wall * 1000, cpu * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", default=",".join(GROUPS),
                        help=f"comma list of workloads to run, of: {', '.join(GROUPS)}")
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "3")))
    args = parser.parse_args()
    only = frozenset(args.only.split(","))
    if not only <= set(GROUPS):
        parser.error(f"--only takes {', '.join(GROUPS)}")
    for tool in ("curl", *(("rclone",) if "rclone" in only else ())):
        if shutil.which(tool) is None:
            sys.exit(f"bench/webdav.py needs {tool}")
    rounds = args.rounds
    mib = int(os.environ.get("BENCH_MIB", "256"))
    listed = int(os.environ.get("BENCH_LIST", "10000"))
    tree_files = int(os.environ.get("BENCH_TREE", "2000"))
    small_n = int(os.environ.get("BENCH_SMALL", "500"))
    rss_mib = int(os.environ.get("BENCH_RSS_MIB", "1024"))
    figs = {
        "put": Figure(f"PUT {mib} MiB", "MiB/s", "ms CPU/MiB", True),
        "get": Figure(f"GET {mib} MiB", "MiB/s", "ms CPU/MiB", True),
        "rss": Figure(f"peak RSS over idle during {rss_mib} MiB PUT+GET", "MiB",
                      "idle RSS MiB", False),
        "small1": Figure(f"{small_n} x 4 KiB PUT, one client keep-alive", "files/s",
                         "ms CPU/file", True),
        "small8": Figure(f"{small_n} x 4 KiB PUT, 8 parallel clients", "files/s",
                         "ms CPU/file", True),
        "list1k": Figure("PROPFIND Depth:1 on 1,000 entries", "ms", "us CPU/entry", False),
        "list10k": Figure(f"PROPFIND Depth:1 on {listed:,} entries", "ms", "us CPU/entry",
                          False),
        "rcopy": Figure(f"rclone copy of {tree_files:,} small files", "files/s",
                        "ms CPU/file", True),
        "rsync": Figure("rclone sync no-op re-run", "ms", "ms CPU", False),
    }
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as name:
        tmp = Path(name)
        big = tmp / "big.bin"
        with big.open("wb") as f:
            for chunk in generated(mib * MiB if "big" in only else 0):
                f.write(chunk)
        small = tmp / "small.bin"
        small.write_bytes(os.urandom(4096))
        tree = tmp / "tree"
        for i in range(tree_files if "rclone" in only else 0):
            d = tree / f"d{i % 20:02d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"file{i:05d}.txt").write_bytes(os.urandom(512 + (i * 37) % 7680))
        twin = start_twin(tmp / "twin")
        peer = start_peer(tmp, twin_cert_dir(tmp / "twin"))
        servers = [twin, peer]
        try:
            for s in servers if "list" in only else []:
                fill(s, "list1k", 1000, small, tmp)
                fill(s, "list10k", listed, small, tmp)
            for rnd in range(rounds):
                order = servers if rnd % 2 == 0 else servers[::-1]
                for s in order:
                    run_round(rnd, s, figs, tmp, big, small, tree, only)
                print(json.dumps({"bench": "webdav", "round": rnd + 1, "of": rounds,
                                  "load": os.getloadavg()[0]}), file=sys.stderr, flush=True)
        finally:
            for s in servers:
                s.stop()
    for fig in figs.values():
        if fig.values:
            print(json.dumps(fig.report()), flush=True)


def twin_cert_dir(twin_root: Path) -> Path:
    return next(twin_root.glob("*/tls"))


if __name__ == "__main__":
    main()
