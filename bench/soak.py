"""Soak: two real twins under a mixed load for a long time; does anything grow?

Starts alice and bob (``twin serve`` processes, as tests/twins.py does) and
runs against them, each in its own thread:

- SMTP inbound to alice (``--smtp-rate`` msg/s, a connection per 20 messages);
- alice -> bob submission on alice's implicit-TLS port with AUTH (``--submit-rate``);
- native ``twin send`` from alice to bob (a CLI process every ``--send-every`` s);
- per twin three IMAP clients: one in IDLE, one polling (which reads every
  message's ``X-Soak-Id`` to check delivery exactly once, then expunges all
  but the newest 100 so live mail stays flat), one doing APPEND / MOVE /
  EXPUNGE churn in its own folders;
- WebDAV PUT / GET / DELETE / PROPFIND on ``--files`` files in alice's tree;
  bob reading a file alice shared with him through his own WebDAV;
- ``twin storage verify`` on alice every ``--verify-every`` s.

Every ``--every`` s it samples each twin's RSS, open fds, threads, every file
in its data dir (bytes on disk) and, per operation, count, errors and latency,
and prints them as one JSON line. At the end it prints per resource the slope
per hour after ``--warmup`` minutes (least squares) and flags those that grow
beyond what live data explains, then the delivery check (missing, duplicate).

Run: ``.venv/bin/python bench/soak.py --minutes 30`` (JSON lines on stdout).
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import functools
import imaplib
import itertools
import json
import os
import random
import re
import select
import smtplib
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.twins import TwinProcess, twin_cli  # noqa: E402

MiB = 1024 * 1024
KEEP_IN_INBOX = 100
# growth tolerated per hour after warm-up before a resource is flagged
TOLERANCE = {"rss_mib": 16.0, "fds": 20.0, "threads": 4.0}
FILE_TOLERANCE_MIB = 8.0  # per group of data-dir files


def emit(obj: dict[str, object]) -> None:
    print(json.dumps(obj), flush=True)


@dataclass
class OpStats:
    """Latencies and errors of one operation since the last sample."""
    lat: list[float] = field(default_factory=list)
    errors: int = 0
    last_error: str = ""
    total: int = 0
    total_errors: int = 0


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: dict[str, OpStats] = defaultdict(OpStats)

    @contextlib.contextmanager
    def op(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        except Exception as exc:  # counted; the load goes on
            with self._lock:
                s = self._ops[name]
                s.errors += 1
                s.total_errors += 1
                s.last_error = f"{type(exc).__name__}: {exc}"[:600]
            return
        with self._lock:
            s = self._ops[name]
            s.lat.append(time.monotonic() - t0)
            s.total += 1

    def take(self) -> dict[str, dict[str, object]]:
        with self._lock:
            out: dict[str, dict[str, object]] = {}
            for name, s in sorted(self._ops.items()):
                lat = sorted(s.lat)
                out[name] = {
                    "n": len(lat), "errors": s.errors,
                    "p50_ms": round(1000 * lat[len(lat) // 2], 1) if lat else None,
                    "p99_ms": round(1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1)
                    if lat else None,
                }
                if s.errors:
                    out[name]["last_error"] = s.last_error
                s.lat, s.errors = [], 0
            return out

    def totals(self) -> dict[str, tuple[int, int]]:
        with self._lock:
            return {n: (s.total, s.total_errors) for n, s in self._ops.items()}


class Soak:
    def __init__(self, args: argparse.Namespace, alice: TwinProcess, bob: TwinProcess) -> None:
        self.args = args
        self.alice, self.bob = alice, bob
        self.stats = Stats()
        self.stop = threading.Event()
        self.ids = itertools.count(1)
        self.sent: dict[str, set[str]] = {"alice": set(), "bob": set()}
        self.seen: dict[str, Counter[str]] = {"alice": Counter(), "bob": Counter()}
        self.lock = threading.Lock()
        self.tls = ssl.create_default_context()
        self.tls.check_hostname = False
        self.tls.verify_mode = ssl.CERT_NONE

    # -- helpers

    def paced(self, rate: float, fn: Callable[[], None]) -> None:
        """Call ``fn`` ``rate`` times a second (at most; slower if it is slow) until stop."""
        if rate <= 0:
            return
        period, due = 1.0 / rate, time.monotonic()
        while not self.stop.is_set():
            fn()
            due += period
            delay = due - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            elif delay < -5:
                due = time.monotonic()  # far behind: do not burst to catch up

    def message(self, to: str, sender: str, twin: str, size: int = 2000) -> bytes:
        soak_id = f"{twin}-{next(self.ids)}"
        if twin in self.sent:  # a twin whose INBOX the pollers read
            with self.lock:
                self.sent[twin].add(soak_id)
        body = ("soak " * 15 + "\r\n").encode() * max(1, size // 77)
        return (f"From: {sender}\r\nTo: {to}\r\nSubject: soak {soak_id}\r\n"
                f"Message-ID: {email.utils.make_msgid()}\r\nX-Soak-Id: {soak_id}\r\n"
                f"Date: {email.utils.formatdate()}\r\n\r\n").encode() + body

    # -- load

    def smtp_inbound(self) -> None:
        client: smtplib.SMTP | None = None
        count = 0

        def one() -> None:
            nonlocal client, count
            with self.stats.op("smtp_in"):
                if client is None or count % 20 == 0:
                    if client is not None:
                        with contextlib.suppress(Exception):
                            client.quit()
                    client = smtplib.SMTP("127.0.0.1", self.alice.port("smtp"), timeout=60)
                count += 1
                msg = self.message(self.alice.login, "someone@example.com", "alice",
                                   random.choice((1500, 3000, 8000, 40000)))
                try:
                    client.sendmail("someone@example.com", [self.alice.login], msg)
                except Exception:
                    client = None
                    raise
        self.paced(self.args.smtp_rate, one)

    def submission(self) -> None:
        def one() -> None:
            with self.stats.op("submit"), smtplib.SMTP_SSL(
                    "127.0.0.1", self.alice.port("submissions"), context=self.tls,
                    timeout=60) as c:
                c.login(self.alice.login, self.alice.password)
                c.sendmail(self.alice.login, [self.bob.login],
                           self.message(self.bob.login, self.alice.login, "bob"))
        self.paced(self.args.submit_rate, one)

    def native_send(self) -> None:
        def one() -> None:
            with self.stats.op("twin_send"):
                twin_cli(self.alice.data, "send", "bob", f"soak native {time.time():.0f}",
                         timeout=120)
        self.paced(1.0 / self.args.send_every, one)

    def verify(self) -> None:
        def one() -> None:
            with self.stats.op("verify"):
                out = twin_cli(self.alice.data, "storage", "verify", timeout=600, check=False)
                if out.returncode != 0:  # its problem lines first, then the JSON summary
                    raise RuntimeError(f"exit {out.returncode}: {out.stdout.strip()[:400]} "
                                       f"{out.stderr.strip()[-200:]}")
        self.stop.wait(60)
        self.paced(1.0 / self.args.verify_every, one)

    def imap(self, twin: TwinProcess) -> imaplib.IMAP4:
        c = imaplib.IMAP4("127.0.0.1", twin.port("imap"), timeout=60)
        c.login(twin.login, twin.password)
        return c

    def imap_idle(self, twin: TwinProcess) -> None:
        """IDLE on INBOX, leaving it when an update arrives or after 30 s."""
        c: imaplib.IMAP4 | None = None
        while not self.stop.is_set():
            with self.stats.op(f"imap_idle_{twin.name}"):
                try:
                    if c is None:
                        c = self.imap(twin)
                        c.select("INBOX")
                    self._idle_once(c)
                except Exception:
                    c = None
                    raise
            self.stop.wait(0.5)

    @staticmethod
    def _idle_once(c: imaplib.IMAP4) -> None:
        tag = c._new_tag()
        c.send(tag + b" IDLE\r\n")
        while True:  # untagged updates may come before the continuation
            line = c.readline()
            if line.startswith(b"+"):
                break
            if not line.startswith(b"*"):
                raise RuntimeError(f"IDLE refused: {line[:100]!r}")
        assert c.sock is not None
        # wait on the socket, not with a timeout on it (that breaks imaplib's reader);
        # an update already buffered with the "+" is read after DONE
        deadline = time.monotonic() + 30
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([c.sock], [], [], left)[0]:
                break
            line = c.readline()
            if not line:
                raise RuntimeError("connection closed in IDLE")
            if b"EXISTS" in line or b"EXPUNGE" in line:
                break
        c.send(b"DONE\r\n")
        while True:
            line = c.readline()
            if not line:
                raise RuntimeError("connection closed after DONE")
            if line.startswith(tag):
                if b" OK" not in line:
                    raise RuntimeError(line.decode(errors="replace"))
                return

    def imap_poll(self, twin: TwinProcess) -> None:
        """Read every new message's X-Soak-Id, then expunge all but the newest 100."""
        last = 0
        c: imaplib.IMAP4 | None = None

        def one() -> None:
            nonlocal last, c
            with self.stats.op(f"imap_poll_{twin.name}"):
                try:
                    if c is None:
                        c = self.imap(twin)
                    c.select("INBOX")
                    _, data = c.uid("FETCH", f"{last + 1}:*",
                                      "(BODY.PEEK[HEADER.FIELDS (X-SOAK-ID)])")
                    uids = []
                    for item in data:
                        if not isinstance(item, tuple):
                            continue
                        m = re.search(rb"UID (\d+)", item[0])
                        if m is None or int(m.group(1)) <= last:
                            continue
                        uids.append(int(m.group(1)))
                        found = re.search(rb"X-Soak-Id: (\S+)", item[1], re.I)
                        if found:
                            with self.lock:
                                self.seen[twin.name][found.group(1).decode()] += 1
                    if uids:
                        last = max(uids)
                    _, data = c.uid("SEARCH", "ALL")
                    every = [int(u) for u in data[0].split()] if data and data[0] else []
                    old = [u for u in every[:-KEEP_IN_INBOX] if u <= last]
                    if old:
                        for pos in range(0, len(old), 500):
                            part = ",".join(map(str, old[pos:pos + 500]))
                            c.uid("STORE", part, "+FLAGS.SILENT", "(\\Deleted)")
                        c.expunge()
                    c.close()
                except Exception:
                    c = None
                    raise
        self.paced(1.0 / self.args.poll_every, one)

    def imap_churn(self, twin: TwinProcess) -> None:
        c: imaplib.IMAP4 | None = None

        def one() -> None:
            nonlocal c
            with self.stats.op(f"imap_churn_{twin.name}"):
                try:
                    if c is None:
                        c = self.imap(twin)
                        for box in ("Churn", "Churn2"):
                            c.create(box)
                    msg = self.message(twin.login, twin.login, "none", 3000)
                    typ, _ = c.append("Churn", "(\\Seen)", imaplib.Time2Internaldate(time.time()),
                                      msg)
                    if typ != "OK":
                        raise RuntimeError("APPEND failed")
                    c.select("Churn")
                    typ, _ = c.uid("MOVE", "1:*", "Churn2")
                    if typ != "OK":
                        raise RuntimeError("MOVE failed")
                    c.select("Churn2")
                    c.uid("STORE", "1:*", "+FLAGS.SILENT", "(\\Deleted)")
                    c.expunge()
                    c.close()
                except Exception:
                    c = None
                    raise
        self.paced(self.args.churn_rate, one)

    def webdav(self) -> None:
        import httpx

        auth = (self.alice.login, self.alice.password)
        with httpx.Client(base_url=self.alice.url, auth=auth, verify=False, timeout=120) as h:
            h.request("MKCOL", "/dav/soak/")
            names = [f"/dav/soak/f{i:04d}.bin" for i in range(self.args.files)]

            def one() -> None:
                kind = random.choices(("put", "get", "delete", "propfind"), (4, 4, 1, 1))[0]
                path = random.choice(names)
                with self.stats.op(f"dav_{kind}"):
                    if kind == "put":
                        size = random.choice((1024, 16 * 1024, 64 * 1024, MiB))
                        r = h.put(path, content=os.urandom(size))
                    elif kind == "get":
                        r = h.get(path)
                        if r.status_code == 404:
                            return
                    elif kind == "delete":
                        r = h.delete(path)
                        if r.status_code == 404:
                            return
                    else:
                        r = h.request("PROPFIND", "/dav/soak/", headers={"Depth": "1"})
                    if r.status_code >= 400:
                        raise RuntimeError(f"{kind} {path}: {r.status_code}")
            self.paced(self.args.dav_rate, one)

    def shared_read(self) -> None:
        import httpx

        with httpx.Client(base_url=self.bob.url, auth=(self.bob.login, self.bob.password),
                          verify=False, timeout=120) as h:
            def one() -> None:
                with self.stats.op("bob_shared_get"):
                    r = h.get("/dav/shared/alice/gift/file.bin")
                    if r.status_code != 200 or len(r.content) != 256 * 1024:
                        raise RuntimeError(f"shared GET: {r.status_code} {len(r.content)}")
            self.paced(0.1, one)

    def setup_share(self) -> None:
        import httpx

        with httpx.Client(base_url=self.alice.url, auth=(self.alice.login, self.alice.password),
                          verify=False, timeout=60) as h:
            h.request("MKCOL", "/dav/gift/")
            h.put("/dav/gift/file.bin", content=os.urandom(256 * 1024)).raise_for_status()
        twin_cli(self.alice.data, "share", "/gift/", "--with", "bob")

    # -- sampling

    def sample(self, twin: TwinProcess) -> dict[str, object]:
        assert twin.proc is not None
        pid = twin.proc.pid
        status = Path(f"/proc/{pid}/status").read_text()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
        threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        files: dict[str, int] = {}
        for root, _, names in os.walk(twin.data):
            for n in names:
                p = Path(root) / n
                with contextlib.suppress(OSError):
                    files[str(p.relative_to(twin.data))] = p.stat().st_blocks * 512
        return {"rss_mib": round(rss, 1), "fds": fds, "threads": threads, "files": files}


