"""Real mail clients against the twin: mbsync, offlineimap, neomutt (apt tools).

Each sync client syncs a populated account, then changes on both sides (new
mail, flags, deletes, a new folder), syncs again and checks both sides, then
a third run must change nothing on the server.
"""

from __future__ import annotations

import imaplib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.protocols.imap.conftest import Account
from tests.tools import require_tool

MSG = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: %s\r\nMessage-ID: <%s@t>\r\n\r\nhi\r\n"


def server_state(acc: Account) -> dict[str, tuple[int, int, list[str]]]:
    """(messages, highestmodseq, sorted subjects) of every mailbox."""
    c = imaplib.IMAP4("127.0.0.1", acc.port)
    c.login(acc.login, acc.password)
    out = {}
    for line in c.list()[1]:
        name = line.decode().rsplit(' "/" ', 1)[1].strip('"')  # type: ignore[union-attr]
        _, st = c.status(f'"{name}"', "(MESSAGES HIGHESTMODSEQ)")
        words = st[0].decode().split("(")[1].rstrip(")").split()  # type: ignore[union-attr]
        c.select(f'"{name}"', readonly=True)
        _, data = c.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])") if \
            words[1] != "0" else ("OK", [])
        subjects = sorted(d[1].decode().split(":", 1)[1].strip() for d in data
                          if isinstance(d, tuple))
        out[name] = (int(words[1]), int(words[3]), subjects)
    c.logout()
    return out


def populate(acc: Account) -> None:
    for i in (1, 2, 3):
        acc.deliver(MSG % (b"inbox-%d" % i, b"i%d" % i))
    acc.deliver(MSG % (b"archived", b"a1"), mailbox="Archive")


def local_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if (p.is_file()
            and "/cur/" in str(p)) or "/new/" in str(p)}


def change_server(acc: Account) -> None:
    acc.deliver(MSG % (b"inbox-4", b"i4"))
    c = imaplib.IMAP4("127.0.0.1", acc.port)
    c.login(acc.login, acc.password)
    c.select("INBOX")
    c.store("1", "+FLAGS", "(\\Flagged)")
    c.store("2", "+FLAGS", "(\\Deleted)")
    c.expunge()
    c.create("NewRemote")
    c.append("NewRemote", None, None, MSG % (b"remote-folder", b"r1"))
    c.logout()


def write_maildir_msg(folder: Path, name: str, data: bytes) -> None:
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "new" / f"{int(time.time())}.{name}.local").write_bytes(data)


def find_local(root: Path, subject: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and f"Subject: {subject}".encode()
            in p.read_bytes()]


def scenario(acc: Account, root: Path, sync: Callable[[], None], inbox: Path,
             new_local: Path) -> None:
    populate(acc)
    sync()
    assert len(find_local(root, "inbox-1")) == 1 and len(find_local(root, "archived")) == 1
    change_server(acc)
    # local changes: a new message in INBOX, \Seen on inbox-3, a new folder
    write_maildir_msg(inbox, "n1", MSG % (b"local-new", b"l1"))
    [seen] = find_local(root, "inbox-3")
    if ":2," not in seen.name:
        seen.rename(seen.parent.parent / "cur" / (seen.name + ":2,S"))
    else:
        seen.rename(seen.parent.parent / "cur" / (seen.name.split(":2,")[0] + ":2,S"))
    write_maildir_msg(new_local, "n2", MSG % (b"local-folder", b"l2"))
    sync()
    state = server_state(acc)
    assert state["INBOX"][2] == ["inbox-1", "inbox-3", "inbox-4", "local-new"]
    assert any(v[2] == ["local-folder"] for k, v in state.items() if "NewLocal" in k), state
    c = imaplib.IMAP4("127.0.0.1", acc.port)
    c.login(acc.login, acc.password)
    c.select("INBOX", readonly=True)
    _, seen_ids = c.search(None, "SEEN", "SUBJECT", "inbox-3")
    assert seen_ids[0], "the local \\Seen reached the server"
    c.logout()
    assert not find_local(root, "inbox-2"), "the server's delete reached the maildir"
    assert find_local(root, "inbox-4") and find_local(root, "remote-folder")
    flagged = find_local(root, "inbox-1")[0]
    assert "F" in flagged.name.split(":2,")[-1]
    before = server_state(acc)
    files_before = sorted(str(p) for p in root.rglob("*") if p.is_file()
                          and ("/cur/" in str(p) or "/new/" in str(p)))
    sync()
    assert server_state(acc) == before, "a second run changed the server"
    files_after = sorted(str(p) for p in root.rglob("*") if p.is_file()
                         and ("/cur/" in str(p) or "/new/" in str(p)))
    assert files_after == files_before, "a second run changed the maildir"


