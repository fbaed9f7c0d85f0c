"""``twin mail import`` and ``twin mail export``: the loops, wherever the mail is.

The loops talk to a ``MailAccess``: ``LocalMail`` (the store opened by this
process, or the running twin's own, behind its local API in
``core.owner.transfer``) or the CLI's client of that API
(``core.cli.mail_transfer.RemoteMail``). A source (``FileSource`` for Maildir
and mbox, ``core.mail.imap_source.ImapSource``) yields batches of messages not
imported before; each batch is filed with its keys in one transaction
(``core.mail.imported``), which is what makes an import resumable after a kill
and idempotent on a second run.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from core.errors import Invalid, NotFound
from core.mail import files
from core.mail.imported import (
    Filed,
    Imported,
    Incoming,
    Skipped,
    folder_messages,
    folder_refs,
)
from core.mail.model import DELIM, check_name, flags_set
from core.mail.store import MailStore
from core.progress import Progress, human_bytes

BATCH_BYTES = 8 * 1024 * 1024
BATCH_COUNT = 200
READERS = 8  # message bodies read from the store at once by an export
Known = Callable[[list[str]], Awaitable[set[str]]]


@dataclass(frozen=True)
class FolderInfo:
    name: str
    messages: int
    bytes: int


@dataclass(frozen=True)
class Listed:
    uid: int
    size: int
    date: float
    flags: frozenset[str]

    def to_json(self) -> list[Any]:
        return [self.uid, self.size, self.date, sorted(self.flags)]

    @classmethod
    def from_json(cls, v: list[Any]) -> Listed:
        return cls(int(v[0]), int(v[1]), float(v[2]), frozenset(str(f) for f in v[3]))


class MailAccess(Protocol):
    """What import and export need of a login's mail, local or through the running twin."""

    async def known(self, source: str, keys: list[str]) -> set[str]: ...
    async def file(self, folder: str, source: str, items: Sequence[Incoming]) -> Filed: ...
    async def folders(self) -> list[FolderInfo]: ...
    async def messages(self, folder: str) -> list[Listed]: ...
    async def bodies(self, folder: str, uids: Sequence[int]) -> list[bytes]: ...


class LocalMail:
    """A login's mail in a ``MailStore`` this process holds (started or just opened)."""

    def __init__(self, mail: MailStore, login: str, max_size: int,
                 imported: Imported | None = None) -> None:
        self.mail = mail
        self.login = login
        self.imported = imported if imported is not None else Imported(mail, max_size)

    async def known(self, source: str, keys: list[str]) -> set[str]:
        return await self.imported.known(self.login, source, keys)

    async def file(self, folder: str, source: str, items: Sequence[Incoming]) -> Filed:
        return await self.imported.file(self.login, check_name(folder), source, items)

    async def folders(self) -> list[FolderInfo]:
        boxes = await self.mail.mailboxes(self.login)

        def counts(c: sqlite3.Connection) -> dict[int, tuple[int, int]]:
            return {r[0]: (r[1], r[2]) for r in c.execute(
                "SELECT mailbox, count(*), COALESCE(sum(size), 0) FROM mail_messages "
                "GROUP BY mailbox")}
        by_id = await self.mail.reads.run(counts)
        return [FolderInfo(b.name, *by_id.get(b.id, (0, 0))) for b in boxes]

    async def messages(self, folder: str) -> list[Listed]:
        rows = await self.mail.reads.run(folder_messages, self.login, check_name(folder))
        return [Listed(r[0], r[2], r[3], flags_set(r[4])) for r in rows]

    async def bodies(self, folder: str, uids: Sequence[int]) -> list[bytes]:
        refs = await self.mail.reads.run(folder_refs, self.login, check_name(folder), list(uids))
        missing = [u for u in uids if u not in refs]
        if missing:
            raise NotFound(f"no message uid {missing[0]} in {folder}")
        gate = asyncio.Semaphore(READERS)

        async def one(ref: str) -> bytes:
            async with gate:
                return await self.mail.read_bytes(ref)
        return list(await asyncio.gather(*(one(refs[u]) for u in uids)))


# -- sources

class Source(Protocol):
    name: str

    async def folders(self) -> list[tuple[str, str]]: ...
    async def count(self, folders: Sequence[tuple[str, str]]) -> int: ...
    def read(self, source: str, twin: str, known: Known
             ) -> AsyncIterator[tuple[list[Incoming], list[Skipped], int]]: ...
    async def close(self) -> None: ...


