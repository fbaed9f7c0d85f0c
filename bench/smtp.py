"""SMTP inbound throughput: the twin (durable) vs smtp-sink vs a bare aiosmtpd sink.

Postfix's ``smtp-source`` drives each server on loopback, plaintext, first
with one connection per message, then with reused connections (``-d``). The
twin has every message durable (sealed in its journal, fdatasync'ed,
group-committed) before its 250, and files it into the Inbox (dispersed
store + mail index) behind; smtp-sink and the aiosmtpd sink discard. For the
twin two rates: accepted (the last 250) and filed (the last message visible
over IMAP STATUS), both from the first connection. Prints one JSON line per
figure, the ratios to aiosmtpd and smtp-sink, and each server's CPU time per
message (user + system, from /proc, steadier than msg/s on a shared machine;
the twin's includes filing). Usage:
.venv/bin/python bench/smtp.py [messages] [sessions] [rounds]
"""

from __future__ import annotations

import asyncio
import imaplib
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.twins import TwinProcess  # noqa: E402

AIOSMTPD_SINK = """
import asyncio, sys
from aiosmtpd.smtp import SMTP
class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Sink()), "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def emit(bench: str, figure: str, value: float, unit: str) -> None:
    print(json.dumps({"bench": bench, "figure": figure, "value": round(value, 3),
                      "unit": unit}), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drive(port: int, messages: int, sessions: int, reuse: bool, rcpt: str) -> None:
    """Send ``messages`` with smtp-source to 127.0.0.1:port; returns after the last 250."""
    args = ["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", "4096",
            "-f", "bench@example.com", "-t", rcpt, "-M", "bench.example"]
    if reuse:
        args.append("-d")
    subprocess.run([*args, f"127.0.0.1:{port}"], check=True, timeout=600,
                   stdout=subprocess.DEVNULL)


class InboxWatch:
    """Counts the twin's Inbox over IMAP (STATUS), as a mail client would see it."""

    def __init__(self, twin: TwinProcess) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the twin's self-signed certificate
        self.imap = imaplib.IMAP4_SSL("127.0.0.1", twin.port("imaps"), ssl_context=ctx)
        self.imap.login(twin.login, twin.password)

    def count(self) -> int:
        _, data = self.imap.status("INBOX", "(MESSAGES)")
        return int(data[0].split(b"MESSAGES ")[1].split(b")")[0])

    def wait_for(self, total: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Inbox did not reach {total} messages")
            time.sleep(0.005)


def count_stored(twin: TwinProcess) -> int:
    from core.service import Service

    async def count() -> int:
        service = Service.open(twin.data)
        try:
            snapshot, watch = await service.mail.open(twin.login, "INBOX", read_only=True)
            service.mail.close(watch)
            return len(snapshot.uids)
        finally:
            service.close()
    return asyncio.run(count())


def main() -> int:
    messages = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    sessions = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    if not shutil.which("smtp-source") or not shutil.which("smtp-sink"):
        print("smtp-source/smtp-sink missing: apt-get install postfix", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="twin-bench-smtp-") as tmp:
        twin = TwinProcess.create(Path(tmp), "bob", sets=["smtp.verify_dns=false",
                                                          "log.level=warning"])
        os.environ["TWIN_LOG_LEVEL"] = "warning"
        twin.start()
        sink_port, aio_port = free_port(), free_port()
        root = ["-u", "nobody"] if os.geteuid() == 0 else []  # smtp-sink refuses to run as root
        sink = subprocess.Popen(["smtp-sink", *root, f"127.0.0.1:{sink_port}", "256"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        aio = subprocess.Popen([sys.executable, "-c", AIOSMTPD_SINK, str(aio_port)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            wait_port(sink_port)
            wait_port(aio_port)
            assert twin.proc is not None
            targets = {"twin": twin.port("smtp"), "smtp-sink": sink_port,
                       "aiosmtpd": aio_port}
            pids = {"twin": twin.proc.pid, "smtp-sink": sink.pid, "aiosmtpd": aio.pid}
            inbox = InboxWatch(twin)
            servers = Servers(targets, pids, inbox, twin.login)
            for reuse in (False, True):
                run_mode(servers, messages, sessions, reuse, rounds)
            inbox.imap.logout()
        finally:
            for proc in (sink, aio):
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
            twin.stop()
        stored = count_stored(twin)
        expected = 2 * rounds * (messages + min(200, messages))
        emit("smtp", "twin messages stored durably (of sent)", stored, f"of {expected}")
    return 0


class Servers:
    """The three servers under test, and the twin's Inbox as a client sees it."""

    def __init__(self, ports: dict[str, int], pids: dict[str, int], inbox: InboxWatch,
                 rcpt: str) -> None:
        self.ports, self.pids, self.inbox, self.rcpt = ports, pids, inbox, rcpt
        self.in_inbox = 0  # messages the twin should have filed so far


def run_mode(servers: Servers, messages: int, sessions: int, reuse: bool,
             rounds: int) -> None:
    """Drive every server ``rounds`` times, interleaved, and print the medians.

    The machine's speed drifts by a third between runs (a shared host), so one
    pass per server compares the twin and the sink at different moments.
    Interleaving them and taking each one's median compares like with like;
    the per-round ratios' range is printed too, so nothing is hidden."""
    mode = "reused connections" if reuse else "connection per message"
    rates: dict[str, list[float]] = {name: [] for name in [*servers.ports, "twin filed"]}
    cpu_ms: dict[str, list[float]] = {name: [] for name in servers.ports}
    for _ in range(rounds):
        for name, port in servers.ports.items():
            warm = min(200, messages)
            drive(port, warm, sessions, reuse, servers.rcpt)
            if name == "twin":  # start with the warm-up filed, not queued
                servers.in_inbox += warm
                servers.inbox.wait_for(servers.in_inbox)
            cpu = cpu_seconds(servers.pids[name])
            start = time.perf_counter()
            drive(port, messages, sessions, reuse, servers.rcpt)
            rates[name].append(messages / (time.perf_counter() - start))
            if name == "twin":
                servers.in_inbox += messages
                servers.inbox.wait_for(servers.in_inbox)
                rates["twin filed"].append(messages / (time.perf_counter() - start))
            cpu_ms[name].append((cpu_seconds(servers.pids[name]) - cpu) / messages * 1e3)
    for name in servers.ports:
        emit("smtp", f"{name}, {mode}, 4 KiB, {sessions} sessions, median of {rounds}",
             statistics.median(rates[name]), "msg/s")
        if name == "twin":
            emit("smtp", f"twin, filed into the Inbox, {mode}, median",
                 statistics.median(rates["twin filed"]), "msg/s")
        emit("smtp", f"{name} CPU per message, {mode}, median", statistics.median(cpu_ms[name]),
             "ms")
    per_round = [t / a for t, a in zip(rates["twin"], rates["aiosmtpd"], strict=True)]
    aio = statistics.median(rates["aiosmtpd"])
    emit("smtp", f"ratio twin/aiosmtpd, {mode}", statistics.median(rates["twin"]) / aio, "x")
    emit("smtp", f"ratio twin filed/aiosmtpd, {mode}",
         statistics.median(rates["twin filed"]) / aio, "x")
    emit("smtp", f"ratio twin/aiosmtpd, {mode}, lowest round", min(per_round), "x")
    emit("smtp", f"ratio twin/aiosmtpd, {mode}, highest round", max(per_round), "x")
    emit("smtp", f"ratio twin/smtp-sink, {mode}",
         statistics.median(rates["twin"]) / statistics.median(rates["smtp-sink"]), "x")


if __name__ == "__main__":
    sys.exit(main())
