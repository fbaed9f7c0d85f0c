"""Imported mail: a batch filed into a mailbox together with the record of what it was.

``twin mail import`` must be resumable after a kill and add nothing on a
second run. Both follow from one rule: the rows of an imported batch and the
keys naming where each message came from (``mail_imported``: per login, per
source, e.g. a source folder's UIDVALIDITY and UID) commit in ONE transaction.
A kill before it leaves at most one batch's stored objects that no row uses
(space, not mail: nothing collects them yet); a kill after it leaves the keys,
and the next run skips them.

Messages are stored packed like journaled deliveries (``MailStore._store_packed``):
an import of many small messages costs one object per 128 KiB, not one each.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

from core.errors import Conflict, Invalid, NotFound, QuotaExceeded
from core.mail.mailboxes import get_mailbox
from core.mail.messages import insert_rows
from core.mail.model import Row, parse_flags
from core.mail.store import MailStore

MIGRATIONS = [
    """
    CREATE TABLE mail_imported (
        login   TEXT NOT NULL,
        source  TEXT NOT NULL,
        key     TEXT NOT NULL,
        PRIMARY KEY (login, source, key)
    ) WITHOUT ROWID;
    """,
]
MAX_KEY = 2000
MAX_KEYS = 10_000  # keys asked about at once


@dataclass(frozen=True)
class Incoming:
    """One message to import: its source key, bytes, flags and internal date."""

    key: str
    data: bytes
    flags: frozenset[str]
    date: float


@dataclass(frozen=True)
class Skipped:
    """A source message left out, and why (too big, unreadable, hostile)."""

    folder: str
    what: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"folder": self.folder, "what": self.what, "reason": self.reason}


@dataclass(frozen=True)
class Filed:
    """What one batch did: messages added, and those skipped."""

    added: int
    bytes: int
    skipped: list[Skipped]


def clean_flags(flags: Sequence[str]) -> frozenset[str]:
    """The flags the twin can keep; one it cannot (malformed keyword) is dropped alone."""
    out: set[str] = set()
    for f in flags:
        try:
            out |= parse_flags([f])
        except Invalid:
            continue
    return parse_flags(sorted(out)[:100])


class Imported:
    """The per-source record of imported messages, and batches filed with it."""

    def __init__(self, mail: MailStore, max_size: int) -> None:
        self.mail = mail
        self.max_size = max_size
        mail.db.migrate("mail_imported", MIGRATIONS)

    async def known(self, login: str, source: str, keys: Sequence[str]) -> set[str]:
        """Of ``keys``, those already imported from ``source`` for ``login``."""
        if len(keys) > MAX_KEYS:
            raise Invalid(f"at most {MAX_KEYS} keys at once")

        def look(c: sqlite3.Connection) -> set[str]:
            out: set[str] = set()
            for i in range(0, len(keys), 500):
                chunk = list(keys[i:i + 500])
                q = (f"SELECT key FROM mail_imported WHERE login = ? AND source = ? "  # noqa: S608
                     f"AND key IN ({','.join('?' * len(chunk))})")
                out.update(r[0] for r in c.execute(q, (login, source, *chunk)))
            return out
        return await self.mail.reads.run(look)

    async def ensure_folder(self, login: str, name: str) -> None:
        try:
            await self.mail.mailbox(login, name)
        except NotFound:
            with contextlib.suppress(Conflict):  # created meanwhile
                await self.mail.create_mailbox(login, name)

    async def file(self, login: str, folder: str, source: str, items: Sequence[Incoming]
                   ) -> Filed:
        """Store ``items`` in ``folder`` and record their keys, all in one transaction.

        A message over the size limit or that cannot be described is skipped
        and reported, never fatal; keys already recorded (another run got
        there first) are left out inside the transaction."""
        if not source or len(source) > MAX_KEY:
            raise Invalid("invalid import source")
        await self.ensure_folder(login, folder)
        skipped: list[Skipped] = []
        good: list[tuple[Incoming, bytes, bytes, str]] = []
        for item in items:
            if not item.key or len(item.key) > MAX_KEY:
                skipped.append(Skipped(folder, item.key[:80], "invalid source key"))
                continue
            try:
                data, header, structure = await self.mail._prepare(item.data, self.max_size)
            except Invalid as exc:
                skipped.append(Skipped(folder, item.key[:200], str(exc)))
                continue
            except Exception as exc:  # hostile content: this message only
                skipped.append(Skipped(folder, item.key[:200], f"{type(exc).__name__}: {exc}"))
                continue
            good.append((item, data, header, structure))
        if not good:
            return Filed(0, 0, skipped)
        size = sum(len(d) for _, d, _, _ in good)
        if self.mail.quota_bytes:
            used, limit = await self.mail.quota(login)
            if used + size > limit:
                raise QuotaExceeded(f"over quota ({used + size} > {limit} bytes)")
        store = self.mail._need_store()
        refs, objects = await self.mail._store_packed(store, [d for _, d, _, _ in good])
        rows: list[tuple[str, Row]] = [
            (item.key, Row(ref, header, structure, len(data), _date(item.date),
                            clean_flags(sorted(item.flags))))
            for (item, data, header, structure), ref in zip(good, refs, strict=True)]

        def insert(c: sqlite3.Connection) -> tuple[int, int, int, int, list[Row]]:
            target = get_mailbox(c, login, folder).id
            fresh = [(k, r) for k, r in rows if not c.execute(
                "SELECT 1 FROM mail_imported WHERE login = ? AND source = ? AND key = ?",
                (login, source, k)).fetchone()]
            if not fresh:
                return target, 0, 0, 0, []
            uid, modseq, uidvalidity = insert_rows(c, target, [r for _, r in fresh])
            c.executemany("INSERT INTO mail_imported VALUES (?, ?, ?)",
                          [(login, source, k) for k, _ in fresh])
            return target, uid, modseq, uidvalidity, [r for _, r in fresh]
        target, uid, modseq, uidvalidity, placed = await self.mail._commit_or_delete(
            insert, objects)
        if not placed:
            await self.mail.garbage.delete(objects)
            return Filed(0, 0, skipped)
        self.mail.live.announce(target, uidvalidity, uid, modseq, placed)
        return Filed(len(placed), sum(r[3] for r in placed), skipped)


def _date(value: float) -> float:
    """An internal date the twin can hold: a number between 1970 and 9999, else now."""
    return value if 0 <= value < 253_402_300_800 else time.time()


def folder_refs(c: sqlite3.Connection, login: str, name: str, uids: Sequence[int]
                ) -> dict[int, str]:
    """uid -> stored ref of these messages of a folder (those that exist)."""
    mb = get_mailbox(c, login, name)
    out: dict[int, str] = {}
    for i in range(0, len(uids), 500):
        chunk = list(uids[i:i + 500])
        q = (f"SELECT uid, ref FROM mail_messages WHERE mailbox = ? "  # noqa: S608
             f"AND uid IN ({','.join('?' * len(chunk))})")
        out.update((int(r[0]), str(r[1])) for r in c.execute(q, (mb.id, *chunk)))
    return out


def folder_messages(c: sqlite3.Connection, login: str, name: str
                    ) -> list[tuple[int, str, int, float, str]]:
    """(uid, ref, size, internal date, flags text) of every message of a folder, by uid."""
    mb = get_mailbox(c, login, name)
    return [tuple(r) for r in c.execute(
        "SELECT uid, ref, size, internal_date, flags FROM mail_messages WHERE mailbox = ? "
        "ORDER BY uid", (mb.id,))]