def group(path: str) -> str:
    """The resource a data-dir file counts towards."""
    if path.startswith("mail-journal/"):
        return "mail-journal"
    if path.startswith("shards/"):
        return "shards_index" if "index.sqlite" in path else "shards_data"
    if path.startswith("log/") or path.endswith(".log"):
        return "logs"
    for name in ("twin.db", "catalogue.sqlite", "peer-replay.db", "phonebook.db"):
        if path.startswith(name):
            return name
    return path.split("/", 1)[0]


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    if len(points) < 3:
        return 0.0
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    if den == 0:
        return 0.0
    return 3600 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=5.0, help="minutes before slopes count")
    ap.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--smtp-rate", type=float, default=20.0)
    ap.add_argument("--submit-rate", type=float, default=5.0)
    ap.add_argument("--send-every", type=float, default=10.0)
    ap.add_argument("--poll-every", type=float, default=5.0)
    ap.add_argument("--churn-rate", type=float, default=1.0)
    ap.add_argument("--dav-rate", type=float, default=5.0)
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--verify-every", type=float, default=300.0)
    ap.add_argument("--root", type=Path, help="keep the twins here (default: a temp dir)")
    ap.add_argument("--set", action="append", default=[], help="extra twin config KEY=VALUE")
    args = ap.parse_args()

    root = args.root or Path(tempfile.mkdtemp(prefix="twin-soak-"))
    sets = ["log.file=log/twin.log", *args.set]
    alice = TwinProcess.create(root, "alice", sets=sets)
    bob = TwinProcess.create(root, "bob", phonebook=alice.phonebook, sets=sets)
    try:
        alice.start(60)
        bob.start(60)
        return run(args, alice, bob)
    finally:
        for twin in (alice, bob):
            with contextlib.suppress(Exception):
                twin.stop(timeout=60)


