"""IMAP benchmark: the twin against Dovecot, same workload, same run.

1. Mixed workload: 10 concurrent clients, each looping login, select, fetch
   headers, fetch a body, store flags, append, expunge, logout; commands/s.
2. A 100,000-message mailbox of distinct messages in conversations of five
   (``realistic``: replies with References, 50 senders, shuffled dates):
   SELECT (first, cold; then again, median of 5) and ``UID FETCH 1:* (FLAGS)``
   (median of 3), in seconds.
3. The same mailbox as a mail client meets it, every step from a **new
   session** (``--sessions`` of them, twin and Dovecot alternating in rounds,
   both servers up at once): connect + LOGIN; SELECT; ``FETCH 1:* (UID
   RFC822.SIZE FLAGS INTERNALDATE)``; ``UID SEARCH UNSEEN``; ``FETCH 1:200``
   of the header fields a client lists; ``SORT (REVERSE DATE)``; ``THREAD
   REFERENCES``; LOGOUT. Each step's median, the server's CPU per session
   (from /proc: the twin process; Dovecot's master, its children and the
   children it reaped), and a *cold* session first: both servers restarted and
   the page cache dropped (when this process may) before it. Then RSS: the
   twin's over idle with the mailbox selected, against Dovecot's imap process.

The twin runs as a real ``twin serve`` process; Dovecot from a temporary config
(``dovecot -F -c``, passwd-file with the password in ``--dovecot-scheme``:
PLAIN by default, as the issue measured it, or ARGON2ID, as the twin stores
it; the auth cache on, maildir, 127.0.0.1, no TLS). Prints one JSON line per
figure, with the Dovecot figure and the ratio (>1 means the twin is better).
Run: ``.venv/bin/python bench/imap.py [--clients 10] [--seconds 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import imaplib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.mail.store import _describe  # noqa: E402  (what filing stores per message)
from tests.protocols.imap.harness import close_service, open_service  # noqa: E402
from tests.twins import TwinProcess  # noqa: E402

MSG = (b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: bench %d\r\n"
       b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nMessage-ID: <%d@bench>\r\n\r\n"
       + b"line of body text for the benchmark\r\n" * 40)
BIG = 100_000


def emit(bench: str, figure: str, value: float, unit: str, **extra: object) -> None:
    print(json.dumps({"bench": bench, "figure": figure, "value": round(value, 4),
                      "unit": unit, **extra}), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- servers

class Dovecot:
    def __init__(self, root: Path, user: str, password: str, scheme: str = "PLAIN") -> None:
        self.root = root
        self.user, self.password = user, password
        self.port = free_port()
        self.home = root / "home" / user
        self.maildir = self.home / "Maildir"
        for d in ("cur", "new", "tmp"):
            (self.maildir / d).mkdir(parents=True, exist_ok=True)
        # PLAIN as the issue measured it; ARGON2ID hashes as the twin does (Dovecot's
        # auth cache is on, but it still verifies the hash at every login)
        hashed = subprocess.run(["doveadm", "pw", "-s", scheme, "-p", password],
                                capture_output=True, text=True, check=True).stdout.strip()
        (root / "passwd").write_text(f"{user}:{hashed}::::::\n")
        uid = gid = 65534
        conf = f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_cache_size = 1M
first_valid_uid = {uid}
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service imap {{
  process_limit = 100
}}
protocol imap {{
  mail_max_userip_connections = 100
}}
"""
        self.conf = root / "dovecot.conf"
        self.conf.write_text(conf)
        (root / "run").mkdir(exist_ok=True)
        (root / "state").mkdir(exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.uid = uid

    def populate(self, count: int, *, seen_every: int = 3, distinct: bool = False) -> None:
        """Write maildir files directly (what Dovecot would have delivered)."""
        cur = self.maildir / "cur"
        now = int(time.time())
        for i in range(count):
            flags = "S" if i % seen_every == 0 else ""
            path = cur / f"{now}.M{i}P1.bench:2,{flags}"
            if distinct:
                path.write_bytes(realistic(i))
                os.utime(path, (BASE_DATE + i * 60, BASE_DATE + i * 60))  # internal date
            else:
                path.write_bytes(MSG % (i, i))

    def start(self) -> None:
        subprocess.run(["chown", "-R", f"{self.uid}:{self.uid}", str(self.root / "home")],
                       check=True)
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", str(self.conf)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("dovecot did not start: " + (self.root / "dovecot.log").read_text())

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


def populate_twin(twin: TwinProcess, count: int, distinct: int = 100) -> None:
    """Bulk-insert through the mail store API before the twin process starts."""
    async def run() -> None:
        service = await open_service(twin.data)
        try:
            mail = service.mail
            await mail.ensure_user(twin.login)
            stored = []
            for i in range(distinct):
                data = MSG % (i, i)
                ref = str(await service.store.put(data))
                header, structure = _describe(data)
                stored.append((ref, header, structure, len(data)))
            batch = []
            now = time.time()
            for i in range(count):
                ref, header, structure, size = stored[i % distinct]
                flags = ["\\Seen"] if i % 3 == 0 else []
                batch.append((ref, header, structure, size, now, flags))
                if len(batch) == 5000:
                    await mail.bulk_insert(twin.login, "INBOX", batch)
                    batch = []
            if batch:
                await mail.bulk_insert(twin.login, "INBOX", batch)
        finally:
            await close_service(service)
    asyncio.run(run())


BASE_DATE = 1_700_000_000


def realistic(i: int) -> bytes:
    """Message ``i`` of a mailbox of conversations: every fifth starts a thread, the
    others reply to the one before (Re:, In-Reply-To, References); 50 senders;
    sent dates a minute apart, shuffled within the hour; all distinct."""
    root = i - i % 5
    sender = i % 50
    head = f"From: User {sender} <user{sender}@example.org>\r\nTo: bob@example.org\r\n"
    if i % 5:
        head += (f"Subject: Re: topic {i // 5}\r\nIn-Reply-To: <{i - 1}@bench>\r\n"
                 f"References: <{root}@bench> <{i - 1}@bench>\r\n")
    else:
        head += f"Subject: topic {i // 5}\r\n"
    sent = email.utils.formatdate(BASE_DATE + i * 60 + (i * 7919) % 3600)
    head += f"Date: {sent}\r\nMessage-ID: <{i}@bench>\r\n\r\n"
    return head.encode() + b"line of body text for the benchmark %d\r\n" % i * 40


def populate_twin_realistic(twin: TwinProcess, count: int) -> None:
    """``count`` distinct messages (``realistic``), stored packed as the twin's intake
    stores mail, then inserted in bulk; before the twin process starts."""
    async def run() -> None:
        service = await open_service(twin.data)
        try:
            mail = service.mail
            await mail.ensure_user(twin.login)
            for start in range(0, count, 2000):
                messages = [realistic(i) for i in range(start, min(count, start + 2000))]
                refs, _ = await mail._store_packed(service.store, messages)
                batch = []
                for i, (ref, data) in enumerate(zip(refs, messages, strict=True), start):
                    header, structure = _describe(data)
                    flags = ["\\Seen"] if i % 3 == 0 else []
                    batch.append((ref, header, structure, len(data), BASE_DATE + i * 60.0,
                                  flags))
                await mail.bulk_insert(twin.login, "INBOX", batch)
        finally:
            await close_service(service)
    asyncio.run(run())


# -- workloads

def mixed(port: int, user: str, password: str, clients: int, seconds: float) -> float:
    """Commands per second of the mixed workload over ``clients`` threads."""
    counts = [0] * clients
    warm = imaplib.IMAP4("127.0.0.1", port)  # the first login pays the password hash
    warm.login(user, password)
    warm.logout()
    errors: list[BaseException] = []
    stop_at = time.monotonic() + seconds

    def worker(n: int) -> None:
        try:
            while time.monotonic() < stop_at:
                c = imaplib.IMAP4("127.0.0.1", port)
                c.login(user, password)
                _, data = c.select("INBOX")
                exists = int(data[0] or 0)
                lo = max(1, exists - 9)
                c.fetch(f"{lo}:{exists}", "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER])")
                c.fetch(str(exists), "(BODY.PEEK[])")
                c.store(str(lo), "+FLAGS", "(\\Flagged)")
                c.store(str(lo), "-FLAGS", "(\\Flagged)")
                mid = f"<c{n}-{time.monotonic_ns()}@bench>"
                c.append("INBOX", None, None,
                         b"From: c@bench\r\nSubject: appended\r\nMessage-ID: "
                         + mid.encode() + b"\r\n\r\nbody\r\n")
                _, ids = c.uid("SEARCH", "HEADER", "Message-ID", mid)
                for uid in (ids[0] or b"").split():
                    c.uid("STORE", uid.decode(), "+FLAGS.SILENT", "(\\Deleted)")
                c.expunge()
                c.logout()
                counts[n] += 11
        except BaseException as exc:  # reported after the run
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    if errors:
        raise RuntimeError(f"workload failed: {errors[0]!r}")
    return sum(counts) / elapsed


class RawClient:
    """Minimal client for the big mailbox, so client-side parsing does not dominate."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=600)
        self.buf = b""
        self.n = 0
        self._until(b"* OK")
        self.command(f'LOGIN "{user}" "{password}"'.encode())

    def _until(self, prefix: bytes) -> int:
        """Read lines until one starts with ``prefix``; the number of lines read."""
        lines = 0
        pos = 0
        while True:
            i = self.buf.find(b"\r\n", pos)
            while i >= 0:
                line = self.buf[pos:i]
                pos = i + 2
                lines += 1
                if line.startswith(prefix):
                    self.buf = self.buf[pos:]
                    if prefix != b"* OK" and not line[len(prefix):].startswith(b"OK"):
                        raise RuntimeError(line.decode(errors="replace"))
                    return lines
                i = self.buf.find(b"\r\n", pos)
            self.buf = self.buf[pos:]
            pos = 0
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    def wait_closed(self) -> None:
        """Read to the end: the server has closed, so its session process is ending."""
        chunk = b"."
        with contextlib.suppress(OSError):
            while chunk:
                chunk = self.sock.recv(1 << 16)
        self.sock.close()

    def command(self, cmd: bytes) -> tuple[float, int]:
        self.n += 1
        tag = b"b%d" % self.n
        t0 = time.perf_counter()
        self.sock.sendall(tag + b" " + cmd + b"\r\n")
        lines = self._until(tag + b" ")
        return time.perf_counter() - t0, lines


def big_mailbox(port: int, user: str, password: str, count: int) -> dict[str, float]:
    """Cold SELECT once; then the median of 5 re-SELECTs and of 3 ``UID FETCH 1:* (FLAGS)``.

    Medians because a single re-SELECT takes milliseconds and one scheduling
    hiccup on a shared machine would otherwise decide the figure.
    """
    c = RawClient(port, user, password)
    out = {}
    out["select_cold"], _ = c.command(b"SELECT INBOX")
    out["select"] = statistics.median(c.command(b"SELECT INBOX")[0] for _ in range(5))
    fetches = []
    for _ in range(3):
        seconds, lines = c.command(b"UID FETCH 1:* (FLAGS)")
        if lines < count:
            raise RuntimeError(f"only {lines} lines for {count} messages")
        fetches.append(seconds)
    out["uid_fetch_flags"] = statistics.median(fetches)
    return out


HEADER_FIELDS = (b"(UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Subject Date "
                 b"Message-ID References In-Reply-To Content-Type)])")
SESSION_STEPS = (
    ("fetch_all", b"FETCH 1:* (UID RFC822.SIZE FLAGS INTERNALDATE)"),
    ("search_unseen", b"UID SEARCH UNSEEN"),
    ("fetch_headers", b"FETCH 1:200 " + HEADER_FIELDS),
    ("sort", b"SORT (REVERSE DATE) UTF-8 ALL"),
    ("thread", b"THREAD REFERENCES UTF-8 ALL"),
)
STEP_LABELS = {"login": "connect+LOGIN", "select": "SELECT", "fetch_all":
               "FETCH 1:* (UID RFC822.SIZE FLAGS INTERNALDATE)", "search_unseen":
               "UID SEARCH UNSEEN", "fetch_headers": "FETCH 1:200 header fields",
               "sort": "SORT (REVERSE DATE)", "thread": "THREAD REFERENCES",
               "session": "whole session"}


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()  # fields from the 3rd (state) on


def cpu_seconds(pid: int, *, tree: bool = False) -> float:
    """CPU of ``pid`` (all threads); with ``tree`` also its live children and the
    children it has reaped (Dovecot forks a process per login and per session)."""
    ticks = os.sysconf("SC_CLK_TCK")
    f = _stat(pid)
    total = int(f[11]) + int(f[12])  # utime, stime
    if tree:
        total += int(f[13]) + int(f[14])  # cutime, cstime: reaped children
        for child in Path("/proc").iterdir():
            if child.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    c = _stat(int(child.name))
                    if int(c[1]) == pid:
                        total += int(c[11]) + int(c[12])
    return total / ticks


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def drop_caches() -> bool:
    """Drop the page cache, for a cold start; False where this process may not."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


@contextlib.contextmanager
def warm_indexes_off(twin: TwinProcess) -> Iterator[None]:
    """Starts of ``twin`` inside do not load the indexes kept at its last stop."""
    twin.extra_sets.append("mail.warm_indexes=false")
    try:
        yield
    finally:
        twin.extra_sets.remove("mail.warm_indexes=false")


def new_session(port: int, user: str, password: str, count: int,
                pid: int, tree: bool) -> dict[str, float]:
    """One client session, step by step, timed from the client; the server's CPU."""
    cpu0 = cpu_seconds(pid, tree=tree)
    t0 = time.perf_counter()
    c = RawClient(port, user, password)
    out = {"login": time.perf_counter() - t0}
    out["select"], _ = c.command(b"SELECT INBOX")
    for key, cmd in SESSION_STEPS:
        out[key], lines = c.command(cmd)
        if key == "fetch_all" and lines < count:
            raise RuntimeError(f"FETCH 1:* gave {lines} lines for {count} messages")
    c.command(b"LOGOUT")
    out["session"] = time.perf_counter() - t0
    c.wait_closed()
    time.sleep(0.1)  # Dovecot's master reaps the session's process (its CPU moves to it)
    out["cpu"] = cpu_seconds(pid, tree=tree) - cpu0
    return out


def dovecot_imap_rss() -> float:
    """RSS of Dovecot's largest ``imap`` process (the one serving the session)."""
    best = 0.0
    for child in Path("/proc").iterdir():
        if child.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if Path(f"/proc/{child.name}/comm").read_text().strip() == "imap":
                    best = max(best, rss_mib(int(child.name)))
    return best


def sessions(twin: TwinProcess, dove: Dovecot | None, count: int, rounds: int) -> None:
    """The new-session sequence: a cold session each, then ``rounds`` interleaved."""
    assert twin.proc is not None
    sides: list[tuple[str, Any]] = [("twin", twin)] + ([("dovecot", dove)] if dove else [])

    def run(name: str, side: Any) -> dict[str, float]:
        if name == "twin":
            return new_session(side.port("imap"), side.login, side.password, count,
                               side.proc.pid, False)
        return new_session(side.port, "bench", "secret", count, side.proc.pid, True)

    cold: dict[str, dict[str, float]] = {}
    for name, side in sides:  # cold: restarted, page cache dropped
        side.stop()
        dropped = drop_caches()
        side.start()
        cold[name] = run(name, side)
    # the twin loads the indexes kept at its last stop right after a start
    # (mail.warm_indexes): its cold SELECT without that, for what a load costs
    with warm_indexes_off(twin):
        twin.stop()
        drop_caches()
        twin.start()
        unwarmed = run("twin", twin)
    extra = {"dovecot": round(cold["dovecot"]["select"], 4),
             "ratio": round(cold["dovecot"]["select"] / unwarmed["select"], 3)} if dove else {}
    emit("imap", f"new session, {count} messages: SELECT (cold, mail.warm_indexes off)",
         unwarmed["select"], "s", **extra)
    warm: dict[str, list[dict[str, float]]] = {name: [] for name, _ in sides}
    for _ in range(rounds):
        for name, side in sides:
            warm[name].append(run(name, side))
    for key, label in STEP_LABELS.items():
        for phase, twin_v, dove_v in (
                ("cold" + ("" if dropped else ", page cache kept"), cold["twin"][key],
                 cold.get("dovecot", {}).get(key)),
                (f"warm, median of {rounds}",
                 statistics.median(r[key] for r in warm["twin"]),
                 statistics.median(r[key] for r in warm["dovecot"]) if dove else None)):
            extra: dict[str, object] = {}
            if dove_v is not None:
                extra = {"dovecot": round(dove_v, 4), "ratio": round(dove_v / twin_v, 3)}
            if key == "session":
                twin_cpu = (cold["twin"]["cpu"] if phase.startswith("cold") else
                            statistics.median(r["cpu"] for r in warm["twin"]))
                extra["cpu_s_twin"] = round(twin_cpu, 4)
                if dove:
                    extra["cpu_s_dovecot"] = round(
                        cold["dovecot"]["cpu"] if phase.startswith("cold") else
                        statistics.median(r["cpu"] for r in warm["dovecot"]), 4)
            emit("imap", f"new session, {count} messages: {label} ({phase})",
                 twin_v, "s", **extra)
    # memory with the mailbox selected, against idle (not warmed: its index counts)
    with warm_indexes_off(twin):
        twin.stop()
        twin.start()
    time.sleep(1)
    assert twin.proc is not None
    idle = rss_mib(twin.proc.pid)
    held = RawClient(twin.port("imap"), twin.login, twin.password)
    held.command(b"SELECT INBOX")
    held.command(SESSION_STEPS[0][1])
    selected = rss_mib(twin.proc.pid)
    held.command(b"LOGOUT")
    extra = {}
    if dove:
        held = RawClient(dove.port, "bench", "secret")
        held.command(b"SELECT INBOX")
        held.command(SESSION_STEPS[0][1])
        extra = {"dovecot_imap_process_mib": round(dovecot_imap_rss(), 1)}
        held.command(b"LOGOUT")
    emit("imap", f"twin RSS over idle, {count}-message INBOX selected and fetched",
         selected - idle, "MiB", twin_idle_mib=round(idle, 1),
         twin_selected_mib=round(selected, 1), **extra)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--big", type=int, default=BIG)
    ap.add_argument("--sessions", type=int, default=5,
                    help="interleaved warm rounds of the new-session sequence (0: skip)")
    ap.add_argument("--dovecot-scheme", default="PLAIN", choices=["PLAIN", "ARGON2ID"],
                    help="how Dovecot's password is stored (the twin's: Argon2id)")
    ap.add_argument("--only-sessions", action="store_true",
                    help="skip the mixed workload and the single-session figures")
    opts = ap.parse_args()
    have_dovecot = shutil.which("dovecot") is not None and os.geteuid() == 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # Dovecot's auth and mail processes run as other users
        if not opts.only_sessions:
            mixed_figure(root, opts, have_dovecot)

        # the big mailbox, both servers up at once
        big = TwinProcess.create(root, "big")
        t0 = time.perf_counter()
        populate_twin_realistic(big, opts.big)
        emit("imap", f"twin populate {opts.big} distinct messages (packed, bulk insert)",
             time.perf_counter() - t0, "s")
        dove = None
        if have_dovecot:
            dove = Dovecot(root / "dovecot-big", "bench", "secret", opts.dovecot_scheme)
            dove.populate(opts.big, distinct=True)
        big.start()
        try:
            if dove:
                dove.start()
            if opts.only_sessions:
                # each server's first SELECT builds what it keeps on disk for the next
                # start (Dovecot indexes the maildir; the twin keeps its packed index
                # at a clean stop), as a mailbox a client has opened before
                RawClient(big.port("imap"), big.login, big.password).command(b"SELECT INBOX")
                if dove:
                    RawClient(dove.port, "bench", "secret").command(b"SELECT INBOX")
            else:
                single_session_figures(big, dove, opts.big)
            if opts.sessions:
                sessions(big, dove, opts.big, opts.sessions)
        finally:
            big.stop()
            if dove:
                dove.stop()


def mixed_figure(root: Path, opts: argparse.Namespace, have_dovecot: bool) -> None:
    """The mixed workload on a 200-message inbox, the twin then Dovecot."""
    twin = TwinProcess.create(root, "bench")
    populate_twin(twin, 200)
    twin.start()
    try:
        twin_rate = mixed(twin.port("imap"), twin.login, twin.password, opts.clients,
                          opts.seconds)
    finally:
        twin.stop()
    dove_rate = None
    if have_dovecot:
        dove = Dovecot(root / "dovecot-mixed", "bench", "secret", opts.dovecot_scheme)
        dove.populate(200)
        dove.start()
        try:
            dove_rate = mixed(dove.port, "bench", "secret", opts.clients, opts.seconds)
        finally:
            dove.stop()
    ratio = {"dovecot": round(dove_rate, 1), "ratio": round(twin_rate / dove_rate, 3)} \
        if dove_rate else {}
    emit("imap", f"mixed workload, {opts.clients} clients", twin_rate, "commands/s", **ratio)


def single_session_figures(big: TwinProcess, dove: Dovecot | None, count: int) -> None:
    """SELECT cold and again, UID FETCH FLAGS: one session each (Dovecot indexes here)."""
    twin_big = big_mailbox(big.port("imap"), big.login, big.password, count)
    dove_big = big_mailbox(dove.port, "bench", "secret", count) if dove else {}
    for key, label in (("select_cold", "SELECT (first, cold)"),
                       ("select", "SELECT (again, median of 5)"),
                       ("uid_fetch_flags", "UID FETCH 1:* (FLAGS) (median of 3)")):
        extra = {}
        if key in dove_big:
            extra = {"dovecot": round(dove_big[key], 4),
                     "ratio": round(dove_big[key] / twin_big[key], 3)}
        emit("imap", f"{label}, {count} messages", twin_big[key], "s", **extra)


if __name__ == "__main__":
    main()