class FileSource:
    """A Maildir++ tree, or an mbox file or a directory of them.

    Keys are the content's (``files.content_key``), under one source name for
    both kinds: a message imported from a Maildir is not imported again from
    an mbox export of the same folder."""

    name = "files"

    def __init__(self, kind: str, path: Path, max_size: int, prefix: str | None) -> None:
        if not path.exists():
            raise NotFound(f"no such file or directory: {path}")
        self.kind = kind
        self.path = path
        self.max_size = max_size
        self.prefix = check_name(prefix) if prefix else None

    def _name(self, name: str) -> str:
        if self.prefix is None:
            return name
        return self.prefix if name == "INBOX" else check_name(self.prefix + DELIM + name)

    async def folders(self) -> list[tuple[str, str]]:
        if self.kind == "maildir":
            if not self.path.is_dir():
                raise Invalid(f"{self.path} is not a Maildir directory")
            found = await asyncio.to_thread(files.maildir_folders, self.path)
        else:
            found = await asyncio.to_thread(files.mbox_files, self.path)
            if self.prefix is not None and len(found) == 1 and found[0][1] == self.path:
                return [(str(self.path), self.prefix)]  # one file: --folder names its folder
        return [(str(p), self._name(n)) for n, p in found]

    async def count(self, folders: Sequence[tuple[str, str]]) -> int:
        if self.kind != "maildir":
            return 0
        return sum([len(await asyncio.to_thread(files.maildir_files, Path(p)))
                    for p, _ in folders])

    async def read(self, source: str, twin: str, known: Known
                   ) -> AsyncIterator[tuple[list[Incoming], list[Skipped], int]]:
        seen: dict[str, int] = {}
        batch: list[Incoming] = []
        skipped: list[Skipped] = []
        size = 0
        yielded = False
        async for item in self._items(Path(source), twin, seen):
            if isinstance(item, Skipped):
                skipped.append(item)
                continue
            if batch and (size + len(item.data) > BATCH_BYTES or len(batch) >= BATCH_COUNT):
                yield await _new_only(batch, skipped, known)  # a batch: 8 MiB or one message
                yielded = True
                batch, skipped, size = [], [], 0
            batch.append(item)
            size += len(item.data)
        if batch or skipped or not yielded:
            yield await _new_only(batch, skipped, known)

    async def _items(self, path: Path, twin: str, seen: dict[str, int]
                     ) -> AsyncIterator[Incoming | Skipped]:
        if self.kind == "maildir":
            keywords = await asyncio.to_thread(files.maildir_keywords, path)
            for f in await asyncio.to_thread(files.maildir_files, path):
                yield await asyncio.to_thread(files.read_maildir_file, f, twin, keywords,
                                              self.max_size, seen)
            return
        handle = await asyncio.to_thread(files.open_binary, path)
        with handle:
            reader = files.mbox_messages(handle, twin, self.max_size, seen)
            while True:
                item = await asyncio.to_thread(next, reader, None)
                if item is None:
                    return
                yield item

    async def close(self) -> None:
        return None


async def _new_only(batch: list[Incoming], skipped: list[Skipped], known: Known
                    ) -> tuple[list[Incoming], list[Skipped], int]:
    done = await known([i.key for i in batch]) if batch else set()
    return [i for i in batch if i.key not in done], skipped, len(batch) - len(
        [i for i in batch if i.key not in done])


# -- import

@dataclass
class ImportSummary:
    folders: int = 0
    added: int = 0
    bytes: int = 0
    already: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        return {"folders": self.folders, "added": self.added, "bytes": self.bytes,
                "already": self.already, "skipped": len(self.skipped),
                "skipped_messages": [s.to_json() for s in self.skipped[:100]]}


