"""Message latency to an IMAP IDLE push, and throughput, between two real twins.

Two ``twin serve`` processes, alice and bob, share a phonebook. Bob's IMAP
session waits in IDLE (``tests.imapidle``); a message has "arrived" when the
``EXISTS`` push naming it reaches that session. Three paths, each measured
the same way:

- ``local``: SMTP inbound on bob (loopback, plaintext) to bob: the base, one
  twin, journal -> filer -> IDLE;
- ``twin``: SMTP submission on alice (STARTTLS + AUTH) to bob: alice's outbox
  sends a signed ``mail.deliver`` envelope, bob journals and files it;
- ``native``: ``twin send bob TEXT`` as the CLI does it while alice runs
  (``POST /twin/v1/local/send``): a native message, into bob's peer inbox and
  his mail Inbox.

Latency runs from the sender's acknowledgement (the 250, or the local API's
answer: durably queued) to the push. Figures per path: idle (one message at a
time) p50/p90/p99; the maximum rate (``MESSAGES`` over ``SESSIONS`` sessions
as fast as they go, until all are in bob's Inbox); then latency p50/p99 at
25 %, 50 % and 100 % of that rate, sent open-loop at a fixed rate. Under load
each message is matched to its push exactly: after the run every message's
text is fetched with its position in the mailbox, and position p arrived with
the first ``EXISTS`` >= p. Bob's ``peer.rate_per_minute`` is raised for the
run (the default, 6,000 a minute per sender, would refuse a 1,000 msg/s burst).
The maximum run also gives each twin's CPU per message (user + system time
of its process over the run, from ``/proc``): on this shared machine the
rates swing with other work, the CPU per message much less.
One JSON line per figure. Usage:
.venv/bin/python bench/messaging.py [messages] [sessions] [idle-samples] [paths]
where ``paths`` is a comma-separated subset of ``local,twin,native`` (all by
default), and ``idle-samples`` 0 skips the idle figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiosmtplib
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.imapidle import IdleWatcher  # noqa: E402
from tests.protocols.smtp.helpers import client_tls  # noqa: E402
from tests.twins import TwinProcess  # noqa: E402

TOKEN = re.compile(rb"bench-(\d+)-(\d+)")
LOAD_SECONDS = 4.0
LOAD_MAX_MESSAGES = 2000


def emit(path: str, figure: str, value: float, unit: str) -> None:
    print(json.dumps({"bench": "messaging", "path": path, "figure": figure,
                      "value": round(value, 3), "unit": unit}), flush=True)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


Send = Callable[[str], Awaitable[None]]
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(twin: TwinProcess) -> float:
    """User + system CPU the twin's process has used so far (all its threads)."""
    assert twin.proc is not None
    fields = Path(f"/proc/{twin.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


class Sender:
    """``sessions`` open channels into one path; ``send(token)`` returns at the ack."""

    def __init__(self, sends: list[Send], closers: list[Callable[[], Awaitable[object]]]) -> None:
        self.sends = sends
        self.closers = closers

    async def close(self) -> None:
        for close in self.closers:
            with contextlib.suppress(Exception):  # best effort at the end of a run
                await close()


async def smtp_sender(port: int, login: str | None, password: str | None, mail_from: str,
                      rcpt: str, sessions: int) -> Sender:
    sends: list[Send] = []
    closers: list[Callable[[], Awaitable[object]]] = []
    for _ in range(sessions):
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port,
                                 start_tls=login is not None, tls_context=client_tls())
        await client.connect()
        if login is not None and password is not None:
            await client.login(login, password)

        async def send(token: str, client: aiosmtplib.SMTP = client) -> None:
            data = (f"From: <{mail_from}>\r\nTo: <{rcpt}>\r\nSubject: {token}\r\n\r\n"
                    f"{token}\r\n" + "x" * 900 + "\r\n").encode()  # about 1 KiB
            await client.sendmail(mail_from, [rcpt], data)
        sends.append(send)
        closers.append(client.quit)
    return Sender(sends, closers)


async def native_sender(twin: TwinProcess, to: str, sessions: int) -> Sender:
    token = (twin.data / "run" / "local.token").read_text().strip()
    http = httpx.AsyncClient(verify=False, timeout=60,  # loopback, the twin's own self-signed cert
                             limits=httpx.Limits(max_connections=sessions),
                             headers={"authorization": f"Bearer {token}"})
    url = f"{twin.url}/twin/v1/local/send"

    async def send(text: str) -> None:
        resp = await http.post(url, json={"to": to, "text": text})
        resp.raise_for_status()
    return Sender([send] * sessions, [http.aclose])


def fetch_tokens(twin: TwinProcess, first: int, last: int) -> dict[int, tuple[int, int]]:
    """Mailbox position -> (run, seq) of every message from ``first`` to ``last``."""
    with imaplib.IMAP4_SSL("127.0.0.1", twin.port("imaps"), ssl_context=client_tls()) as imap:
        imap.login(twin.login, twin.password)
        imap.select("INBOX", readonly=True)
        _, data = imap.fetch(f"{first}:{last}", "(BODY.PEEK[TEXT]<0.200>)")
    out: dict[int, tuple[int, int]] = {}
    for item in data:
        if isinstance(item, tuple):
            position = int(item[0].split(b" ", 1)[0])
            m = TOKEN.search(item[1])
            if m:
                out[position] = (int(m.group(1)), int(m.group(2)))
    return out