def test_mbsync_two_way(account: Account, tmp_path: Path) -> None:
    mbsync = require_tool("mbsync")
    root = tmp_path / "mail"
    root.mkdir()
    cert = account.twin.data / "tls" / "cert.pem"
    conf = tmp_path / "mbsyncrc"
    conf.write_text(f"""IMAPAccount twin
Host 127.0.0.1
Port {account.port}
User {account.login}
Pass {account.password}
SSLType STARTTLS
CertificateFile {cert}
AuthMechs PLAIN

IMAPStore remote
Account twin

MaildirStore local
Path {root}/
Inbox {root}/INBOX
SubFolders Verbatim

Channel twin
Far :remote:
Near :local:
Patterns *
Create Both
Remove Both
Expunge Both
SyncState *
""")
    def sync() -> None:
        r = subprocess.run([mbsync, "-c", str(conf), "-a"], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
    scenario(account, root, sync, root / "INBOX", root / "NewLocal")


def test_offlineimap_two_way(account: Account, tmp_path: Path) -> None:
    offlineimap = require_tool("offlineimap")
    root = tmp_path / "mail"
    root.mkdir()
    cert = account.twin.data / "tls" / "cert.pem"
    conf = tmp_path / "offlineimaprc"
    conf.write_text(f"""[general]
accounts = twin
metadata = {tmp_path}/meta
ui = basic

[Account twin]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {root}
sep = /

[Repository remote]
type = IMAP
remotehost = localhost
remoteport = {account.twin.tls_port}
remoteuser = {account.login}
remotepass = {account.password}
ssl = yes
sslcacertfile = {cert}
createfolders = True
""")
    def sync() -> None:
        r = subprocess.run([offlineimap, "-c", str(conf), "-o", "-u", "basic"],
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0 and "ERROR" not in r.stdout + r.stderr, r.stdout + r.stderr
    scenario(account, root, sync, root / "INBOX", root / "NewLocal")


def test_neomutt_reads_a_message(account: Account, tmp_path: Path) -> None:
    neomutt = require_tool("neomutt")
    tmux = require_tool("tmux")
    account.deliver(MSG % (b"for neomutt", b"n1"))
    cert = account.twin.data / "tls" / "cert.pem"
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(f"""set folder = "imap://127.0.0.1:{account.port}/"
set spoolfile = "+INBOX"
set imap_user = "{account.login}"
set imap_pass = "{account.password}"
set ssl_starttls = yes
set ssl_force_tls = yes
set certificate_file = "{cert}"
set header_cache = ""
set message_cachedir = ""
set mail_check = 5
set timeout = 5
set sort = date
set pager_stop = yes
set wait_key = no
""")
    session = f"twin-neomutt-{tmp_path.name}"
    env_home = tmp_path / "home"
    env_home.mkdir()
    subprocess.run([tmux, "new-session", "-d", "-s", session, "-x", "150", "-y", "40",
                    f"HOME={env_home} TERM=xterm {neomutt} -n -F {muttrc}"], check=True)
    try:
        deadline = time.monotonic() + 30
        screen = ""
        while time.monotonic() < deadline:
            screen = subprocess.run([tmux, "capture-pane", "-p", "-t", session],
                                    capture_output=True, text=True).stdout
            if "for neomutt" in screen:
                break
            if "(yes/no)" in screen or "[r]eject" in screen:
                subprocess.run([tmux, "send-keys", "-t", session, "a"], check=True)
            time.sleep(0.3)
        assert "for neomutt" in screen, screen
        subprocess.run([tmux, "send-keys", "-t", session, "Enter"], check=True)
        time.sleep(1)  # the pager shows the message; neomutt peeks, then syncs \Seen
        subprocess.run([tmux, "send-keys", "-t", session, "q"], check=True)
        time.sleep(0.3)
        subprocess.run([tmux, "send-keys", "-t", session, "$"], check=True)
        c = imaplib.IMAP4("127.0.0.1", account.port)
        c.login(account.login, account.password)
        c.select("INBOX", readonly=True)
        flags = b""
        while time.monotonic() < deadline:
            flags = c.fetch("1", "(FLAGS)")[1][0]  # type: ignore[assignment]
            if b"\\Seen" in flags:
                break
            time.sleep(0.3)
        c.logout()
        assert b"\\Seen" in flags
        subprocess.run([tmux, "send-keys", "-t", session, "q"], check=False)
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], check=False,
                       capture_output=True)

