"""Mail in and out (issue 18, item 7): a real Dovecot, a real twin, the real CLI.

A few hundred messages in nested folders (flags, keywords, internal dates,
a non-ASCII folder name, an empty folder, body lines starting with ``From ``)
are APPENDed to a Dovecot the test starts; ``twin mail import imap`` copies
them into a running twin (through its local API); ``twin mail export``
writes Maildir++ and mbox, read back here with Python's ``mailbox`` module
(not the twin's readers) and compared with what was put into Dovecot byte for
byte and flag for flag. A second import adds nothing; an import SIGKILLed
half way (its source connection stalled by a proxy, so "half way" is certain)
resumes and completes without a duplicate; the exported files imported into a
second twin come out the same again.
"""

from __future__ import annotations

import imaplib
import json
import mailbox
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.mail import folders as fn
from tests.dovecot import Dovecot
from tests.twins import TWIN, TwinProcess, twin_cli

FOLDERS = ["INBOX", "Work", "Work/Projects", "Work/Projects/2026", "Personal",
           "Personal/Family", "Lists/python-dev", "Reisen/Köln", "Archive"]
EMPTY = "Empty/Nested"
KEYWORDS = ["$Forwarded", "todo", "work", "$label1", "Project-X"]
SYSTEM = ["\\Seen", "\\Answered", "\\Flagged", "\\Draft", "\\Deleted"]
COUNT = 300


@dataclass(frozen=True)
class Message:
    folder: str
    data: bytes  # LF line ends, as Maildir and mbox files hold it
    flags: frozenset[str]
    date: int


