"""Maildir and mbox: reading them for an import, writing them for an export.

Writing uses Python's ``mailbox`` module (``Maildir.add``/``add_folder``,
``mbox.add``), given the message bytes, so the bytes written are the bytes
stored (line ends as the files' convention wants them: LF). Two details it
does not do are done here: a Maildir message's flags go into its file name
(``cur/…:2,FS``) and its internal date into the file's mtime, and mbox
quoting is *mboxrd* (``>From `` gets one more ``>``, reversed on reading), so
a body line starting with ``From `` survives a round trip.

Reading does not use ``mailbox``: its mbox reader takes a line of any length
into memory (one hostile line is the whole file) and does not undo mboxrd
quoting, and its Maildir reader in Python 3.11 gives a message's flags only
by parsing the whole message. The readers here are bounded: lines are read
at most ``LINE`` bytes at a time, a message over the size limit is skipped
(reported, not read into memory), and a file that is not a message is
skipped likewise.
"""

from __future__ import annotations

import calendar
import contextlib
import hashlib
import mailbox
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from core.mail import folders as fn
from core.mail.imported import Incoming, Skipped

LINE = 64 * 1024
MAX_FOLDERS = 10_000
_FROM_DATE = re.compile(rb"([A-Z][a-z]{2}) +(\d{1,2}) +(\d{1,2}):(\d{2})(?::(\d{2}))? +(\d{4})")
_MONTHS = {m.encode(): i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_QUOTED_FROM = re.compile(rb"(?m)^(>*From )")
_UNQUOTED_FROM = re.compile(rb"(?m)^>(>*From )")
# headers an mbox carries for its own bookkeeping (ours, Dovecot's, mutt's): not the message's
_MBOX_META = (b"status:", b"x-status:", b"x-keywords:", b"x-uid:", b"x-imapbase:", b"x-imap:")


def lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def content_key(folder: str, data: bytes, seen: dict[str, int]) -> str:
    """A file source's key: folder, hash of the LF form, and which copy of it this is.

    The same bytes twice in one folder are two messages (copy 0 and 1); the
    same message from a Maildir and from an mbox export of it is one."""
    digest = hashlib.sha256(lf(data)).hexdigest()
    n = seen.get(digest, 0)
    seen[digest] = n + 1
    return f"{folder}\x00{digest}\x00{n}"


# -- writing

@dataclass(frozen=True)
class Written:
    dropped_keywords: int


class MaildirWriter:
    """One Maildir++ tree: INBOX at the root, other folders as ``.a.b``."""

    def __init__(self, dest: Path) -> None:
        self.root = mailbox.Maildir(str(dest), factory=None, create=True)
        self.dest = dest

    def folder(self, name: str) -> MaildirFolder:
        sub = fn.to_maildir(name)
        box = self.root if not sub else self.root.add_folder(sub[1:])
        return MaildirFolder(box, self.dest / sub if sub else self.dest)


class MaildirFolder:
    def __init__(self, box: mailbox.Maildir, path: Path) -> None:
        self.box = box
        self.path = path
        self.letters: dict[str, str] = {}
        self.dropped = 0

    def add(self, data: bytes, flags: frozenset[str], date: float) -> None:
        for kw in sorted(f for f in flags if not f.startswith("\\")):
            if kw not in self.letters:
                if len(self.letters) == len(fn.KEYWORD_LETTERS):
                    self.dropped += 1
                    continue
                self.letters[kw] = fn.KEYWORD_LETTERS[len(self.letters)]
        key = self.box.add(lf(data))
        target = self.path / "cur" / f"{key}:{fn.maildir_info(flags, self.letters)}"
        os.rename(self.path / "new" / key, target)
        os.utime(target, (date, date))

    def close(self) -> Written:
        if self.letters:
            (self.path / "dovecot-keywords").write_text(
                "".join(f"{fn.KEYWORD_LETTERS.index(v)} {k}\n" for k, v in self.letters.items()))
        return Written(self.dropped)


class _MboxRd(mailbox.mbox):
    _mangle_from_ = False  # quoted here, as mboxrd (``mbox_bytes``)


def mbox_bytes(data: bytes, flags: frozenset[str], date: float) -> bytes:
    """A message as an mboxrd entry: From_ line, status headers, quoted ``From `` lines."""
    body = lf(data)
    head, sep, rest = _split_header(body)
    head = _strip_meta(head) + fn.mbox_headers(flags)
    body = _QUOTED_FROM.sub(rb">\1", head + sep + rest)
    stamp = time.asctime(time.gmtime(date)).encode()
    return b"From MAILER-DAEMON " + stamp + b"\n" + body


class MboxWriter:
    """One mbox file per folder: ``DEST/a/b.mbox``."""

    def __init__(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        self.dest = dest

    def folder(self, name: str) -> MboxFolder:
        path = self.dest / fn.to_mbox(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        return MboxFolder(_MboxRd(str(path), create=True))


class MboxFolder:
    def __init__(self, box: mailbox.mbox) -> None:
        self.box = box

    def add(self, data: bytes, flags: frozenset[str], date: float) -> None:
        self.box.add(mbox_bytes(data, flags, date))

    def close(self) -> Written:
        self.box.flush()
        self.box.close()
        return Written(0)


def _split_header(body: bytes) -> tuple[bytes, bytes, bytes]:
    """(header lines, the blank line, the rest) of an LF message."""
    if body.startswith(b"\n"):
        return b"", b"\n", body[1:]
    end = body.find(b"\n\n")
    if end < 0:
        return body if body.endswith(b"\n") or not body else body + b"\n", b"", b""
    return body[:end + 1], b"\n", body[end + 2:]


def _strip_meta(head: bytes) -> bytes:
    """The header lines without the mbox bookkeeping ones (and their continuations)."""
    out: list[bytes] = []
    dropping = False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                out.append(line)
            continue
        dropping = line.lower().startswith(_MBOX_META)
        if not dropping:
            out.append(line)
    return b"".join(out)


def _meta_value(head: bytes, name: bytes) -> str:
    for line in head.splitlines():
        if line.lower().startswith(name):
            return line[len(name):].strip().decode("ascii", "replace")
    return ""


# -- reading

def maildir_folders(root: Path) -> list[tuple[str, Path]]:
    """(twin name, directory) of every folder of a Maildir++ tree, INBOX first."""
    found: list[tuple[str, Path]] = []
    if (root / "cur").is_dir() or (root / "new").is_dir():
        found.append(("INBOX", root))
    for entry in sorted(os.scandir(root), key=lambda e: e.name)[:MAX_FOLDERS]:
        if entry.name.startswith(".") and entry.name not in (".", "..") and entry.is_dir() \
                and (Path(entry.path) / "cur").is_dir():
            name = fn.from_maildir(entry.name)
            found.append(("INBOX" if name.upper() == "INBOX" else name, Path(entry.path)))
    return found


@dataclass(frozen=True)
class MaildirFile:
    path: Path
    info: str
    size: int
    mtime: float


def maildir_files(folder: Path) -> list[MaildirFile]:
    """The message files of one Maildir folder (``new`` and ``cur``), in a stable order."""
    out: list[MaildirFile] = []
    for sub in ("new", "cur"):
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(folder / sub):
                if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
                _, _, info = entry.name.partition(":")
                out.append(MaildirFile(Path(entry.path), info, st.st_size, st.st_mtime))
    out.sort(key=lambda f: f.path.name)
    return out


def maildir_keywords(folder: Path) -> dict[str, str]:
    try:
        with open(folder / "dovecot-keywords", "rb") as f:
            return fn.read_dovecot_keywords(f.read(LINE).decode("utf-8", "replace"))
    except OSError:
        return {}


def read_maildir_file(item: MaildirFile, folder: str, keywords: dict[str, str],
                      max_size: int, seen: dict[str, int]) -> Incoming | Skipped:
    if item.size > max_size:
        return Skipped(folder, item.path.name, f"larger than {max_size} bytes")
    try:
        with open(item.path, "rb") as f:
            data = f.read(max_size + 1)
    except OSError as exc:
        return Skipped(folder, item.path.name, f"unreadable: {exc}")
    if len(data) > max_size:
        return Skipped(folder, item.path.name, f"larger than {max_size} bytes")
    return Incoming(content_key(folder, data, seen), data,
                    fn.maildir_flags(item.info, keywords), item.mtime)


def mbox_files(path: Path) -> list[tuple[str, Path]]:
    """(twin name, file) of an mbox file, or of every mbox file under a directory."""
    if path.is_file():
        stem = path.name[:-5] if path.name.endswith(".mbox") else path.name
        return [(fn.from_mbox(stem), path)]
    out: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            if name.startswith(".") or name.endswith((".msf", ".dat", ".json")):
                continue
            full = Path(dirpath) / name
            with contextlib.suppress(OSError), open(full, "rb") as f:
                if f.read(5) == b"From ":
                    out.append((fn.from_mbox(str(full.relative_to(path))), full))
            if len(out) >= MAX_FOLDERS:
                return out
    return out


def open_binary(path: Path) -> BinaryIO:
    return open(path, "rb")  # the caller closes it


def mbox_messages(f: BinaryIO, folder: str, max_size: int, seen: dict[str, int]
                  ) -> Iterator[Incoming | Skipped]:
    """The messages of one mbox file, bounded: lines of at most ``LINE`` bytes at a time,
    a message over ``max_size`` skipped without being held."""
    current: list[bytes] | None = None
    from_line = b""
    size = 0
    too_big = False
    at_line_start = True
    number = 0

    def finish() -> Incoming | Skipped | None:
        if current is None:
            return None
        what = f"message {number}"
        if too_big:
            return Skipped(folder, what, f"larger than {max_size} bytes")
        return _mbox_message(b"".join(current), from_line, folder, seen)

    while True:
        chunk = f.readline(LINE)
        if not chunk:
            break
        starts = at_line_start and chunk.startswith(b"From ")
        at_line_start = chunk.endswith(b"\n")
        if starts:
            done = finish()
            if done is not None:
                yield done
            number += 1
            current, from_line, size, too_big = [], chunk, 0, False
            while not at_line_start:  # the rest of an over-long From_ line
                rest = f.readline(LINE)
                if not rest:
                    break
                at_line_start = rest.endswith(b"\n")
            continue
        if current is None:
            continue  # text before the first From_ line: not a message
        size += len(chunk)
        if size > max_size + 2:
            too_big = True
            current = []
        if not too_big:
            current.append(chunk)
    done = finish()
    if done is not None:
        yield done


def _mbox_message(raw: bytes, from_line: bytes, folder: str, seen: dict[str, int]
                  ) -> Incoming | Skipped:
    raw = lf(raw)
    if raw.endswith(b"\n\n"):  # the blank line that separates it from the next
        raw = raw[:-1]
    raw = _UNQUOTED_FROM.sub(rb"\1", raw)
    head, sep, rest = _split_header(raw)
    flags = fn.mbox_flags(_meta_value(head, b"status:"), _meta_value(head, b"x-status:"),
                          _meta_value(head, b"x-keywords:"))
    data = _strip_meta(head) + sep + rest
    return Incoming(content_key(folder, data, seen), data, flags, _from_date(from_line))


def _from_date(from_line: bytes) -> float:
    """The date of an mbox From_ line (read as UTC); now if it has none."""
    m = _FROM_DATE.search(from_line)
    if m is None or m.group(1) not in _MONTHS:
        return time.time()
    try:
        return float(calendar.timegm((int(m.group(6)), _MONTHS[m.group(1)], int(m.group(2)),
                                      int(m.group(3)), int(m.group(4)), int(m.group(5) or 0),
                                      0, 0, 0)))
    except (ValueError, OverflowError):
        return time.time()
