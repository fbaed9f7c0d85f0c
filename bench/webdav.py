"""WebDAV throughput: the twin (encrypting + dispersing) vs plain wsgidav on the same disk.

Three servers, one JSON line per figure:

- the twin as it runs (``twin serve``: uvicorn + a2wsgi, HTTPS), whose peak RSS
  (VmHWM) is also read after a 1 GiB PUT and GET;
- plain wsgidav: ``FilesystemProvider`` behind the same uvicorn + a2wsgi + TLS
  stack (block size = the twin's ``webdav.block_size``), in a child process;
- the twin's own provider behind cheroot (``BENCH_CHEROOT=1``, the default when
  cheroot is importable): one process runs the twin *and* a cheroot TLS
  listener over the same wsgidav app, so a2wsgi and cheroot are measured on the
  same store in the same run. This decides which server WebDAV uses (see
  ``protocols/webdav/__init__.py``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.twins import PORT_ZERO, TwinProcess

MiB = 1024 * 1024
BLOCK = 256 * 1024

PEER = r"""
import sys, uvicorn
from a2wsgi import WSGIMiddleware
from wsgidav.wsgidav_app import WsgiDAVApp
from wsgidav.fs_dav_provider import FilesystemProvider
root, cert, key, port = sys.argv[1:5]
app = WsgiDAVApp({"provider_mapping": {"/": FilesystemProvider(root)},
                  "http_authenticator": {"domain_controller": None, "accept_basic": True,
                                         "accept_digest": False, "default_to_digest": False},
                  "simple_dc": {"user_mapping": {"*": True}}, "verbose": 0,
                  "block_size": 262144, "dir_browser": {"enable": False},
                  "logging": {"enable": False}})
uvicorn.run(WSGIMiddleware(app, workers=16), host="127.0.0.1", port=int(port),
            ssl_certfile=cert, ssl_keyfile=key, log_level="warning", access_log=False)
"""

# The twin (its normal a2wsgi mount) plus its wsgidav app on a cheroot listener.
CHEROOT = r"""
import asyncio, contextlib, sys, threading
from pathlib import Path
from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter
from wsgidav.wsgidav_app import WsgiDAVApp
from core.service import Service
from protocols.webdav.app import BodyLimit, wsgidav_config
from protocols.webdav.bridge import Bridge
data, port, zero = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(",")

async def main() -> None:
    service = Service.open(data, {k: 0 for k in zero})
    await service.start()
    dav = WsgiDAVApp(wsgidav_config(service, Bridge(asyncio.get_running_loop())))
    app = wsgi.PathInfoDispatcher({"/dav": BodyLimit(dav, 1 << 20)})
    server = wsgi.Server(("127.0.0.1", port), app, numthreads=16)
    server.ssl_adapter = BuiltinSSLAdapter(str(data / "tls/cert.pem"), str(data / "tls/key.pem"))
    threading.Thread(target=server.safe_start, daemon=True).start()
    try:
        await asyncio.Event().wait()
    finally:
        server.stop()
        await service.stop()

with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends a run quietly
    asyncio.run(main())