def corpus() -> list[Message]:
    rnd = random.Random(18)
    out: list[Message] = []
    for i in range(COUNT):
        folder = FOLDERS[i % len(FOLDERS)]
        size = rnd.choice([200, 1500, 6000, 40_000, 90_000])
        words = " ".join(rnd.choice(["alpha", "beta", "gamma", "delta", "Grüße"])
                         for _ in range(size // 6))
        lines = [words[j:j + 70] for j in range(0, len(words), 70)]
        if i % 17 == 0:
            lines.insert(1, "From here on, mbox readers must quote this line")
        if i % 23 == 0:
            lines.insert(2, ">From a line quoted already")
        body = "\n".join(lines)
        text = (f"From: Sender {i} <s{i}@example.org>\nTo: source@example.org\n"
                f"Subject: message {i} in {folder}\nMessage-ID: <m{i}@example.org>\n"
                f"Date: Mon, 1 Jun 2026 10:00:00 +0000\nMIME-Version: 1.0\n"
                f"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n"
                f"\n{body}\n")
        flags = frozenset(f for f in SYSTEM + KEYWORDS if rnd.random() < 0.3)
        date = 1_600_000_000 + rnd.randrange(150_000_000)
        out.append(Message(folder, text.encode(), flags, date))
    return out


def imap_name(folder: str) -> str:
    return ".".join(fn.utf7_encode(level) for level in folder.split("/"))


def populate(dove: Dovecot, messages: list[Message]) -> None:
    m = imaplib.IMAP4("127.0.0.1", dove.port)
    m.login(dove.user, dove.password)
    for folder in [*FOLDERS, EMPTY]:
        if folder != "INBOX":
            assert m.create(f'"{imap_name(folder)}"')[0] == "OK"
    for msg in messages:
        typ, _ = m.append(f'"{imap_name(msg.folder)}"', f"({' '.join(sorted(msg.flags))})",
                          imaplib.Time2Internaldate(msg.date), msg.data)
        assert typ == "OK"
    m.logout()


@pytest.fixture(scope="module")
def source() -> Iterator[tuple[Dovecot, list[Message]]]:
    dove = Dovecot().start()
    try:
        messages = corpus()
        populate(dove, messages)
        yield dove, messages
    finally:
        dove.stop()


def expected(messages: list[Message]) -> dict[str, list[tuple[bytes, frozenset[str], int]]]:
    out: dict[str, list[tuple[bytes, frozenset[str], int]]] = {f: [] for f in [*FOLDERS, EMPTY]}
    for m in messages:
        out[m.folder].append((m.data, m.flags, m.date))
    return {k: sorted(v, key=repr) for k, v in out.items()}


# -- reading the exports back with Python's mailbox module

MAILDIR_FLAGS = {"S": "\\Seen", "R": "\\Answered", "F": "\\Flagged", "D": "\\Draft",
                 "T": "\\Deleted", "P": "$Forwarded"}


def read_maildir(root: Path) -> dict[str, list[tuple[bytes, frozenset[str], int]]]:
    top = mailbox.Maildir(str(root), factory=None, create=False)
    boxes = {"INBOX": (top, root)}
    for name in top.list_folders():
        twin = "/".join(fn.utf7_decode(level) for level in name.split("."))
        boxes[twin] = (top.get_folder(name), root / ("." + name))
    out: dict[str, list[tuple[bytes, frozenset[str], int]]] = {}
    for twin, (box, path) in boxes.items():
        letters: dict[str, str] = {}
        if (path / "dovecot-keywords").exists():
            for line in (path / "dovecot-keywords").read_text().splitlines():
                n, name = line.split(" ", 1)
                letters["abcdefghijklmnopqrstuvwxyz"[int(n)]] = name
        got = []
        for key in box.iterkeys():
            msg = box.get_message(key)
            assert msg.get_subdir() == "cur"
            flags = frozenset(MAILDIR_FLAGS.get(c) or letters[c] for c in msg.get_info()[2:])
            got.append((box.get_bytes(key), flags, int(msg.get_date())))
        out[twin] = sorted(got, key=repr)
    return out


def read_mbox(root: Path) -> dict[str, list[tuple[bytes, frozenset[str], int]]]:
    out: dict[str, list[tuple[bytes, frozenset[str], int]]] = {}
    for path in sorted(root.rglob("*.mbox")):
        twin = str(path.relative_to(root))[:-5]
        box = mailbox.mbox(str(path), create=False)
        got = []
        for key in box.iterkeys():
            raw = box.get_bytes(key)
            head, _, body = raw.partition(b"\n\n")
            meta = {}
            kept = []
            for line in head.split(b"\n"):
                name = line.split(b":", 1)[0].lower()
                if name in (b"status", b"x-status", b"x-keywords"):
                    meta[name] = line.split(b":", 1)[1].strip().decode()
                else:
                    kept.append(line)
            data = re.sub(rb"(?m)^>(>*From )", rb"\1", b"\n".join(kept) + b"\n\n" + body)
            flags = {"\\Seen"} if "R" in meta.get(b"status", "") else set()
            flags |= {{"A": "\\Answered", "F": "\\Flagged", "T": "\\Draft",
                       "D": "\\Deleted"}[c] for c in meta.get(b"x-status", "")}
            flags |= set(meta.get(b"x-keywords", "").split())
            stamp = box.get_message(key).get_from().split(" ", 1)[1]
            date = int(time.mktime(time.strptime(stamp, "%a %b %d %H:%M:%S %Y"))
                       - time.timezone)
            got.append((data, frozenset(flags), date))
        out[twin] = sorted(got, key=repr)
    return out


def dovecot_reads(export: Path) -> dict[str, list[tuple[bytes, frozenset[str], int]]]:
    """An exported Maildir as Dovecot serves it, when it is a user's Maildir as it is."""
    dove = Dovecot("check")
    try:
        shutil.copytree(export, dove.maildir)
        subprocess.run(["chown", "-R", "65534:65534", str(dove.root / "home")], check=True)
        dove.start()
        m = imaplib.IMAP4("127.0.0.1", dove.port)
        m.login(dove.user, dove.password)
        out: dict[str, list[tuple[bytes, frozenset[str], int]]] = {}
        for line in m.list()[1]:
            assert isinstance(line, bytes)
            name = line.rsplit(b' "." ', 1)[1].strip(b'"').decode()
            twin = "/".join(fn.utf7_decode(level) for level in name.split("."))
            if b"\\Noselect" in line:
                continue
            _, count = m.select(f'"{name}"', readonly=True)
            got = []
            data = m.fetch("1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")[1] if count != [b"0"] \
                else []
            for item in data:
                if not isinstance(item, tuple):
                    continue
                meta = item[0].decode()
                flags = frozenset(re.search(r"FLAGS \(([^)]*)\)", meta).group(1).split())
                date = int(time.mktime(imaplib.Internaldate2tuple(item[0])))
                got.append((item[1].replace(b"\r\n", b"\n"), flags - {"\\Recent"}, date))
            out[twin] = sorted(got, key=repr)
        m.logout()
        return out
    finally:
        dove.stop()


# -- running the CLI

def import_imap(data: Path, port: int, password_file: Path, *extra: str,
                timeout: float = 120) -> dict[str, object]:
    out = twin_cli(data, "mail", "import", "imap", "--host", "127.0.0.1", "--port", str(port),
                   "--user", "source", "--password-file", str(password_file), "--plain",
                   "--json", *extra, timeout=timeout)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def export(data: Path, fmt: str, dest: Path) -> dict[str, object]:
    out = twin_cli(data, "mail", "export", "--format", fmt, "--json", str(dest), timeout=120)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_imap_import_then_export_round_trip(tmp_path: Path,
                                            source: tuple[Dovecot, list[Message]]) -> None:
    dove, messages = source
    password = tmp_path / "pw"
    password.write_text(dove.password + "\n")
    want = expected(messages)
    twin = TwinProcess.create(tmp_path, "alice").start()
    try:
        first = import_imap(twin.data, dove.port, password)
        assert first["added"] == COUNT and first["skipped"] == 0, first
        assert first["folders"] == len(FOLDERS) + 1
        again = import_imap(twin.data, dove.port, password)
        assert again["added"] == 0 and again["already"] == COUNT, again

        # the twin's own IMAP shows the same: count, a byte-identical body, flags
        m = imaplib.IMAP4("127.0.0.1", twin.port("imap"))
        m.login(twin.login, twin.password)
        assert m.select('"Work/Projects/2026"', readonly=True)[0] == "OK"
        _, got = m.fetch("1:*", "(FLAGS BODY.PEEK[])")
        m.logout()
        bodies = sorted(x[1] for x in got if isinstance(x, tuple))
        assert bodies == sorted(d.replace(b"\n", b"\r\n") for d, _, _ in
                                want["Work/Projects/2026"])

        summary = export(twin.data, "maildir", tmp_path / "maildir")
        assert summary["messages"] == COUNT
        assert read_maildir(tmp_path / "maildir") == _with_specials(want)
        assert dovecot_reads(tmp_path / "maildir") == _with_specials(want)
        rates = {"import_imap": COUNT / first["seconds"],  # type: ignore[operator]
                 "export_maildir": COUNT / summary["seconds"]}  # type: ignore[operator]
        summary = export(twin.data, "mbox", tmp_path / "mbox")
        assert summary["messages"] == COUNT
        assert read_mbox(tmp_path / "mbox") == _with_specials(want)
        rates["export_mbox"] = COUNT / summary["seconds"]  # type: ignore[operator]
        print(json.dumps({k: round(v, 1) for k, v in rates.items()}))  # messages/s
    finally:
        twin.stop()

    # the files, imported into another twin (stopped: the CLI opens its store), come out
    # the same; the mbox export of the same mail then adds nothing
    bob = TwinProcess.create(tmp_path, "bob")
    got = json.loads(twin_cli(bob.data, "mail", "import", "maildir", str(tmp_path / "maildir"),
                              "--json", timeout=120).stdout)
    assert got["added"] == COUNT, got
    got = json.loads(twin_cli(bob.data, "mail", "import", "mbox", str(tmp_path / "mbox"),
                              "--json", timeout=120).stdout)
    assert got["added"] == 0 and got["already"] == COUNT, got
    export(bob.data, "maildir", tmp_path / "again")
    assert read_maildir(tmp_path / "again") == _with_specials(want)


def _with_specials(want: dict[str, list[tuple[bytes, frozenset[str], int]]]
                   ) -> dict[str, list[tuple[bytes, frozenset[str], int]]]:
    """Every twin has Sent, Drafts, Trash and Junk (empty here) besides the imported ones."""
    out = dict(want)
    for name in ("Sent", "Drafts", "Trash", "Junk", "Archive", "Empty", "Lists", "Reisen"):
        out.setdefault(name, [])
    return out


class StallingProxy:
    """TCP proxy to the source that stops passing the server's bytes after ``limit``."""

    def __init__(self, port: int, limit: int) -> None:
        self.target = port
        self.limit = limit
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.passed = 0
        self.stalled = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(client, upstream, False),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True),
                             daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if counted:
                    room = self.limit - self.passed
                    if room <= 0:
                        self.stalled.set()
                        return  # hold the connection open, pass nothing more
                    chunk = chunk[:room]
                    self.passed += len(chunk)
                dst.sendall(chunk)
        except OSError:
            return

    def close(self) -> None:
        self.sock.close()


def test_import_killed_half_way_resumes(tmp_path: Path,
                                        source: tuple[Dovecot, list[Message]]) -> None:
    dove, messages = source
    password = tmp_path / "pw"
    password.write_text(dove.password + "\n")
    total = sum(len(m.data) + m.data.count(b"\n") for m in messages)
    proxy = StallingProxy(dove.port, total // 2)
    twin = TwinProcess.create(tmp_path, "carol")  # stopped: the importer holds the store
    proc = subprocess.Popen(
        [*TWIN, "--data", str(twin.data), "mail", "import", "imap", "--host", "127.0.0.1",
         "--port", str(proxy.port), "--user", "source", "--password-file", str(password),
         "--plain", "--progress"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
        text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        added = 0
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line, f"the import ended before it was killed (exit {proc.wait()})"
            m = re.search(r"(\d+) added", line)
            if m and int(m.group(1)) > 0:
                added = int(m.group(1))
                break
        assert proxy.stalled.wait(60), "the import never reached the stall"
        time.sleep(0.5)  # whatever it received is being filed, or is filed
        assert proc.poll() is None, "the import finished: it was not killed half way"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proxy.close()
    assert 0 < added < COUNT
    resumed = import_imap(twin.data, dove.port, password)
    assert resumed["added"] + resumed["already"] == COUNT, resumed
    assert resumed["already"] >= added and resumed["added"] > 0, resumed
    export(twin.data, "maildir", tmp_path / "maildir")
    assert read_maildir(tmp_path / "maildir") == _with_specials(expected(messages))


def test_imap_import_over_starttls_and_implicit_tls_is_one_source(tmp_path: Path) -> None:
    """Another twin as the source: STARTTLS on its IMAP port, then IMAPS on its other
    port, which is the same account (user@host): the second run adds nothing."""
    alice = TwinProcess.create(tmp_path, "alice").start()
    try:
        m = imaplib.IMAP4("127.0.0.1", alice.port("imap"))
        m.starttls(ssl_context=_unverified())
        m.login(alice.login, alice.password)
        m.create("Old/Letters")
        for i in range(5):
            m.append("Old/Letters", "(\\Seen work)", imaplib.Time2Internaldate(1_650_000_000 + i),
                     b"Subject: letter %d\r\n\r\nDear bob\r\n" % i)
        big = b"Subject: big\r\n\r\n" + b"x" * 78 + b"\r\n"
        m.append("Old/Letters", "()", imaplib.Time2Internaldate(1_650_000_100), big * 1000)
        m.logout()
        password = tmp_path / "pw"
        password.write_text(alice.password)
        bob = TwinProcess.create(tmp_path, "bob")
        common = ["mail", "import", "imap", "--host", "127.0.0.1", "--user", alice.login,
                  "--password-file", str(password), "--insecure", "--json"]
        first = json.loads(twin_cli(bob.data, "--set", "smtp.max_message_size=65536", *common,
                                    "--port", str(alice.port("imap")), "--starttls",
                                    timeout=120).stdout)
        assert first["added"] == 5 and first["skipped"] == 1, first  # the big one: too big
        assert "larger than 65536" in first["skipped_messages"][0]["reason"]
        second = json.loads(twin_cli(bob.data, *common, "--port", str(alice.port("imaps")),
                                     "--tls", timeout=120).stdout)
        assert second["added"] == 1 and second["already"] == 5, second  # now it fits
        unverified = twin_cli(bob.data, *common[:-2], "--json", "--port",
                              str(alice.port("imaps")), "--tls", check=False, timeout=120)
        assert unverified.returncode == 2 and "CERTIFICATE_VERIFY_FAILED" in unverified.stderr
    finally:
        alice.stop()
    export(bob.data, "mbox", tmp_path / "mbox")
    box = mailbox.mbox(str(tmp_path / "mbox" / "Old" / "Letters.mbox"), create=False)
    got = sorted(box.get_bytes(k) for k in box.iterkeys())
    assert got == sorted([b"Subject: letter %d\nStatus: RO\nX-Keywords: work\n\nDear bob\n" % i
                          for i in range(5)]
                         + [b"Subject: big\nStatus: O\n"
                            + (big * 1000).replace(b"\r\n", b"\n")[len(b"Subject: big\n"):]])


def _unverified() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
