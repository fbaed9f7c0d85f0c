"""Mailboxes and messages: metadata in SQLite, message bytes in the dispersed store.

A message's bytes are written once to the dispersed store; its structure
(``core.mail.mime``) and its top-level header block are cached in SQLite next
to the per-mailbox uid, flags and modseq, so listing, flag changes, SEARCH on
headers and FETCH of headers/ENVELOPE/BODYSTRUCTURE never read a body. COPY
shares the stored object; it is deleted when the last message using it goes.

Every write that changes a mailbox goes through one ``GroupCommit`` (one
transaction and one fsync for everything queued) and, once committed, is
published (``core.mail.live``) to the mailbox's shared in-memory index
(``core.mail.index``, kept only while a session has the mailbox open) and to
the bounded ``Watch`` of every live session on it.

``MailStore`` is the operations (``core.mail.MailAccess`` lists those front
ends call): each checks its arguments, runs one transaction made of the row
helpers (``core.mail.mailboxes``, ``core.mail.messages``), then publishes
and tidies caches and objects. The types are ``core.mail.model``'s, the
tables ``core.mail.schema``'s, the bytes' layout ``core.mail.packs``'.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mmap
import sqlite3
import tempfile
import time
from collections import OrderedDict
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Collection,
    Hashable,
    Iterable,
    Sequence,
)
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple, TypeVar

from core.db import Database
from core.errors import (
    Conflict,
    ErrorCode,
    Forbidden,
    Invalid,
    NotFound,
    QuotaExceeded,
    Unavailable,
)
from core.mail import indexfile, keptkeys, mime, packs, quarantine, schema, sortkeys
from core.mail.cache import BytesCache, Fixed, MetaCache
from core.mail.commit import GroupCommit
from core.mail.index import MailboxIndex, Snapshot
from core.mail.intake import Intake
from core.mail.journal import Entry
from core.mail.live import Live, exists_changes
from core.mail.mailboxes import (
    MB_COLS,
    add_mailbox,
    bump_modseq,
    get_mailbox,
    like_prefix,
    to_mailbox,
)
from core.mail.messages import (
    VANISHED_KEEP,
    Removed,
    chunks,
    collect_unused,
    insert_rows,
    load_extents,
    load_meta,
    prune_vanished,
    remove_messages,
    used_bytes,
)
from core.mail.model import (
    DELIM,
    SPECIAL,
    SPECIAL_USES,
    Change,
    Copied,
    Copies,
    Extents,
    Flagged,
    Mailbox,
    Meta,
    Row,
    Status,
    Unused,
    Watch,
    check_name,
    flags_set,
    flags_text,
    parse_flags,
)
from core.mail.schema import GARBAGE
from core.mail.subscriptions import Subscriptions
from core.reclaim import Reclaim
from storage.errors import StorageError
from storage.model import ObjectRef

if TYPE_CHECKING:
    from storage import Store

log = logging.getLogger("twin.mail")
T = TypeVar("T")

SPOOL_IN_MEMORY = 1024 * 1024
DESCRIBE_INLINE = 64 * 1024  # parse on the loop below this size (< 1 ms)
DESCRIBE_YIELD = 16  # filing lets the sessions run after parsing this many (~0.5 ms)
MAX_ROWS = 10_000  # remembered mailbox rows (MailStore._open_row)
KEEP_KEYS_DELAY = 30.0  # s after a SORT that read many rows before packing its keys


class _CopyRun(NamedTuple):
    """What a COPY/MOVE's transaction did (``MailStore.copy``)."""

    dest_id: int
    uidvalidity: int
    source: list[int]  # the source uids copied, ascending
    new: list[int]  # their uids in the destination
    modseq: int  # the destination's change
    unused: Unused  # a MOVE: what no message uses any more
    source_modseq: int  # a MOVE: the source's change
    flag_texts: list[str]  # each message's flags, as stored


