"""Maildir and mbox import/export in process: hostile files, names, round trips, the record.

The end-to-end story (a real Dovecot, the CLI, a kill half way) is
tests/e2e/test_mail_transfer.py; these are the bounds and edge cases.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from core.mail import files
from core.mail import folders as fn
from core.mail.imported import Incoming, Skipped
from core.mail.transfer import FileSource, LocalMail, run_export, run_import, writer_for
from core.progress import Progress
from core.service import Service

MAX = 64 * 1024


def msg(n: int, body: str = "hello") -> bytes:
    return f"From: a@example.org\nSubject: m{n}\nMessage-ID: <{n}@x>\n\n{body}\n".encode()


@pytest.mark.parametrize("name", ["INBOX", "Work", "Work/Projects/2026", "Reisen/Köln",
                                  "a.b/c", "100%", "x&y-", ".hidden", "Sent"])
def test_folder_names_survive_both_layouts(name: str) -> None:
    d = fn.to_maildir(name)
    assert fn.from_maildir(d) == name if d else name == "INBOX"
    assert fn.from_mbox(fn.to_mbox(name)) == name


def test_an_mbox_entry_reads_back_as_written() -> None:
    cases = [
        (msg(1, "From the start\n>From quoted\n>>From twice"), frozenset({"\\Seen", "todo"})),
        (b"Subject: headers only\n", frozenset({"\\Draft", "\\Deleted", "\\Answered"})),
        (b"\nno header at all\n", frozenset({"\\Flagged"})),
        (b"From: x\nStatus: RO\nX-Keywords: forged\n\nbody\n", frozenset()),
    ]
    raw = b"".join(files.mbox_bytes(d, f, 1_700_000_000 + i) + b"\n"
                   for i, (d, f) in enumerate(cases))
    got = list(files.mbox_messages(io.BytesIO(raw), "INBOX", MAX, {}))
    assert [g.flags for g in got if isinstance(g, Incoming)] == [f for _, f in cases]
    assert [g.date for g in got if isinstance(g, Incoming)] == [
        1_700_000_000 + i for i in range(len(cases))]
    datas = [g.data for g in got if isinstance(g, Incoming)]
    assert datas[:3] == [d for d, _ in cases[:3]]
    assert datas[3] == b"From: x\n\nbody\n"  # an mbox's own bookkeeping headers are not kept


def test_hostile_mbox_content_is_skipped_and_reported_never_fatal() -> None:
    huge_line = b"x" * (5 * files.LINE)  # one line far longer than a read
    raw = (b"garbage before any From_ line\n"
           + b"From a@b Thu Nov 14 22:13:20 2023\n" + msg(1) + b"\n"
           + b"From " + b"y" * (3 * files.LINE) + b"\n" + msg(2) + b"\n"  # an endless From_ line
           + b"From a@b Thu Nov 14 22:13:20 2023\nSubject: big\n\n" + huge_line * 2 + b"\n\n"
           + b"From a@b not a date\n\x00\xff\xfe binary \x00\n\n"
           + b"From a@b Thu Nov 14 22:13:20 2023\n" + msg(3))
    got = list(files.mbox_messages(io.BytesIO(raw), "INBOX", MAX, {}))
    kinds = [type(g).__name__ for g in got]
    assert kinds == ["Incoming", "Incoming", "Skipped", "Incoming", "Incoming"]
    assert isinstance(got[2], Skipped) and "larger than" in got[2].reason
    assert isinstance(got[3], Incoming) and got[3].data == b"\x00\xff\xfe binary \x00\n"


def test_hostile_maildir_entries_are_skipped_or_ignored(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    (root / "cur" / "1.a:2,S").write_bytes(msg(1))
    (root / "cur" / "2.b:2,").write_bytes(b"x" * (MAX + 1))  # too big
    (root / "cur" / "dir").mkdir()  # not a file
    os.symlink("/etc/passwd", root / "cur" / "3.link:2,S")  # not followed
    (root / "new" / "4.c").write_bytes(b"\x00\x01 not a message at all")
    (root / ".Sub.Folder" / "cur").mkdir(parents=True)
    (root / ".Sub.Folder" / "cur" / "5.d:2,Sa").write_bytes(msg(5))
    (root / ".Sub.Folder" / "dovecot-keywords").write_text("0 work\nnot a line\n99 nope\n")
    (root / ".NotAFolder").write_text("a file")
    assert [n for n, _ in files.maildir_folders(root)] == ["INBOX", "Sub/Folder"]
    seen: dict[str, int] = {}
    inbox = [files.read_maildir_file(f, "INBOX", {}, MAX, seen)
             for f in files.maildir_files(root)]
    assert [type(x).__name__ for x in inbox] == ["Incoming", "Skipped", "Incoming"]
    sub = root / ".Sub.Folder"
    (item,) = [files.read_maildir_file(f, "Sub/Folder", files.maildir_keywords(sub), MAX, seen)
               for f in files.maildir_files(sub)]
    assert isinstance(item, Incoming) and item.flags == {"\\Seen", "work"}


async def test_import_is_idempotent_and_export_keeps_bytes_flags_dates(
        service: tuple[Service, str], tmp_path: Path) -> None:
    svc, login = service
    source = tmp_path / "in.mbox"
    entries = [files.mbox_bytes(msg(i, "From a line\nbody"), frozenset({"\\Seen", f"k{i % 3}"}),
                                1_600_000_000 + i) for i in range(40)]
    entries.append(files.mbox_bytes(msg(0, "From a line\nbody"), frozenset(), 1_600_000_000))
    entries.append(b"From x Thu Nov 14 22:13:20 2023\nSubject: big\n\n" + b"z" * MAX)
    source.write_bytes(b"\n".join(entries) + b"\n")
    access = LocalMail(svc.mail, login, MAX)
    quiet = Progress("import", stream=io.StringIO())
    first = await run_import(access, FileSource("mbox", source, MAX, "Old/Archive"), quiet)
    assert (first.added, first.already, len(first.skipped)) == (41, 0, 1)  # a duplicate is kept
    again = await run_import(access, FileSource("mbox", source, MAX, "Old/Archive"), quiet)
    assert (again.added, again.already) == (0, 41)
    out = tmp_path / "out"
    done = await run_export(access, writer_for("maildir", str(out)), quiet, "Old")
    assert done.messages == 41
    back = await run_import(LocalMail(svc.mail, login, MAX),
                            FileSource("maildir", out, MAX, None), quiet)
    assert back.added == 0, "the Maildir export of the same mail is the same content"
    names = sorted(os.listdir(out / ".Old.Archive" / "cur"))
    assert len(names) == 41
    first_file = out / ".Old.Archive" / "cur" / names[0]
    assert first_file.read_bytes().count(b"\r\n") == 0
    assert int(first_file.stat().st_mtime) in range(1_600_000_000, 1_600_000_041)


async def test_a_folder_the_twin_cannot_name_is_skipped_not_fatal(
        service: tuple[Service, str], tmp_path: Path) -> None:
    svc, login = service
    root = tmp_path / "Maildir"
    for folder in (".Good", ".bad\x01name", ".a..b"):
        (root / folder / "cur").mkdir(parents=True)
        (root / folder / "cur" / "1.x:2,S").write_bytes(msg(1))
    quiet = Progress("import", stream=io.StringIO())
    done = await run_import(LocalMail(svc.mail, login, MAX), FileSource("maildir", root, MAX, None),
                            quiet)
    assert done.added == 1
    assert sorted(s.folder for s in done.skipped) == ["a//b", "bad\x01name"]
    assert all(s.what == "the whole folder" for s in done.skipped)


async def test_hostile_keywords_and_dates_are_cleaned_not_stored(
        service: tuple[Service, str], tmp_path: Path) -> None:
    svc, login = service
    source = tmp_path / "x.mbox"
    source.write_bytes(b"From a Thu Nov 14 22:13:20 2023\nSubject: k\n"
                       b"X-Keywords: ok (bad) \\Recent \\Nonsense x\\y fine\nX-Status: FZZ\n\nb\n")
    access = LocalMail(svc.mail, login, MAX)
    await run_import(access, FileSource("mbox", source, MAX, "K"), Progress("i"))
    (listed,) = await access.messages("K")
    assert listed.flags == {"ok", "fine", "\\Flagged"}
    item = Incoming("k2", msg(2), frozenset({"a b"}), float("inf"))
    await access.file("K", "test", [item])
    second = (await access.messages("K"))[1]
    assert second.flags == frozenset() and 0 < second.date < 1e11


def test_a_thunderbird_profile_directory_maps_to_folders(tmp_path: Path) -> None:
    root = tmp_path / "Local Folders"
    (root / "Archives.sbd").mkdir(parents=True)
    one = b"From - Thu Nov 14 22:13:20 2023\n" + msg(1)
    for name in ("Inbox", "Sent", "Archives", "Archives.sbd/2024"):
        (root / name).write_bytes(one)
    (root / "Inbox.msf").write_bytes(b"// <!-- <mdb:mork:z v=\"1.4\"/> -->")  # an index
    (root / "notes.txt").write_bytes(b"not an mbox")
    (root / "empty").write_bytes(b"")
    assert sorted(n for n, _ in files.mbox_files(root)) == ["Archives", "Archives/2024", "INBOX",
                                                            "Sent"]
