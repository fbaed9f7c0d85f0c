"""IMAP benchmark: the twin against Dovecot, same workload, same run.

1. Mixed workload: 10 concurrent clients, each looping login, select, fetch
   headers, fetch a body, store flags, append, expunge, logout; commands/s.
2. A 100,000-message mailbox: SELECT (first, cold; then again, median of 5)
   and ``UID FETCH 1:* (FLAGS)`` (median of 3), in seconds.

The twin runs as a real ``twin serve`` process; Dovecot from a temporary config
(``dovecot -F -c``, passwd-file, maildir, 127.0.0.1, no TLS). Prints one JSON
line per figure, with the Dovecot figure and the ratio (>1 means the twin is
better). Run: ``.venv/bin/python bench/imap.py [--clients 10] [--seconds 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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
    def __init__(self, root: Path, user: str, password: str) -> None:
        self.root = root
        self.user, self.password = user, password
        self.port = free_port()
        self.home = root / "home" / user
        self.maildir = self.home / "Maildir"
        for d in ("cur", "new", "tmp"):
            (self.maildir / d).mkdir(parents=True, exist_ok=True)
        (root / "passwd").write_text(f"{user}:{{PLAIN}}{password}::::::\n")
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
first_valid_uid = {uid}
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
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

    def populate(self, count: int, *, seen_every: int = 3) -> None:
        """Write maildir files directly (what Dovecot would have delivered)."""
        cur = self.maildir / "cur"
        now = int(time.time())
        for i in range(count):
            flags = "S" if i % seen_every == 0 else ""
            (cur / f"{now}.M{i}P1.bench:2,{flags}").write_bytes(MSG % (i, i))

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
            from core.mail.store import _describe

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--big", type=int, default=BIG)
    opts = ap.parse_args()
    have_dovecot = shutil.which("dovecot") is not None and os.geteuid() == 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # Dovecot's auth and mail processes run as other users
        # the mixed workload on a 200-message inbox
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
            dove = Dovecot(root / "dovecot-mixed", "bench", "secret")
            dove.populate(200)
            dove.start()
            try:
                dove_rate = mixed(dove.port, "bench", "secret", opts.clients, opts.seconds)
            finally:
                dove.stop()
        ratio = {"dovecot": round(dove_rate, 1), "ratio": round(twin_rate / dove_rate, 3)} \
            if dove_rate else {}
        emit("imap", f"mixed workload, {opts.clients} clients", twin_rate, "commands/s",
             **ratio)

        # the big mailbox
        big = TwinProcess.create(root, "big")
        t0 = time.perf_counter()
        populate_twin(big, opts.big)
        emit("imap", f"twin populate {opts.big} messages (bulk insert)",
             time.perf_counter() - t0, "s")
        big.start()
        try:
            twin_big = big_mailbox(big.port("imap"), big.login, big.password, opts.big)
        finally:
            big.stop()
        dove_big: dict[str, float] = {}
        if have_dovecot:
            dove = Dovecot(root / "dovecot-big", "bench", "secret")
            dove.populate(opts.big)
            dove.start()
            try:
                dove_big = big_mailbox(dove.port, "bench", "secret", opts.big)
            finally:
                dove.stop()
        for key, label in (("select_cold", "SELECT (first, cold)"),
                           ("select", "SELECT (again, median of 5)"),
                           ("uid_fetch_flags", "UID FETCH 1:* (FLAGS) (median of 3)")):
            extra = {}
            if key in dove_big:
                extra = {"dovecot": round(dove_big[key], 4),
                         "ratio": round(dove_big[key] / twin_big[key], 3)}
            emit("imap", f"{label}, {opts.big} messages", twin_big[key], "s", **extra)


if __name__ == "__main__":
    main()