class MailStore:
    """The mail of every user of this twin (see ``core.mail`` for the contract)."""

    def __init__(self, db: Database, quota_bytes: int = 0,
                 vanished_keep: int = VANISHED_KEEP) -> None:
        self.db = db
        self.vanished_keep = max(1, vanished_keep)
        schema.migrate(db)
        self.subscriptions = Subscriptions(db)  # names, apart from the mailboxes
        # Reads (FETCH metadata, SEARCH, SELECT's lookup, STATUS) on a second
        # connection and thread: in WAL mode they do not wait behind the group
        # commits' fsyncs on the writer's thread, and they see every commit that
        # completed before they start. Index loads stay on the writer (one
        # thread: one consistent read against the modseqs it publishes).
        self.reads = Database(db.path)
        self.quota_bytes = quota_bytes
        self.store: Store | None = None
        self._commit: GroupCommit[Any] = GroupCommit(db)
        self._known_users: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._recent_saving: dict[int, int] = {}  # mailbox id -> recent_uid being saved
        self._keeping_keys: dict[int, asyncio.Task[bool]] = {}  # ``keep_keys`` under way
        self.bodies: BytesCache[str] = BytesCache(max_item=packs.PACK_BYTES)
        self.metas = MetaCache()
        self.live = Live(db, self.metas)  # shared indexes, watches, observers: publishing
        # called with every committed COPY/MOVE, on the loop; must not block
        # (the spam learner only queues work: ``core.spam.learn``)
        self.copy_hooks: list[Callable[[Copied], None]] = []
        # (login, name) -> row, for SELECT of a mailbox some session has open;
        # cleared by every create/delete/rename/subscribe (``_names_changed``)
        self._rows: dict[tuple[str, str], Mailbox] = {}
        self._rows_gen = 0
        # objects no message uses any more: listed in the removing transaction
        # (collect_unused), deleted after it (core.reclaim, shared with files)
        self.garbage = Reclaim(db, GARBAGE, lambda: self.store,
                               forget=lambda ref: self.bodies.drop(ref))  # the cache of now
        self.intake: Intake | None = None  # journal + filer, while the service runs

    @property
    def observers(self) -> set[Callable[[int, Change], None]]:
        """Called with every committed change of any mailbox (IMAP NOTIFY, RFC 5465)."""
        return self.live.observers

    # what the tests look at of the live side
    @property
    def _indexes(self) -> dict[int, MailboxIndex]:
        return self.live.indexes

    @property
    def _idle(self) -> OrderedDict[int, tuple[int, float]]:
        return self.live.idle

    @property
    def _idle_messages(self) -> int:
        return self.live.idle_messages

    def shutdown(self) -> None:
        """Close the read connection (``Service.close``; the writer is the service's)."""
        for task in list(self._keeping_keys.values()):
            task.cancel()
        self.reads.close()

    def attach(self, store: Store) -> None:
        """Give the mail store its dispersed store (``Service.start``)."""
        self.store = store

    async def start_intake(self, directory: Path, key: bytes, max_backlog: int) -> None:
        """Accept deliveries into a journal and file them behind (``Service.start``)."""
        intake = Intake(self, directory, key, max_backlog)
        await intake.start()
        self.intake = intake

    async def stop_intake(self) -> None:
        if self.intake is not None:
            await self.intake.stop()
            self.intake = None

    async def warm_indexes(self) -> None:
        """Just after a start: load the large mailboxes' indexes kept at the last
        stop, before their first SELECT asks (``Live.warm``)."""
        await self.live.warm()

    async def keep_indexes(self) -> None:
        """At a clean stop: keep large mailboxes' loaded indexes on disk, so the
        first SELECT after the restart reads them packed (``core.mail.indexfile``),
        and their sort keys where many are not packed yet (``keep_keys``)."""
        await self.live.keep_all()
        for task in list(self._keeping_keys.values()):
            task.cancel()
        for mailbox_id in self.live.large():
            if await self.reads.run(keptkeys.stale, mailbox_id, sortkeys.KEYS_VERSION):
                await self.keep_keys(mailbox_id)

    def _need_store(self) -> Store:
        if self.store is None:
            raise Unavailable("the message store is not started")
        return self.store

    # -- users and mailboxes

    async def ensure_user(self, login: str) -> None:
        if login in self._known_users:
            return

        def make(c: sqlite3.Connection) -> None:
            if c.execute("SELECT 1 FROM mail_users WHERE login = ?", (login,)).fetchone():
                return
            c.execute("INSERT INTO mail_users VALUES (?)", (login,))
            for name in ("INBOX", *SPECIAL):
                if not c.execute("SELECT 1 FROM mail_mailboxes WHERE login = ? AND name = ?",
                                 (login, name)).fetchone():
                    add_mailbox(c, login, name, SPECIAL.get(name))
            log.info("created mailboxes of %s", login)
        await self._commit.submit(make)
        self._known_users.add(login)

    async def mailboxes(self, login: str) -> list[Mailbox]:
        await self.ensure_user(login)
        rows = await self.reads.run(lambda c: c.execute(
            f"SELECT {MB_COLS} FROM mail_mailboxes WHERE login = ? ORDER BY name",  # noqa: S608
            (login,)).fetchall())
        return [to_mailbox(r) for r in rows]

    async def mailbox(self, login: str, name: str) -> Mailbox:
        name = check_name(name)
        await self.ensure_user(login)
        return await self.reads.run(get_mailbox, login, name)

    async def create_mailbox(self, login: str, name: str, special: str | None = None) -> Mailbox:
        name = check_name(name)
        if special is not None and special not in SPECIAL_USES:
            raise Invalid(f"unknown special use {special[:40]}", code=ErrorCode.SPECIAL_USE)
        await self.ensure_user(login)

        def make(c: sqlite3.Connection) -> Mailbox:
            if c.execute("SELECT 1 FROM mail_mailboxes WHERE login = ? AND name = ?",
                         (login, name)).fetchone():
                raise Conflict(f"mailbox {name} exists", code=ErrorCode.ALREADY_EXISTS)
            parts = name.split(DELIM)
            for i in range(1, len(parts)):  # RFC 3501 §6.3.3: create missing superiors
                parent = DELIM.join(parts[:i])
                if not c.execute("SELECT 1 FROM mail_mailboxes WHERE login = ? AND name = ?",
                                 (login, parent)).fetchone():
                    add_mailbox(c, login, parent, None)
            add_mailbox(c, login, name, special)
            return get_mailbox(c, login, name)
        mb: Mailbox = await self._commit.submit(make)
        self._names_changed()
        log.info("%s created mailbox %r", login, name)
        return mb

    async def delete_mailbox(self, login: str, name: str) -> None:
        name = check_name(name)
        if name == "INBOX":
            raise Forbidden("INBOX cannot be deleted")

        def drop(c: sqlite3.Connection) -> tuple[int, Unused]:
            mb = get_mailbox(c, login, name)
            if c.execute("SELECT 1 FROM mail_mailboxes WHERE login = ? AND name LIKE ? "
                         "ESCAPE '!' LIMIT 1",
                         (login, like_prefix(name + DELIM))).fetchone():
                # RFC 3501 §6.3.4: with inferiors, a mailbox is emptied, not removed
                raise Conflict(f"{name} has child mailboxes; delete them first",
                               code=ErrorCode.HAS_CHILDREN)
            refs = [r[0] for r in c.execute(
                "SELECT DISTINCT ref FROM mail_messages WHERE mailbox = ?", (mb.id,))]
            c.execute("DELETE FROM mail_messages WHERE mailbox = ?", (mb.id,))
            c.execute("DELETE FROM mail_sort WHERE mailbox = ?", (mb.id,))
            indexfile.drop(c, mb.id)
            keptkeys.drop(c, mb.id)
            c.execute("DELETE FROM mail_mailboxes WHERE id = ?", (mb.id,))
            return mb.id, collect_unused(c, refs)
        try:
            mailbox_id, orphans = await self._commit.submit(drop)
        finally:
            self._names_changed()
        self.live.publish(mailbox_id, Change("deleted", ()))
        self._forget(orphans.refs)
        await self.garbage.collect(orphans.objects)
        log.info("%s deleted mailbox %r", login, name)

    async def rename_mailbox(self, login: str, old: str, new: str) -> None:
        old, new = check_name(old), check_name(new)

        def move(c: sqlite3.Connection) -> tuple[int, list[int], int]:
            src = get_mailbox(c, login, old)
            if c.execute("SELECT 1 FROM mail_mailboxes WHERE login = ? AND name = ?",
                         (login, new)).fetchone():
                raise Conflict(f"mailbox {new} exists", code=ErrorCode.ALREADY_EXISTS)
            if new.startswith(old + DELIM):
                raise Invalid("cannot rename a mailbox into itself")
            parts = new.split(DELIM)
            for i in range(1, len(parts)):
                parent = DELIM.join(parts[:i])
                if not c.execute("SELECT 1 FROM mail_mailboxes WHERE login = ? AND name = ?",
                                 (login, parent)).fetchone():
                    add_mailbox(c, login, parent, None)
            if old == "INBOX":  # RFC 3501 §6.3.5: INBOX's messages move, INBOX stays
                add_mailbox(c, login, new, None)
                dst = get_mailbox(c, login, new)
                uids = [r[0] for r in c.execute(
                    "SELECT uid FROM mail_messages WHERE mailbox = ? ORDER BY uid", (src.id,))]
                c.execute("UPDATE mail_messages SET mailbox = ? WHERE mailbox = ?",
                          (dst.id, src.id))
                c.execute("UPDATE mail_sort SET mailbox = ? WHERE mailbox = ?",
                          (dst.id, src.id))
                keptkeys.drop(c, src.id)
                c.execute("UPDATE mail_mailboxes SET uidnext = ? WHERE id = ?",
                          (src.uidnext, dst.id))
                modseq = bump_modseq(c, src.id)
                c.executemany("INSERT OR REPLACE INTO mail_vanished VALUES (?, ?, ?)",
                              [(src.id, u, modseq) for u in uids])
                prune_vanished(c, src.id, self.vanished_keep)
                return src.id, uids, modseq
            ids = [src.id]
            c.execute("UPDATE mail_mailboxes SET name = ? WHERE id = ?", (new, src.id))
            for mid, name in c.execute(
                    "SELECT id, name FROM mail_mailboxes WHERE login = ? AND name LIKE ? "
                    "ESCAPE '!'", (login, like_prefix(old + DELIM))).fetchall():
                c.execute("UPDATE mail_mailboxes SET name = ? WHERE id = ?",
                          (new + name[len(old):], mid))
                ids.append(mid)
            return src.id, [], 0
        try:
            src_id, moved, modseq = await self._commit.submit(move)
        finally:
            self._names_changed()
        if moved:  # INBOX's messages left it: sessions on INBOX see them expunged
            self.live.publish(src_id, Change("expunge", tuple(moved), modseq=modseq))
        log.info("%s renamed mailbox %r to %r", login, old, new)

    async def subscribe(self, login: str, name: str, on: bool) -> None:
        name = check_name(name)

        def sub(c: sqlite3.Connection) -> None:
            get_mailbox(c, login, name)
            c.execute("UPDATE mail_mailboxes SET subscribed = ? WHERE login = ? AND name = ?",
                      (int(on), login, name))
        try:
            await self._commit.submit(sub)
        finally:
            self._names_changed()

    async def status(self, mailbox_id: int) -> Status:
        # RFC 3501 §6.3.10 RECENT: what no session has claimed yet, counted against the
        # live index (a session claims arrivals in memory) or a save still under way
        idx = self.live.indexes.get(mailbox_id)
        floor = self._recent_saving.get(mailbox_id, 0)
        if idx is not None and not idx.loading:
            floor = max(floor, idx.recent_uid)

        def count(c: sqlite3.Connection) -> Status:
            mb = c.execute("SELECT uidnext, uidvalidity, modseq, recent_uid FROM mail_mailboxes "
                           "WHERE id = ?", (mailbox_id,)).fetchone()
            if mb is None:
                raise NotFound("mailbox was deleted")
            row = c.execute(
                "SELECT count(*), coalesce(sum(size), 0), "
                "coalesce(sum(instr(flags, '\\Seen') = 0), 0), "
                "coalesce(sum(instr(flags, '\\Deleted') > 0), 0), "
                "coalesce(sum(uid > ?), 0) FROM mail_messages WHERE mailbox = ?",
                (max(mb[3], floor), mailbox_id)).fetchone()
            return Status(messages=row[0], recent=row[4], unseen=row[2], deleted=row[3],
                          size=row[1], uidnext=mb[0], uidvalidity=mb[1], highestmodseq=mb[2])
        return await self.reads.run(count)

    async def quota(self, login: str) -> tuple[int, int]:
        return await self.reads.run(used_bytes, login), self.quota_bytes

    # -- a selected mailbox

    async def open(self, login: str, name: str, *, read_only: bool,
                   max_pending: int = 10_000) -> tuple[Snapshot, Watch]:
        """A copy of a mailbox's index and a live subscription to its later changes.

        The copy comes from the shared in-memory index (``core.mail.index``),
        loaded from SQLite only when no session has the mailbox open. The copy
        and the watch are taken in one step on the event loop, so no change
        falls between them. A read-write open claims the messages that arrived
        since the last one as \\Recent (RFC 3501 §2.3.2) and records that.
        """
        name = check_name(name)
        await self.ensure_user(login)
        mb = await self._open_row(login, name)
        idx = await self.live.index(mb.id)
        watch = Watch(mb.id, claims_recent=not read_only, limit=max_pending)
        idx.watches.add(watch)
        snap = idx.view(mb, claim_recent=not read_only)
        if idx.recent_uid > idx.saved_recent_uid:
            # Recorded in the background: awaiting it here would let changes queue
            # between the copy and the SELECT's answer, and \Recent is advisory
            # (a crash before the write only shows those messages as recent again).
            idx.saved_recent_uid = idx.recent_uid
            self._recent_saving[mb.id] = idx.recent_uid
            task = asyncio.get_running_loop().create_task(
                self._save_recent(mb.id, idx.recent_uid))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return snap, watch

    async def _open_row(self, login: str, name: str) -> Mailbox:
        """The mailbox's row; from memory when a session has it open already.

        Saves SELECT a read-thread hop. Only the row's stable fields matter
        (id, name, special use, subscription): ``MailboxIndex.view`` replaces the
        counters with the live index's, and every change of the stable fields
        clears the memo; the generation check keeps a row read before such a
        change from being remembered after it.
        """
        key = (login, name)
        mb = self._rows.get(key)
        if mb is not None:
            idx = self.live.indexes.get(mb.id)
            if idx is not None and not idx.loading:
                return mb
        gen = self._rows_gen
        mb = await self.reads.run(get_mailbox, login, name)
        if gen == self._rows_gen:
            if len(self._rows) >= MAX_ROWS:
                self._rows.clear()
            self._rows[key] = mb
        return mb

    def _names_changed(self) -> None:
        self._rows.clear()
        self._rows_gen += 1

    async def _save_recent(self, mailbox_id: int, uid: int) -> None:
        try:
            await self._commit.submit(lambda c: c.execute(
                "UPDATE mail_mailboxes SET recent_uid = max(recent_uid, ?) WHERE id = ?",
                (uid, mailbox_id)))
        except Exception as exc:
            log.warning("could not record the recent messages of mailbox %d: %s",
                        mailbox_id, exc)
        finally:
            if self._recent_saving.get(mailbox_id) == uid:
                del self._recent_saving[mailbox_id]

    def close(self, watch: Watch) -> None:
        """End a subscription (``Live.close``: the index is kept a while)."""
        self.live.close(watch)

    def current(self, watch: Watch) -> Snapshot | None:
        """For a watch that overflowed: the mailbox as it is now (``Live.current``)."""
        return self.live.current(watch)

    async def meta(self, mailbox_id: int, uids: Sequence[int], *,
                   structure: bool) -> list[Meta]:
        """Cached metadata of messages (those still present), in uid order.

        While the mailbox's shared index is loaded (a session has it open: the
        FETCH and SEARCH case), the immutable parts come from ``self.metas`` and
        flags and modseq from the index, and only the messages not cached yet
        are read from SQLite; presence is the index's, which holds exactly the
        committed messages published so far.
        """
        idx = self.live.indexes.get(mailbox_id)
        if idx is None or idx.loading:
            return await self.reads.run(load_meta, mailbox_id, uids, structure)
        validity = idx.uidvalidity
        out: list[Meta] = []
        missing: list[int] = []
        get, held, flags, modseqs = self.metas.get, idx.uids, idx.flags, idx.modseqs
        i, last, ordered = -1, -1, True
        for uid in uids:
            # uids asked in order sit at consecutive positions: check the next one
            # before a binary search (a FETCH 1:200 asks for 200 in a row)
            i = i + 1 if i + 1 < len(held) and held[i + 1] == uid else idx.pos(uid)
            if i < 0:
                continue  # not (or no longer) in the mailbox
            item = get((mailbox_id, validity, uid))
            if item is None or (structure and item.structure is None):
                missing.append(uid)
                continue
            ordered, last = ordered and uid > last, uid
            out.append(Meta(uid, item.ref, item.size, item.internal_date, flags[i],
                            modseqs[i], item.header, item.structure))
        if not missing and ordered:
            return out
        found = {m.uid: m for m in out}
        if missing:
            loaded = await self.reads.run(load_meta, mailbox_id, missing, structure)
            if self.live.indexes.get(mailbox_id) is idx and idx.uidvalidity == validity:
                for m in loaded:
                    key = (mailbox_id, validity, m.uid)
                    if m.structure is not None or self.metas.get(key) is None:
                        self.metas.put(key, Fixed(m.ref, m.size, m.internal_date, m.header,
                                                  m.structure))
            for m in loaded:
                found[m.uid] = m
        return [found[u] for u in sorted(found)]

    async def sizes(self, mailbox_id: int, first: int, last: int) -> Extents:
        """Size and internal date of the messages with uids ``first``..``last``.

        Why apart from ``meta``: a client's first look at a mailbox is ``FETCH
        1:* (UID RFC822.SIZE FLAGS INTERNALDATE)``, which needs no header. Two
        columns of one range read cost ~0.3 µs a message; through ``meta`` it
        was every message's header, and 100,000 of them overran its cache.
        """
        return await self.reads.run(load_extents, mailbox_id, first, last)

    async def sort_keys(self, mailbox_id: int, uids: Sequence[int],
                        fields: Collection[str]) -> sortkeys.KeyColumns:
        """SORT and THREAD keys (``core.mail.sortkeys``) of the messages ``uids``
        (ascending) that still exist; derived from the header once per message."""
        found = await sortkeys.load(self.reads, self._commit, mailbox_id, uids, fields)
        if found.unkept >= keptkeys.REKEEP and mailbox_id not in self._keeping_keys:
            task = asyncio.create_task(self.keep_keys(mailbox_id, delay=KEEP_KEYS_DELAY))
            self._keeping_keys[mailbox_id] = task
            task.add_done_callback(lambda _: self._keeping_keys.pop(mailbox_id, None))
        return found

    async def keep_keys(self, mailbox_id: int, delay: float = 0.0) -> bool:
        """Take a packed copy of a mailbox's sort keys (``core.mail.keptkeys``) and
        store it; whether one was stored. Taken on the read connection after
        ``delay`` s (not during the session whose SORT asked: taking it reads
        every row again), written on the writer. A failure is logged: it costs
        the next SORT a read from rows, nothing else."""
        try:
            await asyncio.sleep(delay)
            packed = await self.reads.run(keptkeys.take, mailbox_id, sortkeys.KEYS_VERSION)
            return packed is not None and await self.db.run(keptkeys.write, mailbox_id, packed)
        except Exception as exc:
            log.warning("could not keep the sort keys of mailbox %d packed: %s",
                        mailbox_id, exc)
            return False

    def derived(self, mailbox_id: int, key: Hashable) -> Any:
        """A result a front end kept with the mailbox's shared index, or None."""
        idx = self.live.indexes.get(mailbox_id)
        return None if idx is None else idx.derived.get(key)

    def keep_derived(self, mailbox_id: int, key: Hashable, value: Any) -> None:
        """Keep ``value`` with the mailbox's shared index until its next change.

        ``key`` must name the view of the mailbox the value was computed from
        (a session may lag behind the index: it asks with its own view), so a
        value is only ever found by a session that sees what it was made of."""
        idx = self.live.indexes.get(mailbox_id)
        if idx is not None and not idx.loading:
            idx.keep_derived(key, value)

    _load_meta = staticmethod(load_meta)  # the tests compare with what SQLite says

    async def read(self, ref: str, start: int = 0, end: int | None = None
                   ) -> AsyncIterator[bytes]:
        """Stream bytes [start, end) of a stored message from the dispersed store."""
        obj, offset, size = packs.locate(ref)
        if offset is not None:  # a pack member: small, and its neighbours come next
            yield await self.read_bytes(ref, start, end)
            return
        end = size if end is None else min(end, size)
        if start < end:
            async for chunk in self._get(obj, start, end):
                yield chunk

    async def read_bytes(self, ref: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of a message; small messages come from (and go to) the cache.

        A pack member is cut from its pack, which is read whole and cached: a
        client fetching new mail reads the members filed together one by one."""
        data = self.bodies.get(ref)
        if data is None:
            obj, offset, size = packs.locate(ref)
            if offset is not None:
                pack = self.bodies.get(obj)
                if pack is None:
                    pack = b"".join([c async for c in self._get(obj, 0, packs.ref_size(obj))])
                    self.bodies.put(obj, pack)
                data = pack[offset:offset + size]
                if len(data) != size:
                    raise Unavailable(f"message body unavailable: {ref} is outside its pack")
            elif size > self.bodies.max_item:
                return b"".join([c async for c in self.read(ref, start, end)])
            else:
                data = b"".join([c async for c in self._get(obj, 0, size)])
                self.bodies.put(ref, data)
        return data[start:end]

    async def _get(self, obj: str, start: int, end: int) -> AsyncIterator[bytes]:
        store = self._need_store()
        if self.garbage.gone(obj):
            raise Unavailable("message body unavailable: the message was expunged")
        try:
            async for chunk in store.get(ObjectRef.parse(obj), start, end):
                yield chunk
        except Exception as exc:
            log.error("cannot read message object %s: %s", obj, exc)
            raise Unavailable(f"message body unavailable: {exc}") from exc

    # -- writes

    async def accept(self, login: str, message: bytes) -> int | None:
        """Take a delivery for ``login``'s Inbox; durable when it returns.

        With the service running, durable means journaled (``core.mail.intake``)
        and the message shows in the Inbox once filed, a moment later: the
        journal's seq is returned, which the filing's log line names. Without it
        (the CLI on a stopped twin) this is ``deliver``, filed already (None)."""
        if self.intake is not None:
            return await self.intake.accept(login, message)
        await self.deliver(login, message)
        return None

    async def settled(self) -> None:
        """Wait until every delivery accepted so far is filed (a no-op without intake)."""
        if self.intake is not None:
            await self.intake.settled()

    async def deliver(self, login: str, message: bytes | AsyncIterable[bytes] | BinaryIO, *,
                      mailbox: str = "INBOX", flags: Sequence[str] = (),
                      internal_date: float | None = None) -> int:
        """Store one message; durable when it returns; the new uid."""
        _, uid = await self.append(login, mailbox, message, flags=flags,
                                   internal_date=internal_date)
        return uid

    async def append(self, login: str, name: str,
                     message: bytes | AsyncIterable[bytes] | BinaryIO, *,
                     flags: Sequence[str] = (), internal_date: float | None = None,
                     max_size: int | None = None) -> tuple[int, int]:
        """Store one message in a mailbox; (uidvalidity, uid) once durable."""
        name = check_name(name)
        flagset = parse_flags(flags)
        await self.ensure_user(login)
        # Fail before storing bytes; INBOX always exists once the user does, so a
        # delivery skips this database round trip (the insert finds the id itself).
        mb_id = None if name == "INBOX" else (await self.mailbox(login, name)).id
        store = self._need_store()
        ref, header, structure = await self._store_message(store, message, max_size)
        size = packs.ref_size(ref)
        if self.quota_bytes:
            used, limit = await self.quota(login)
            used += self.intake.pending(login) if self.intake is not None else 0
            if used + size > limit:
                await self.garbage.delete([ref])
                raise QuotaExceeded(f"over quota ({used + size} > {limit} bytes)")
        row = Row(ref, header, structure, size,
                  time.time() if internal_date is None else internal_date, flagset)

        def insert(c: sqlite3.Connection) -> tuple[int, int, int, int]:
            target = mb_id if mb_id is not None else get_mailbox(c, login, name).id
            return (target, *insert_rows(c, target, [row]))
        target, uid, modseq, uidvalidity = await self._commit_or_delete(insert, [ref])
        self.live.announce(target, uidvalidity, uid, modseq, [row])
        log.debug("stored message %d (%d bytes) in %s/%s", uid, size, login, name)
        return uidvalidity, uid

    async def file(self, entries: Sequence[Entry]) -> None:
        """File journaled deliveries into their Inboxes (``core.mail.intake``).

        All or nothing: the rows of every entry and the journal's "filed up to"
        mark commit in ONE transaction, so a crash before it replays the whole
        batch and a crash after it replays none of it: each message once.
        Small messages are stored packed together (see ``core.mail.packs``).

        A message that cannot be described is not allowed to hold the batch:
        it is stored alone and set aside in the quarantine (``core.mail.
        quarantine``) in that same transaction, and the rest is filed."""
        store = self._need_store()
        for login in dict.fromkeys(e.login for e in entries):
            await self.ensure_user(login)
        described: list[tuple[bytes, bytes, str]] = []
        good: list[Entry] = []
        bad: list[tuple[Entry, bytes, str]] = []
        for i, e in enumerate(entries):
            data = mime.to_crlf(e.message)
            try:
                described.append(await self._describe(data))
                good.append(e)
            except Exception as exc:  # this message only: it must not hold the others
                bad.append((e, data, f"{type(exc).__name__}: {exc}"[:500]))
            if i % DESCRIBE_YIELD == DESCRIBE_YIELD - 1:
                await asyncio.sleep(0)  # a 512-message batch would hold the loop ~15 ms
        refs, objects = await self._store_packed(store, [d for d, _, _ in described])
        try:
            set_aside = [await _put(store, data) for _, data, _ in bad]  # alone, never packed
        except BaseException:
            self.garbage.collect_later(objects)
            raise
        last = entries[-1].seq
        by_login: dict[str, list[Row]] = {}
        seqs: dict[str, list[int]] = {}  # login -> journal seqs, in uid order (for the log)
        for e, ref, (data, header, structure) in zip(good, refs, described, strict=True):
            by_login.setdefault(e.login, []).append(
                Row(ref, header, structure, len(data), e.received, frozenset()))
            seqs.setdefault(e.login, []).append(e.seq)

        def insert_all(c: sqlite3.Connection) -> tuple[dict[str, tuple[int, int, int, int] | None],
                                                       list[int]]:
            placed: dict[str, tuple[int, int, int, int] | None] = {}
            for login, rows in by_login.items():
                try:
                    target = get_mailbox(c, login, "INBOX").id
                except NotFound:  # the user was removed since: nothing to file into
                    placed[login] = None
                    continue
                placed[login] = (target, *insert_rows(c, target, rows))
            ids = [quarantine.insert(c, e.login, ref, len(data), e.received, reason)
                   for (e, data, reason), ref in zip(bad, set_aside, strict=True)]
            c.execute("UPDATE mail_journal SET filed = ? WHERE filed < ?", (last, last))
            return placed, ids
        placed, ids = await self._commit_or_delete(insert_all, [*objects, *set_aside])
        for ref, (data, _, _) in zip(refs, described, strict=True):
            self.bodies.put(ref, data)  # new mail is fetched soon
        for login, where in placed.items():
            if where is None:
                log.error("%d journaled message(s) for %s dropped: their Inbox no longer "
                          "exists", len(by_login[login]), login)
            else:
                target, uid, modseq, uidvalidity = where
                self.live.announce(target, uidvalidity, uid, modseq, by_login[login])
                if log.isEnabledFor(logging.DEBUG):  # journal seq -> uid, for tracing
                    log.debug("filed journal %s for %s as uid %s", _seqs(seqs[login]),
                              login, _span(uid, len(seqs[login])))
        for qid, (e, data, reason) in zip(ids, bad, strict=True):
            log.error("message %d for %s (%d bytes) could not be filed and is set aside as "
                      "quarantine #%d (%s); see `twin mail quarantine list`", e.seq,
                      quarantine.printable(e.login), len(data), qid, quarantine.printable(reason))
        log.debug("filed %d journaled message(s) in %d object(s), up to %d", len(good),
                  len(objects), last)

    async def set_aside(self, entry: Entry, reason: str) -> int:
        """Quarantine one journaled delivery as it is, without describing it; its id.

        The intake's last resort for a message whose filing keeps failing
        alone (``core.mail.intake``): stored whole, recorded together with the
        journal's "filed up to" mark, so it is never replayed."""
        store = self._need_store()
        data = mime.to_crlf(entry.message)
        ref = await _put(store, data)

        def insert(c: sqlite3.Connection) -> int:
            qid = quarantine.insert(c, entry.login, ref, len(data), entry.received, reason[:500])
            c.execute("UPDATE mail_journal SET filed = ? WHERE filed < ?",
                      (entry.seq, entry.seq))
            return qid
        qid: int = await self._commit_or_delete(insert, [ref])
        log.error("message %d for %s (%d bytes) kept failing to file and is set aside as "
                  "quarantine #%d (%s); see `twin mail quarantine list`", entry.seq,
                  quarantine.printable(entry.login), len(data), qid,
                  quarantine.printable(reason))
        return qid

    async def quarantined(self) -> list[quarantine.Quarantined]:
        """Every delivery set aside, oldest first."""
        return await self.reads.run(quarantine.listed)

    async def retry_quarantined(self, qid: int) -> int:
        """File a quarantined delivery into its owner's Inbox now; the new uid.

        Raises what describing it raises (it stays in the quarantine then)."""
        item = await self.reads.run(quarantine.get, qid)
        data = await self.read_bytes(item.ref)
        header, structure = (await self._describe(data))[1:]
        row = Row(item.ref, header, structure, len(data), item.received, frozenset())
        await self.ensure_user(item.login)

        def insert(c: sqlite3.Connection) -> tuple[int, int, int, int]:
            quarantine.get(c, qid)  # NotFound if another retry or rm took it meanwhile
            target = get_mailbox(c, item.login, "INBOX").id
            placed = (target, *insert_rows(c, target, [row]))
            quarantine.delete(c, qid)
            return placed
        placed: tuple[int, int, int, int] = await self._commit.submit(insert)
        target, uid, modseq, uidvalidity = placed
        self.live.announce(target, uidvalidity, uid, modseq, [row])
        log.info("quarantine #%d filed into the Inbox of %s as uid %d", qid,
                 quarantine.printable(item.login), uid)
        return uid

    async def drop_quarantined(self, qid: int) -> None:
        """Delete a quarantined delivery for good."""
        def drop(c: sqlite3.Connection) -> quarantine.Quarantined:
            item = quarantine.get(c, qid)
            quarantine.delete(c, qid)
            return item
        item = await self._commit.submit(drop)
        await self.garbage.delete([item.ref])
        log.info("quarantine #%d (for %s) deleted", qid, quarantine.printable(item.login))

    async def _describe(self, data: bytes) -> tuple[bytes, bytes, str]:
        """(data, header, structure); small messages parsed on the loop (~35 us for 4 KiB)."""
        header, structure = (_describe(data) if len(data) <= DESCRIBE_INLINE
                             else await asyncio.to_thread(_describe, data))
        return data, header, structure

    async def _prepare(self, message: bytes, max_size: int | None = None
                       ) -> tuple[bytes, bytes, str]:
        """(CRLF-normalised bytes, header, structure) of one message."""
        data = mime.to_crlf(message)
        if max_size is not None and len(data) > max_size:
            raise Invalid(f"message larger than {max_size} bytes", code=ErrorCode.TOO_LARGE)
        return await self._describe(data)

    async def _store_packed(self, store: Store, messages: list[bytes]
                            ) -> tuple[list[str], list[str]]:
        """Store ``messages``, small ones packed; (ref of each message, objects written).

        Which go together, and their refs: ``core.mail.packs``."""
        sizes = [len(data) for data in messages]
        groups, alone = packs.plan(sizes)
        blobs = [b"".join(messages[i] for i in pack) for pack in groups]
        blobs += [messages[i] for i in alone]
        outcomes = await asyncio.gather(*(_put(store, blob) for blob in blobs),
                                        return_exceptions=True)
        objects = [str(o) for o in outcomes if not isinstance(o, BaseException)]
        if len(objects) < len(outcomes):
            self.garbage.collect_later(objects)
            raise next(o for o in outcomes if isinstance(o, BaseException))
        return packs.refs(sizes, groups, alone, objects), objects

    async def journal_filed(self) -> int:
        """The journal sequence number up to which every record is filed."""
        row = await self.db.run(
            lambda c: c.execute("SELECT filed FROM mail_journal").fetchone())
        return int(row[0])

    async def _store_message(self, store: Store, message: bytes | AsyncIterable[bytes] | BinaryIO,
                             max_size: int | None) -> tuple[str, bytes, str]:
        """Write the bytes (CRLF-normalised) and parse them; (ref, header, structure)."""
        if isinstance(message, bytes | bytearray | memoryview):
            data, header, structure = await self._prepare(bytes(message), max_size)
            ref = await _put(store, data)
            self.bodies.put(ref, data)
            return ref, header, structure
        source: AsyncIterable[bytes] = (
            message if isinstance(message, AsyncIterable) else _file_chunks(message))
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
        try:
            total = 0

            async def tee() -> AsyncIterator[bytes]:
                nonlocal total
                async for chunk in mime.crlf_normalise(source):
                    total += len(chunk)
                    if max_size is not None and total > max_size:
                        raise Invalid(f"message larger than {max_size} bytes",
                                      code=ErrorCode.TOO_LARGE)
                    if spool._rolled:  # type: ignore[attr-defined]
                        await asyncio.to_thread(spool.write, chunk)
                    else:
                        spool.write(chunk)
                    yield chunk
            ref = await _put(store, tee())
            if not spool._rolled and total <= self.bodies.max_item:  # type: ignore[attr-defined]
                self.bodies.put(ref, spool._file.getvalue())  # type: ignore[attr-defined]
            header, structure = await asyncio.to_thread(_describe_file, spool)
            return ref, header, structure
        finally:
            spool.close()

    async def set_flags(self, mailbox_id: int, uids: Sequence[int], op: str,
                        flags: Iterable[str], unchanged_since: int | None = None
                        ) -> tuple[list[Flagged], list[int]]:
        """STORE: op is ``+``, ``-`` or ``=``; (changed (uid, flags, modseq), failed uids).

        ``unchanged_since`` is CONDSTORE's UNCHANGEDSINCE (RFC 7162 §3.1.3):
        messages modified after it are not touched and come back as failed.
        """
        new = parse_flags(flags)

        def apply(c: sqlite3.Connection) -> tuple[list[Flagged], list[int]]:
            changed: list[Flagged] = []
            failed: list[int] = []
            modseq = 0
            updates = []
            for chunk in chunks(sorted(uids), 500):
                q = (f"SELECT uid, flags, modseq FROM mail_messages WHERE mailbox = ? "  # noqa: S608
                     f"AND uid IN ({','.join('?' * len(chunk))})")
                for uid, text, mseq in c.execute(q, (mailbox_id, *chunk)).fetchall():
                    if unchanged_since is not None and mseq > unchanged_since:
                        failed.append(uid)
                        continue
                    old = flags_set(text)
                    now = old | new if op == "+" else old - new if op == "-" else new
                    if now == old and unchanged_since is None:
                        continue
                    if not modseq:
                        modseq = bump_modseq(c, mailbox_id)
                    updates.append((flags_text(now), modseq, mailbox_id, uid))
                    changed.append(Flagged(uid, now, modseq))
            c.executemany("UPDATE mail_messages SET flags = ?, modseq = ? "
                          "WHERE mailbox = ? AND uid = ?", updates)
            return changed, failed
        changed, failed = await self._commit.submit(apply)
        for uid, now, modseq in changed:
            self.live.publish(mailbox_id, Change("flags", (uid,), now, modseq))
        return changed, failed

    async def expunge(self, mailbox_id: int, uids: Sequence[int] | None = None) -> list[int]:
        """Remove messages flagged \\Deleted (only those in ``uids`` if given)."""
        def drop(c: sqlite3.Connection) -> Removed:
            rows = c.execute("SELECT uid, ref FROM mail_messages WHERE mailbox = ? AND "
                             "instr(flags, '\\Deleted') > 0 ORDER BY uid",
                             (mailbox_id,)).fetchall()
            if uids is not None:
                wanted = set(uids)
                rows = [r for r in rows if r[0] in wanted]
            if not rows:
                return Removed([], Unused([], []), 0)
            return remove_messages(c, mailbox_id, rows, self.vanished_keep)
        gone, orphans, modseq = await self._commit.submit(drop)
        if gone:
            self.live.publish(mailbox_id, Change("expunge", tuple(gone), modseq=modseq))
        self._forget(orphans.refs)
        self.garbage.collect_later(orphans.objects)
        return gone  # type: ignore[no-any-return]

    async def copy(self, mailbox_id: int, uids: Sequence[int], login: str, dest: str, *,
                   move: bool = False) -> Copies:
        """COPY/MOVE: (destination uidvalidity, source uids, new uids), all or nothing.

        A copy shares the stored bytes but counts against ``mail.quota`` like
        any message (``quota`` sums the rows, and that is what GETQUOTA shows),
        so a COPY that would go over it raises ``QuotaExceeded`` (RFC 9208
        section 4.3: NO [OVERQUOTA]); the check and the insert are one
        transaction, so concurrent copies cannot overshoot. A MOVE changes
        nothing of the user's usage and is not checked.
        """
        dest = check_name(dest)
        limit = 0 if move else self.quota_bytes
        pending = self.intake.pending(login) if limit and self.intake is not None else 0
        hooked = bool(self.copy_hooks)
        source_special: list[str | None] = []  # [source's, destination's] special use
        refs: list[str] = []

        def run(c: sqlite3.Connection) -> _CopyRun:
            dst = get_mailbox(c, login, dest)
            rows: list[tuple[int, str, int, float, str]] = []  # uid, ref, size, date, flags
            for chunk in chunks(sorted(uids), 500):
                q = (f"SELECT uid, ref, size, internal_date, flags FROM mail_messages "  # noqa: S608
                     f"WHERE mailbox = ? AND uid IN ({','.join('?' * len(chunk))}) ORDER BY uid")
                rows += c.execute(q, (mailbox_id, *chunk)).fetchall()
            if not rows:
                return _CopyRun(dst.id, dst.uidvalidity, [], [], 0, Unused([], []), 0, [])
            if hooked:
                found = c.execute("SELECT special FROM mail_mailboxes WHERE id = ?",
                                  (mailbox_id,)).fetchone()
                source_special[:] = [found[0] if found else None, dst.special]
                refs[:] = [r[1] for r in rows]
            if limit:
                used = pending + used_bytes(c, login)
                added = sum(int(r[2]) for r in rows)
                if used + added > limit:
                    raise QuotaExceeded(f"over quota ({used + added} > {limit} bytes)")
            first = dst.uidnext
            c.execute("UPDATE mail_mailboxes SET uidnext = uidnext + ? WHERE id = ?",
                      (len(rows), dst.id))
            modseq = bump_modseq(c, dst.id)
            new = list(range(first, first + len(rows)))
            c.executemany("INSERT INTO mail_messages VALUES (?, ?, ?, ?, ?, ?, ?)",
                          [(dst.id, u, r[1], r[2], r[3], r[4], modseq)
                           for u, r in zip(new, rows, strict=True)])
            orphans = Unused([], [])
            src_modseq = 0
            if move:
                _, orphans, src_modseq = remove_messages(
                    c, mailbox_id, [(r[0], r[1]) for r in rows], self.vanished_keep)
            return _CopyRun(dst.id, dst.uidvalidity, [r[0] for r in rows], new, modseq, orphans,
                            src_modseq, [r[4] for r in rows])
        (dst_id, validity, src, new, modseq, orphans, src_modseq,
         texts) = await self._commit.submit(run)
        for change in exists_changes(new, [flags_set(t) for t in texts], modseq):
            self.live.publish(dst_id, change)
        if move and src:
            self.live.publish(mailbox_id, Change("expunge", tuple(src), modseq=src_modseq))
        self._forget(orphans.refs)
        self.garbage.collect_later(orphans.objects)
        if hooked and refs:
            copied = Copied(login, source_special[0], source_special[1], tuple(refs), move)
            for hook in list(self.copy_hooks):
                try:
                    hook(copied)
                except Exception:  # a hook's bug never fails the client's command
                    log.exception("a copy hook failed")
        return Copies(validity, src, new)

    async def vanished(self, mailbox_id: int, since_modseq: int) -> list[int]:
        """Uids expunged after a modseq (QRESYNC, RFC 7162 §3.2.5.1).

        Exact while ``since_modseq`` is at or above the mailbox's ``vanished_floor``
        (the expunge records kept, see ``prune_vanished``). Below it the records
        that would answer are gone, so the answer is every uid under UIDNEXT that
        no longer exists: a superset (it also names uids the client saw vanish
        before ``since_modseq``), which RFC 7162 §3.2.5.2 permits and clients
        handle by ignoring uids they do not have, and never short of one.
        """
        def run(c: sqlite3.Connection) -> list[int]:
            row = c.execute("SELECT vanished_floor, uidnext FROM mail_mailboxes WHERE id = ?",
                            (mailbox_id,)).fetchone()
            if row is None:
                return []
            floor, uidnext = int(row[0]), int(row[1])
            if since_modseq >= floor:
                return [r[0] for r in c.execute(
                    "SELECT uid FROM mail_vanished WHERE mailbox = ? AND modseq > ? "
                    "ORDER BY uid", (mailbox_id, since_modseq))]
            gone: list[int] = []
            expected = 1
            for (uid,) in c.execute("SELECT uid FROM mail_messages WHERE mailbox = ? "
                                    "ORDER BY uid", (mailbox_id,)):
                gone.extend(range(expected, uid))
                expected = uid + 1
            gone.extend(range(expected, uidnext))
            return gone
        return await self.reads.run(run)

    async def bulk_insert(self, login: str, name: str,
                          items: Sequence[tuple[str, bytes, str, int, float, Sequence[str]]]
                          ) -> None:
        """Insert already stored messages (ref, header, structure, size, date, flags) at once.

        For imports and benchmarks: one transaction for the whole batch.
        """
        mb = await self.mailbox(login, name)
        if not items:
            return
        rows = [Row(i[0], i[1], i[2], i[3], i[4], parse_flags(i[5])) for i in items]
        first, modseq, uidvalidity = await self._commit.submit(
            lambda c: insert_rows(c, mb.id, rows))
        self.live.announce(mb.id, uidvalidity, first, modseq, rows)

    async def _commit_or_delete(self, op: Callable[[sqlite3.Connection], T],
                                objects: Sequence[str]) -> T:
        """Commit ``op``, whose rows reference the freshly stored ``objects``; if it
        fails, delete them again (nothing else references them).

        Not when the caller is cancelled: the commit is shielded and runs on, so
        its rows may still land and reference them. Keeping them leaves at worst
        an orphan, which storage ``verify`` removes; deleting could lose mail
        (the journal would call it filed)."""
        try:
            result: T = await self._commit.submit(op)
        except asyncio.CancelledError:
            raise
        except BaseException:
            await self.garbage.delete(objects)
            raise
        return result

    def _forget(self, refs: Sequence[str]) -> None:
        """Drop the cached bodies of messages that are gone. A packed message is cached
        under its own ref (``obj@off:len``), not its pack's: dropping only the objects
        deleted kept expunged messages' bytes in memory until the 16 MiB cache
        evicted them (in a soak's tracemalloc, most of what alice's heap gained)."""
        for ref in refs:
            self.bodies.drop(ref)


def _seqs(seqs: Sequence[int]) -> str:
    """Journal seqs as ``#5,#9`` (the first 20)."""
    return ",".join(f"#{n}" for n in seqs[:20]) + (f",+{len(seqs) - 20}" if len(seqs) > 20
                                                  else "")


def _span(first: int, count: int) -> str:
    return str(first) if count == 1 else f"{first}:{first + count - 1}"


async def _put(store: Store, data: bytes | AsyncIterable[bytes]) -> str:
    """``store.put`` with its failures in core's vocabulary: a backend that is
    down or slow is ``Unavailable`` (IMAP ``NO [UNAVAILABLE]``, SMTP 451: try
    again), never an internal error; what the source raises (``toobig``)
    passes through as it is. Not ``core.foreign.storage_error``: whatever stops
    a write (a refusal too) is one the sender should try again later."""
    try:
        return str(await store.put(data))
    except StorageError as exc:
        raise Unavailable(f"the message store cannot write now: {exc}") from exc


async def _file_chunks(f: BinaryIO, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(f.read, size):
        yield chunk


def _describe(buf: Any) -> tuple[bytes, str]:
    part = mime.parse(buf)
    return bytes(buf[0:part["b"]]), json.dumps(part, separators=(",", ":"))


def _describe_file(spool: Any) -> tuple[bytes, str]:
    spool.flush()
    if not spool._rolled:
        return _describe(spool._file.getvalue())
    f = spool._file
    size = f.seek(0, 2)
    if size == 0:
        return _describe(b"")
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        return _describe(m)
