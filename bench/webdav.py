"""WebDAV throughput: the twin (encrypting + dispersing) vs plain wsgidav on the same disk.

Peer: wsgidav's ``FilesystemProvider`` served by the same uvicorn + a2wsgi stack
(HTTPS with the twin's certificate, block size = webdav.block_size), in a child
process. Prints one JSON line per figure; the twin's peak RSS (VmHWM) is
measured after a 1 GiB PUT and GET.
"""

from __future__ import annotations

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
from tests.twins import TwinProcess

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


def put_get(client: httpx.Client, url: str, size: int) -> tuple[float, float]:
    t = time.perf_counter()
    r = client.put(url, content=body(size), headers={"Content-Length": str(size)})
    assert r.status_code in (200, 201, 204), r.text
    put = size / MiB / (time.perf_counter() - t)
    t = time.perf_counter()
    got = 0
    with client.stream("GET", url) as r:
        for chunk in r.iter_raw(BLOCK):
            got += len(chunk)
    assert got == size, got
    return put, size / MiB / (time.perf_counter() - t)


def vm_hwm(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    size = int(os.environ.get("BENCH_MIB", "256")) * MiB
    big = int(os.environ.get("BENCH_RSS_MIB", "1024")) * MiB
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
                for _ in range(100):
                    try:
                        c.request("OPTIONS", f"https://127.0.0.1:{port}/")
                        break
                    except httpx.TransportError:
                        time.sleep(0.1)
                pput, pget = put_get(c, url, size)
        finally:
            peer.terminate()
            peer.wait()
    mib = size // MiB
    emit("webdav", f"twin PUT {mib} MiB", tput, "MiB/s")
    emit("webdav", f"twin GET {mib} MiB", tget, "MiB/s")
    emit("webdav", f"plain wsgidav PUT {mib} MiB", pput, "MiB/s")
    emit("webdav", f"plain wsgidav GET {mib} MiB", pget, "MiB/s")
    emit("webdav", "PUT ratio twin/plain", tput / pput, "ratio")
    emit("webdav", "GET ratio twin/plain", tget / pget, "ratio")
    emit("webdav", f"twin peak RSS (VmHWM) after {big // MiB} MiB PUT+GET", rss, "MiB")


if __name__ == "__main__":
    main()