"""


def emit(bench: str, figure: str, value: float, unit: str) -> None:
    print(json.dumps({"bench": bench, "figure": figure, "value": round(value, 2),
                      "unit": unit}), flush=True)


def body(size: int) -> Iterator[bytes]:
    block = os.urandom(BLOCK)
    sent = 0
    while sent < size:
        n = min(BLOCK, size - sent)
        yield block[:n]
        sent += n


def put(client: httpx.Client, url: str, size: int) -> float:
    t = time.perf_counter()
    r = client.put(url, content=body(size), headers={"Content-Length": str(size)})
    assert r.status_code in (200, 201, 204), r.text
    return size / MiB / (time.perf_counter() - t)


def get(client: httpx.Client, url: str, size: int) -> float:
    t = time.perf_counter()
    got = 0
    with client.stream("GET", url) as r:
        for chunk in r.iter_raw(BLOCK):
            got += len(chunk)
    assert got == size, got
    return size / MiB / (time.perf_counter() - t)


def put_get(client: httpx.Client, url: str, size: int) -> tuple[float, float]:
    return put(client, url, size), get(client, url, size)


def vm_hwm(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_up(client: httpx.Client, url: str) -> None:
    for _ in range(300):
        try:
            client.request("OPTIONS", url)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise TimeoutError(url)


def cheroot_vs_a2wsgi(tmp: Path, size: int, rounds: int) -> dict[str, float]:
    """Best of ``rounds`` alternating PUT/GETs through each server of one twin process."""
    twin = TwinProcess.create(tmp, "both")
    port = 19000 + os.getpid() % 900
    proc = subprocess.Popen([sys.executable, "-c", CHEROOT, str(twin.data), str(port),
                             ",".join(PORT_ZERO)], cwd=Path(__file__).resolve().parent.parent)
    best: dict[str, float] = {}
    try:
        status = twin.data / "run" / "status.json"
        for _ in range(300):
            if status.exists():
                break
            time.sleep(0.1)
        https = next(i for i in json.loads(status.read_text())["listeners"]
                     if i["name"] == "https")
        urls = {"a2wsgi": f"https://127.0.0.1:{https['port']}/dav/",
                "cheroot": f"https://127.0.0.1:{port}/dav/"}
        with httpx.Client(verify=False, timeout=600, auth=(twin.login, twin.password)) as c:
            for url in urls.values():
                wait_up(c, url)
            for _ in range(rounds):
                for server, url in urls.items():
                    p, g = put_get(c, url + f"{server}.bin", size)
                    best[f"{server} PUT"] = max(best.get(f"{server} PUT", 0.0), p)
                    best[f"{server} GET"] = max(best.get(f"{server} GET", 0.0), g)
    finally:
        proc.terminate()
        proc.wait()
    return best


def main() -> None:
    size = int(os.environ.get("BENCH_MIB", "256")) * MiB
    big = int(os.environ.get("BENCH_RSS_MIB", "1024")) * MiB
    cheroot = os.environ.get("BENCH_CHEROOT", "1") == "1" and bool(
        importlib.util.find_spec("cheroot"))
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        twin = TwinProcess.create(Path(tmp), "bench").start()
        try:
            with httpx.Client(verify=False, timeout=600,
                              auth=(twin.login, twin.password)) as c:
                tput, tget = put_get(c, f"{twin.url}/dav/bench.bin", size)
                put_get(c, f"{twin.url}/dav/big.bin", big)
                rss = vm_hwm(twin.proc.pid) if twin.proc else 0.0
        finally:
            twin.stop()
        root = Path(tmp) / "plain"
        root.mkdir()
        port = "18" + str(os.getpid() % 900 + 100)
        peer = subprocess.Popen([sys.executable, "-c", PEER, str(root),
                                 str(twin.data / "tls/cert.pem"), str(twin.data / "tls/key.pem"),
                                 port])
        try:
            url = f"https://127.0.0.1:{port}/bench.bin"
            with httpx.Client(verify=False, timeout=600) as c:
                wait_up(c, f"https://127.0.0.1:{port}/")
                pput, pget = put_get(c, url, size)
        finally:
            peer.terminate()
            peer.wait()
        servers = cheroot_vs_a2wsgi(Path(tmp), size, 2) if cheroot else {}
    mib = size // MiB
    emit("webdav", f"twin PUT {mib} MiB", tput, "MiB/s")
    emit("webdav", f"twin GET {mib} MiB", tget, "MiB/s")
    emit("webdav", f"plain wsgidav PUT {mib} MiB", pput, "MiB/s")
    emit("webdav", f"plain wsgidav GET {mib} MiB", pget, "MiB/s")
    emit("webdav", "PUT ratio twin/plain", tput / pput, "ratio")
    emit("webdav", "GET ratio twin/plain", tget / pget, "ratio")
    emit("webdav", f"twin peak RSS (VmHWM) after {big // MiB} MiB PUT+GET", rss, "MiB")
    for figure, value in servers.items():
        emit("webdav", f"twin provider via {figure} {mib} MiB (best of 2)", value, "MiB/s")


if __name__ == "__main__":
    main()