class Bench:
    def __init__(self, bob: TwinProcess, watcher: IdleWatcher,
                 twins: list[TwinProcess]) -> None:
        self.bob, self.watcher, self.twins = bob, watcher, twins
        self.run = 0

    async def idle(self, path: str, sender: Sender, samples: int) -> None:
        if samples <= 0:
            return
        got = []
        for i in range(samples + 3):  # the first three warm the path up
            self.run += 1
            base = self.watcher.count
            await sender.sends[0](f"bench-{self.run}-0")
            acked = time.perf_counter()
            pushed = await self.watcher.until(base + 1)
            if i >= 3:
                got.append(pushed - acked)
            await asyncio.sleep(0.03 + (i % 5) * 0.01)  # idle between messages
        for p in (50, 90, 99):
            emit(path, f"idle latency p{p}, {samples} messages one at a time",
                 pct(got, p) * 1000, "ms")

    async def load(self, sender: Sender, count: int, rate: float | None
                   ) -> tuple[float, float, list[float]]:
        """Send ``count`` messages (at ``rate``/s, or as fast as the sessions go).

        Returns (submission rate, delivery rate, latencies)."""
        self.run += 1
        run = self.run
        base = self.watcher.count
        acked: dict[int, float] = {}
        queue: asyncio.Queue[int] = asyncio.Queue()
        start = time.perf_counter()

        async def session(send: Send) -> None:
            while True:
                seq = await queue.get()
                if seq < 0:
                    return
                await send(f"bench-{run}-{seq}")
                acked[seq] = time.perf_counter()

        workers = [asyncio.create_task(session(s)) for s in sender.sends]
        for seq in range(count):
            if rate is not None:
                delay = start + seq / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            queue.put_nowait(seq)
        for _ in workers:
            queue.put_nowait(-1)
        await asyncio.gather(*workers)
        submitted = time.perf_counter()
        done = await self.watcher.until(base + count, timeout=300)
        tokens = await asyncio.to_thread(fetch_tokens, self.bob, base + 1, base + count)
        latencies = [self.watcher.seen[pos] - acked[seq]
                     for pos, (r, seq) in tokens.items() if r == run and pos in self.watcher.seen]
        return count / (submitted - start), count / (done - start), latencies

    async def measure(self, path: str, sender: Sender, messages: int, samples: int) -> float:
        await self.idle(path, sender, samples)
        before = [cpu_seconds(t) for t in self.twins]
        sub, rate, lat = await self.load(sender, messages, None)
        for twin, was in zip(self.twins, before, strict=True):
            emit(path, f"CPU per message during the maximum run, {twin.name}",
                 (cpu_seconds(twin) - was) / messages * 1000, "ms")
        emit(path, f"maximum: {messages} messages, {len(sender.sends)} sessions, submitted",
             sub, "msg/s")
        emit(path, f"maximum: {messages} messages, {len(sender.sends)} sessions, "
                   "in bob's Inbox (IDLE)", rate, "msg/s")
        emit(path, "latency p99 during the maximum run", pct(lat, 99) * 1000, "ms")
        for share in (25, 50, 100):
            target = rate * share / 100
            count = int(min(LOAD_MAX_MESSAGES, max(50, target * LOAD_SECONDS)))
            _, got, lat = await self.load(sender, count, target)
            emit(path, f"delivered at {share}% of the maximum", got, "msg/s")
            for p in (50, 99):
                emit(path, f"latency p{p} at {share}% of the maximum "
                           f"({target:.0f} msg/s, {count} messages)", pct(lat, p) * 1000, "ms")
        return rate


async def main(messages: int, sessions: int, samples: int, paths: set[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="twin-bench-messaging-") as tmp:
        sets = ["smtp.verify_dns=false", "log.level=warning", "peer.rate_per_minute=10000000"]
        alice = TwinProcess.create(Path(tmp), "alice", sets=sets)
        bob = TwinProcess.create(Path(tmp), "bob", phonebook=alice.phonebook, sets=sets)
        alice.start()
        bob.start()
        watcher = await IdleWatcher.open(bob.port("imaps"), bob.login, bob.password)
        bench = Bench(bob, watcher, [alice, bob])
        try:
            if "local" in paths:
                local = await smtp_sender(bob.port("smtp"), None, None, "someone@example.com",
                                          bob.login, sessions)
                await bench.measure("local (SMTP inbound -> IDLE, one twin)", local, messages,
                                    samples)
                await local.close()
            if "twin" in paths:
                twin = await smtp_sender(alice.port("submission"), alice.login, alice.password,
                                         alice.login, bob.login, sessions)
                await bench.measure("twin (alice SMTP submission -> bob IDLE)", twin, messages,
                                    samples)
                await twin.close()
            if "native" in paths:
                native = await native_sender(alice, "bob", sessions)
                await bench.measure("native (twin send -> bob IDLE)", native, messages, samples)
                await native.close()
        finally:
            await watcher.close()
            alice.stop()
            bob.stop()


if __name__ == "__main__":
    argv = sys.argv[1:]
    asyncio.run(main(int(argv[0]) if argv else 2000, int(argv[1]) if len(argv) > 1 else 10,
                     int(argv[2]) if len(argv) > 2 else 100,
                     set(argv[3].split(",")) if len(argv) > 3 else {"local", "twin", "native"}))