async def run_import(access: MailAccess, source: Source, progress: Progress,
                     only: str | None = None) -> ImportSummary:
    """Import every folder of ``source`` (only ``only`` and below, if given)."""
    summary = ImportSummary()
    folders = await source.folders()
    if only is not None:
        folders = [f for f in folders if f[1] == only or f[1].startswith(only + DELIM)]
    total = await source.count(folders)
    of = f"/{total}" if total else ""

    async def known(keys: list[str]) -> set[str]:
        return await access.known(source.name, keys)

    for src, twin in folders:
        try:
            check_name(twin)
        except Invalid as exc:  # a name the twin cannot hold: that folder only
            summary.skipped.append(Skipped(twin[:200], "the whole folder", str(exc)))
            progress.step(f"skipped folder {twin[:200]!r}: {exc}", force=True)
            continue
        summary.folders += 1
        async for items, skipped, already in source.read(src, twin, known):
            filed = await access.file(twin, source.name, items)
            summary.added += filed.added
            summary.bytes += filed.bytes
            summary.already += already + len(items) - filed.added - len(filed.skipped)
            summary.skipped += skipped + filed.skipped
            for s in skipped + filed.skipped:
                progress.step(f"skipped {s.folder} {s.what}: {s.reason}", force=True)
            done = summary.added + summary.already + len(summary.skipped)
            progress.step(f"{done}{of} messages, {summary.added} added "
                          f"({human_bytes(summary.bytes)}), {summary.already} already there, "
                          f"{len(summary.skipped)} skipped; folder {twin}")
    return summary


def import_text(s: ImportSummary, seconds: float) -> str:
    rate = f" ({s.added / seconds:.0f} messages/s)" if seconds > 0 and s.added else ""
    return (f"imported {s.added} message(s), {human_bytes(s.bytes)}, in {s.folders} folder(s)"
            f"{rate}; {s.already} already imported; {len(s.skipped)} skipped")


# -- export

@dataclass
class ExportSummary:
    folders: int = 0
    messages: int = 0
    bytes: int = 0
    dropped_keywords: int = 0

    def counts(self) -> dict[str, Any]:
        return {"folders": self.folders, "messages": self.messages, "bytes": self.bytes,
                "dropped_keywords": self.dropped_keywords}


class Writer(Protocol):
    def folder(self, name: str) -> Any: ...


def writer_for(fmt: str, where: str) -> Writer:
    dest = Path(where).expanduser()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise Invalid(f"{dest} exists and is not an empty directory: export into a new one")
    if fmt == "maildir":
        return files.MaildirWriter(dest)
    if fmt == "mbox":
        return files.MboxWriter(dest)
    raise Invalid(f"unknown format {fmt!r} (maildir or mbox)")


async def run_export(access: MailAccess, writer: Writer, progress: Progress,
                     only: str | None = None) -> ExportSummary:
    summary = ExportSummary()
    folders = await access.folders()
    if only is not None:
        only = check_name(only)
        folders = [f for f in folders if f.name == only or f.name.startswith(only + DELIM)]
        if not folders:
            raise NotFound(f"no folder {only}")
    total = sum(f.messages for f in folders)
    for info in folders:
        summary.folders += 1
        out = await asyncio.to_thread(writer.folder, info.name)
        listed = await access.messages(info.name)
        i = 0
        while i < len(listed):
            batch = [listed[i]]
            size = listed[i].size
            i += 1
            while i < len(listed) and len(batch) < BATCH_COUNT \
                    and size + listed[i].size <= BATCH_BYTES:
                batch.append(listed[i])
                size += listed[i].size
                i += 1
            bodies = await access.bodies(info.name, [m.uid for m in batch])

            def write(batch: list[Listed] = batch, bodies: list[bytes] = bodies,
                      out: Any = out) -> None:
                for m, data in zip(batch, bodies, strict=True):
                    out.add(data, m.flags, m.date)
            await asyncio.to_thread(write)
            summary.messages += len(batch)
            summary.bytes += sum(len(b) for b in bodies)
            progress.step(f"{summary.messages}/{total} messages "
                          f"({human_bytes(summary.bytes)}); folder {info.name}")
        written = await asyncio.to_thread(out.close)
        summary.dropped_keywords += written.dropped_keywords
    return summary


def export_text(s: ExportSummary, seconds: float) -> str:
    rate = f" ({s.messages / seconds:.0f} messages/s)" if seconds > 0 and s.messages else ""
    dropped = (f"; {s.dropped_keywords} keyword(s) beyond 26 per folder dropped"
               if s.dropped_keywords else "")
    return (f"exported {s.messages} message(s), {human_bytes(s.bytes)}, in {s.folders} "
            f"folder(s){rate}{dropped}")


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