def run(args: argparse.Namespace, alice: TwinProcess, bob: TwinProcess) -> int:
    root = alice.data.parent
    emit({"soak": "start", "root": str(root), "alice_pid": alice.proc.pid,  # type: ignore[union-attr]
          "bob_pid": bob.proc.pid, "args": {k: str(v) for k, v in vars(args).items()}})  # type: ignore[union-attr]
    soak = Soak(args, alice, bob)
    soak.setup_share()
    workers: list[Callable[[], None]] = [
        soak.smtp_inbound, soak.submission, soak.native_send, soak.verify, soak.webdav,
        soak.shared_read]
    for twin in (alice, bob):
        for client in (soak.imap_idle, soak.imap_poll, soak.imap_churn):
            workers.append(functools.partial(client, twin))
    threads = [threading.Thread(target=w, daemon=True) for w in workers]
    for t in threads:
        t.start()
    start = time.monotonic()
    end = start + args.minutes * 60
    series: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    try:
        while time.monotonic() < end:
            time.sleep(min(args.every, max(0.0, end - time.monotonic())))
            now = time.monotonic() - start
            ops = soak.stats.take()
            for twin in (alice, bob):
                if twin.proc is None or twin.proc.poll() is not None:
                    emit({"t": round(now), "twin": twin.name, "error": "twin exited"})
                    return 1
                s = soak.sample(twin)
                files = s.pop("files")
                assert isinstance(files, dict)
                groups: Counter[str] = Counter()
                for path, size in files.items():
                    groups[group(path)] += size
                for key in ("rss_mib", "fds", "threads"):
                    series[(twin.name, key)].append((now, float(s[key])))  # type: ignore[arg-type]
                for g, size in groups.items():
                    series[(twin.name, g)].append((now, size / MiB))
                emit({"t": round(now), "twin": twin.name, **s,
                      "groups_mib": {g: round(v / MiB, 2) for g, v in sorted(groups.items())},
                      "files": files, "ops": ops if twin is alice else None})
    finally:
        soak.stop.set()
        for t in threads:
            t.join(120)
    time.sleep(min(60.0, 5 + args.every))  # let the last deliveries land and be read
    final_read(soak)
    warm = args.warmup * 60
    flagged = 0
    for (name, key), points in sorted(series.items()):
        after = [p for p in points if p[0] >= warm]
        slope = slope_per_hour(after)
        limit = TOLERANCE.get(key, FILE_TOLERANCE_MIB)
        unit = {"rss_mib": "MiB/h", "fds": "fds/h", "threads": "threads/h"}.get(key, "MiB/h")
        grows = slope > limit
        flagged += grows
        emit({"summary": key, "twin": name, "slope_per_hour": round(slope, 2), "unit": unit,
              "first_after_warmup": after[0][1] if after else None,
              "last": points[-1][1] if points else None, "flag": "GROWS" if grows else "flat"})
    totals = soak.stats.totals()
    errors = sum(e for _, e in totals.values())
    report: dict[str, object] = {
        "summary": "ops",
        "totals": {n: {"ok": t, "errors": e} for n, (t, e) in sorted(totals.items())}}
    for who in ("alice", "bob"):
        sent, seen = soak.sent[who], soak.seen[who]
        report[who] = {"sent": len(sent), "missing": len(sent - set(seen)),
                        "duplicates": sum(1 for v in seen.values() if v > 1)}
    report["errors"] = errors
    report["flagged"] = flagged
    emit(report)
    return 1 if flagged or errors else 0


def final_read(soak: Soak) -> None:
    """One last poll of each INBOX, so that messages sent at the very end are counted."""
    for twin in (soak.alice, soak.bob):
        with contextlib.suppress(Exception):
            c = soak.imap(twin)
            c.select("INBOX", readonly=True)
            _, data = c.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (X-SOAK-ID)])")
            present = set()
            for item in data:
                if isinstance(item, tuple):
                    found = re.search(rb"X-Soak-Id: (\S+)", item[1], re.I)
                    if found:
                        present.add(found.group(1).decode())
            with soak.lock:
                for soak_id in present - set(soak.seen[twin.name]):
                    soak.seen[twin.name][soak_id] += 1
            c.logout()


if __name__ == "__main__":
    sys.exit(main())
