"""A real rspamd for the tests and benches, unprivileged, in a temp dir, on loopback ports.

rspamd reads the distribution's /etc/rspamd/rspamd.conf with ``LOCAL_CONFDIR``
pointed at our temp dir, so our ``local.d`` / ``override.d`` files set: the
normal worker and the controller on free loopback ports (the controller
without its default "loopback needs no password" ``secure_ip``, so the
password is really checked), no proxy or fuzzy worker, Bayes in a Redis the
helper starts (rspamd 3.4's only maintained statistics backend), and the
modules that ask the network (DNS blocklists, SPF/DKIM/DMARC, fuzzy hashes,
greylisting, rate limits) off: the tests have no network and must not wait on
it. Two knobs make verdicts predictable: ``actions`` (reject at 15, add
header at 6, no greylist/rewrite) and a multimap symbol ``TWIN_PROBE`` worth 8
points for a Subject containing ``twin-spam-probe``: "add header", i.e. Junk.

Start-up compiles rspamd's regexps with Hyperscan (~25 s on a 2-core box);
the compiled cache is kept in ``HS_CACHE`` across runs, which brings later
starts to a few seconds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.servers import Server, free_port, start_redis
from tests.tools import require, require_tool

CONF = Path("/etc/rspamd/rspamd.conf")
HS_CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "twin-test-rspamd-hs"
PROBE = "twin-spam-probe"
PASSWORD = "test-controller-secret"
OFF = ("rbl", "surbl", "fuzzy_check", "greylist", "ratelimit", "asn", "phishing", "dkim",
       "spf", "dmarc", "arc", "mx_check", "history_redis", "neural", "reputation", "replies",
       "url_redirector", "dcc", "bimi", "rspamd_update", "emails", "hfilter", "dkim_signing",
       "metadata_exporter", "clickhouse", "elastic", "p0f", "external_services", "antivirus")


@dataclass
class Rspamd:
    proc: subprocess.Popen[bytes]
    redis: Server
    port: int
    controller_port: int
    workdir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def controller_url(self) -> str:
        return f"http://127.0.0.1:{self.controller_port}"

    def stat(self) -> dict[str, object]:
        r = httpx.get(f"{self.controller_url}/stat", headers={"Password": PASSWORD}, timeout=10)
        r.raise_for_status()
        data: dict[str, object] = r.json()
        return data

    def learned(self) -> int:
        return int(str(self.stat()["learned"]))

    def log(self) -> str:
        path = self.workdir / "rspamd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.redis.close()


def _write_config(d: Path, port: int, controller: int, redis_port: int) -> None:
    local, override = d / "local.d", d / "override.d"
    local.mkdir(parents=True)
    override.mkdir()
    (local / "worker-normal.inc").write_text(f'bind_socket = "127.0.0.1:{port}";\ncount = 1;\n')
    (override / "worker-controller.inc").write_text(
        f'bind_socket = "127.0.0.1:{controller}";\ncount = 1;\npassword = "{PASSWORD}";\n'
        f'enable_password = "{PASSWORD}";\nsecure_ip = "192.0.2.254";\n')
    for worker in ("worker-proxy.inc", "worker-fuzzy.inc"):
        (local / worker).write_text("enabled = false;\n")
    (local / "logging.inc").write_text(
        f'type = "file";\nfilename = "{d}/rspamd.log";\nlevel = "info";\n')
    (local / "redis.conf").write_text(f'servers = "127.0.0.1:{redis_port}";\n')
    (local / "classifier-bayes.conf").write_text("min_learns = 1;\n")
    (local / "options.inc").write_text(
        'dns { nameserver = ["127.0.0.1:1"]; timeout = 0.1s; retransmits = 0; }\n'
        f'hs_cache_dir = "{HS_CACHE}";\n')
    for module in OFF:
        (local / f"{module}.conf").write_text("enabled = false;\n")
    (override / "actions.conf").write_text(
        "reject = 15;\nadd_header = 6;\ngreylist = null;\nrewrite_subject = null;\n")
    (d / "probe.map").write_text(f"/{PROBE}/i\n")
    (local / "multimap.conf").write_text(
        'TWIN_PROBE { type = "header"; header = "Subject"; regexp = true; '
        f'map = "{d}/probe.map"; score = 8.0; description = "twin test probe"; }}\n')


def start_rspamd(workdir: Path, *, wait: float = 120.0) -> Rspamd:
    binary = require_tool("rspamd")
    require(CONF.exists(), f"rspamd's configuration {CONF} is missing")
    workdir.mkdir(parents=True, exist_ok=True)
    HS_CACHE.mkdir(parents=True, exist_ok=True)
    redis = start_redis(workdir / "redis")
    port, controller = free_port(), free_port()
    _write_config(workdir / "conf", port, controller, redis.port)
    for sub in ("db", "run"):
        (workdir / sub).mkdir()
    root = ["-u", "root", "-g", "root"] if os.geteuid() == 0 else []
    with open(workdir / "stderr", "wb") as stderr:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [binary, "-f", "-i", *root, "-c", str(CONF), "--var",
             f"LOCAL_CONFDIR={workdir}/conf", "--var", f"DBDIR={workdir}/db",
             "--var", f"RUNDIR={workdir}/run", "--var", f"LOGDIR={workdir}"],
            stdout=subprocess.DEVNULL, stderr=stderr, cwd=workdir)
    server = Rspamd(proc, redis, port, controller, workdir / "conf")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            server.redis.close()
            raise RuntimeError(f"rspamd exited with {proc.returncode}: "
                               f"{(workdir / 'stderr').read_text()[-2000:]}"
                               f"{server.log()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):  # not listening yet
            if (httpx.get(f"{server.url}/ping", timeout=1).text.strip() == "pong"
                    and httpx.get(f"{server.controller_url}/ping", timeout=1).status_code == 200):
                return server
        time.sleep(0.25)
    server.close()
    raise RuntimeError(f"rspamd did not answer within {wait:.0f} s: {server.log()[-2000:]}")


def rspamd_available() -> bool:
    return shutil.which("rspamd") is not None
