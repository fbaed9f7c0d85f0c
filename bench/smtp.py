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
.venv/bin/python bench/smtp.py [messages] [sessions] [rounds] [--rspamd]

``--rspamd`` adds a second twin whose inbound port scans every message with a
real rspamd (started as the tests start it, ``tests/rspamd.py``: the
distribution's rules, network checks off, Bayes in Redis) before its 250, and
prints its rates next to the first twin's (which runs the default built-in
filter), plus rspamd's own CPU per message (all its processes). Both twins'
"filed" count Inbox + Junk (rspamd may call smtp-source's text junk).
A Postfix+rspamd (milter) pair is not set up here: see the README's Spam
paragraph for why the comparison is twin with vs without rspamd.
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

    def __init__(self, twin: TwinProcess, boxes: tuple[str, ...] = ("INBOX",)) -> None:
        self.boxes = boxes
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the twin's self-signed certificate
        self.imap = imaplib.IMAP4_SSL("127.0.0.1", twin.port("imaps"), ssl_context=ctx)
        self.imap.login(twin.login, twin.password)

    def count(self) -> int:
        total = 0
        for box in self.boxes:
            _, data = self.imap.status(box, "(MESSAGES)")
            total += int(data[0].split(b"MESSAGES ")[1].split(b")")[0])
        return total

    def wait_for(self, total: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Inbox did not reach {total} messages")
            time.sleep(0.005)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and all its descendants (rspamd's workers are children)."""
    total = cpu_seconds(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += tree_cpu_seconds(int(child))
    return total


def count_stored(twin: TwinProcess, boxes: tuple[str, ...] = ("INBOX",)) -> int:
    from core.service import Service

    async def count() -> int:
        service = Service.open(twin.data)
        total = 0
        try:
            for box in boxes:
                snapshot, watch = await service.mail.open(twin.login, box, read_only=True)
                service.mail.close(watch)
                total += len(snapshot.uids)
            return total
        finally:
            service.close()
    return asyncio.run(count())


def main() -> int:
    with_rspamd = "--rspamd" in sys.argv
    argv = [a for a in sys.argv if a != "--rspamd"]
    messages = int(argv[1]) if len(argv) > 1 else 2000
    sessions = int(argv[2]) if len(argv) > 2 else 20
    rounds = int(argv[3]) if len(argv) > 3 else 3
    if not shutil.which("smtp-source") or not shutil.which("smtp-sink"):
        print("smtp-source/smtp-sink missing: apt-get install postfix", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="twin-bench-smtp-") as tmp:
        twin = TwinProcess.create(Path(tmp), "bob", sets=["smtp.verify_dns=false",
                                                          "log.level=warning"])
        os.environ["TWIN_LOG_LEVEL"] = "warning"
        twin.start()
        scanned = rspamd = None
        if with_rspamd:
            from tests.rspamd import start_rspamd

            rspamd = start_rspamd(Path(tmp) / "rspamd")
            scanned = TwinProcess.create(Path(tmp), "carol", sets=[
                "smtp.verify_dns=false", "log.level=warning", f"spam.rspamd_url={rspamd.url}"])
            scanned.start()
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
            inboxes = {"twin": InboxWatch(twin, BOXES)}
            rcpts = {"twin": twin.login}
            if scanned is not None and rspamd is not None:
                assert scanned.proc is not None
                targets["twin+rspamd"] = scanned.port("smtp")
                pids["twin+rspamd"] = scanned.proc.pid
                pids["rspamd"] = rspamd.proc.pid
                inboxes["twin+rspamd"] = InboxWatch(scanned, BOXES)
                rcpts["twin+rspamd"] = scanned.login
            servers = Servers(targets, pids, inboxes, rcpts)
            for reuse in (False, True):
                run_mode(servers, messages, sessions, reuse, rounds)
            for watch in inboxes.values():
                watch.imap.logout()
        finally:
            for proc in (sink, aio):
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
            twin.stop()
            if scanned is not None:
                scanned.stop()
            if rspamd is not None:
                actions = rspamd.stat().get("actions")
                emit("smtp", f"rspamd actions {json.dumps(actions)}", 0, "-")
                rspamd.close()
        expected = 2 * rounds * (messages + min(200, messages))
        for name, who in (("twin", twin), ("twin+rspamd", scanned)):
            if who is not None:
                emit("smtp", f"{name} messages stored durably (of sent)",
                     count_stored(who, BOXES), f"of {expected}")
    return 0


BOXES = ("INBOX", "Junk")


class Servers:
    """The three servers under test, and the twin's Inbox as a client sees it."""

    def __init__(self, ports: dict[str, int], pids: dict[str, int],
                 inboxes: dict[str, InboxWatch], rcpts: dict[str, str]) -> None:
        self.ports, self.pids, self.inboxes, self.rcpts = ports, pids, inboxes, rcpts
        self.in_inbox = dict.fromkeys(inboxes, 0)  # messages each twin should have filed

    def rcpt(self, name: str) -> str:
        return self.rcpts.get(name, self.rcpts["twin"])


def run_mode(servers: Servers, messages: int, sessions: int, reuse: bool,
             rounds: int) -> None:
    """Drive every server ``rounds`` times, interleaved, and print the medians.

    The machine's speed drifts by a third between runs (a shared host), so one
    pass per server compares the twin and the sink at different moments.
    Interleaving them and taking each one's median compares like with like;
    the per-round ratios' range is printed too, so nothing is hidden."""
    mode = "reused connections" if reuse else "connection per message"
    twins = list(servers.inboxes)
    rates: dict[str, list[float]] = {name: [] for name in
                                     [*servers.ports, *(f"{t} filed" for t in twins)]}
    cpu_ms: dict[str, list[float]] = {name: [] for name in [*servers.ports, "rspamd"]}
    for _ in range(rounds):
        for name, port in servers.ports.items():
            warm = min(200, messages)
            drive(port, warm, sessions, reuse, servers.rcpt(name))
            if name in servers.inboxes:  # start with the warm-up filed, not queued
                servers.in_inbox[name] += warm
                servers.inboxes[name].wait_for(servers.in_inbox[name])
            cpu = cpu_seconds(servers.pids[name])
            scanner = tree_cpu_seconds(servers.pids["rspamd"]) if "rspamd" in servers.pids \
                and name == "twin+rspamd" else 0.0
            start = time.perf_counter()
            drive(port, messages, sessions, reuse, servers.rcpt(name))
            rates[name].append(messages / (time.perf_counter() - start))
            if name in servers.inboxes:
                servers.in_inbox[name] += messages
                servers.inboxes[name].wait_for(servers.in_inbox[name])
                rates[f"{name} filed"].append(messages / (time.perf_counter() - start))
            cpu_ms[name].append((cpu_seconds(servers.pids[name]) - cpu) / messages * 1e3)
            if scanner:
                cpu_ms["rspamd"].append(
                    (tree_cpu_seconds(servers.pids["rspamd"]) - scanner) / messages * 1e3)
    for name in servers.ports:
        emit("smtp", f"{name}, {mode}, 4 KiB, {sessions} sessions, median of {rounds}",
             statistics.median(rates[name]), "msg/s")
        if name in servers.inboxes:
            emit("smtp", f"{name}, filed into Inbox/Junk, {mode}, median",
                 statistics.median(rates[f"{name} filed"]), "msg/s")
        emit("smtp", f"{name} CPU per message, {mode}, median", statistics.median(cpu_ms[name]),
             "ms")
    if cpu_ms["rspamd"]:
        emit("smtp", f"rspamd CPU per message (all its processes), {mode}, median",
             statistics.median(cpu_ms["rspamd"]), "ms")
        emit("smtp", f"ratio twin+rspamd/twin, {mode}",
             statistics.median(rates["twin+rspamd"]) / statistics.median(rates["twin"]), "x")
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
