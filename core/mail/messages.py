"""Message rows on a connection (inside a ``GroupCommit`` transaction or a read).

Loading a mailbox's uid/flags/modseq columns for its shared index
(``load_index``), inserting stored messages (``insert_rows``), removing them
with their QRESYNC expunge records (``remove_messages``, ``prune_vanished``)
and finding what removal left unused (``collect_unused``: message refs and the
objects, packs included, no message uses any more; ``core.mail.packs``).
Reads for FETCH and QUOTA: ``load_meta``, ``load_extents``, ``used_bytes``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from core import reclaim
from core.db import columns
from core.errors import NotFound
from core.mail import indexfile, packs, sortkeys
from core.mail.index import Loaded
from core.mail.mailboxes import bump_modseq
from core.mail.model import Extents, Meta, Row, Unused, flags_set, flags_text
from core.mail.schema import GARBAGE

VANISHED_KEEP = 1000  # expunge records kept per mailbox (the mail.vanished_keep default)


def load_index(c: sqlite3.Connection, mailbox_id: int) -> Loaded:
    """A mailbox's row and its uid/flags/modseq columns (one thread: one consistent read):
    from the packed copy kept on disk when it is exact for the row (``core.mail.indexfile``)."""
    row = c.execute("SELECT uidvalidity, uidnext, modseq, recent_uid FROM mail_mailboxes "
                    "WHERE id = ?", (mailbox_id,)).fetchone()
    if row is None:
        raise NotFound("mailbox was deleted")
    kept = indexfile.load(c, mailbox_id, row[0], row[1], row[2])
    if kept is not None:
        return Loaded(row[0], row[1], row[2], row[3], kept.uids, kept.flags, kept.modseqs,
                      from_disk=True, flag_sets=kept.flag_sets)
    rows = c.execute("SELECT uid, flags, modseq FROM mail_messages WHERE mailbox = ? "
                     "ORDER BY uid", (mailbox_id,)).fetchall()
    uids: list[int] = []
    texts: list[str] = []
    modseqs: list[int] = []
    if rows:  # column lists at C speed; one frozenset per distinct flag text
        uids, texts, modseqs = columns(rows, 3)
    distinct = {t: flags_set(t) for t in set(texts)}
    return Loaded(row[0], row[1], row[2], row[3], uids, list(map(distinct.__getitem__, texts)),
                  modseqs)


def insert_rows(c: sqlite3.Connection, mailbox_id: int, rows: Sequence[Row]
                 ) -> Inserted:
    """Add stored messages to a mailbox; (first uid, first modseq, uidvalidity).

    Row k gets uid and modseq first + k. One UPDATE reserves them all and
    three executemany calls insert them, their bodies and their SORT/THREAD
    keys (``sortkeys.keep_filed``), whatever the count: a filing batch costs
    four statements, not four per message. NotFound: the mailbox was deleted."""
    n = len(rows)
    row = c.execute("UPDATE mail_mailboxes SET uidnext = uidnext + ?, modseq = modseq + ? "
                    "WHERE id = ? RETURNING uidnext - ?, modseq - ? + 1, uidvalidity",
                    (n, n, mailbox_id, n, n)).fetchone()
    if row is None:
        raise NotFound("mailbox was deleted")
    uid, modseq, uidvalidity = (int(v) for v in row)
    c.executemany("INSERT OR IGNORE INTO mail_bodies VALUES (?, ?, ?)",
                  [(ref, header, structure) for ref, header, structure, *_ in rows])
    c.executemany("INSERT INTO mail_messages VALUES (?, ?, ?, ?, ?, ?, ?)",
                  [(mailbox_id, uid + k, ref, size, date, flags_text(flags), modseq + k)
                   for k, (ref, _, _, size, date, flags) in enumerate(rows)])
    sortkeys.keep_filed(c, mailbox_id, uid, [r.header for r in rows])
    return Inserted(uid, modseq, uidvalidity)


class Inserted(NamedTuple):
    """Where ``insert_rows`` put its rows: row k has uid ``uid + k`` and modseq
    ``modseq + k``, in the mailbox of this ``uidvalidity``."""

    uid: int
    modseq: int
    uidvalidity: int


class Removed(NamedTuple):
    """What ``remove_messages`` did: the uids gone, what no message uses any more,
    and the modseq of the change."""

    uids: list[int]
    unused: Unused
    modseq: int


def remove_messages(c: sqlite3.Connection, mailbox_id: int, rows: Sequence[tuple[int, str]],
                    keep: int = VANISHED_KEEP) -> Removed:
    """Delete messages (uid, ref); what that did."""
    modseq = bump_modseq(c, mailbox_id)
    c.executemany("DELETE FROM mail_messages WHERE mailbox = ? AND uid = ?",
                  [(mailbox_id, r[0]) for r in rows])
    c.executemany("DELETE FROM mail_sort WHERE mailbox = ? AND uid = ?",
                  [(mailbox_id, r[0]) for r in rows])
    c.executemany("INSERT OR REPLACE INTO mail_vanished VALUES (?, ?, ?)",
                  [(mailbox_id, r[0], modseq) for r in rows])
    prune_vanished(c, mailbox_id, keep)
    return Removed([r[0] for r in rows], collect_unused(c, list({r[1] for r in rows})), modseq)


def prune_vanished(c: sqlite3.Connection, mailbox_id: int, keep: int) -> None:
    """Keep a mailbox's newest ``keep`` expunge records, dropping whole modseqs.

    Why: one row per expunged message forever grew twin.db without bound (issue
    23). As Dovecot does, the records go back only so far; ``vanished_floor``
    says how far (every record at or below it is gone, every one above is kept),
    and ``MailStore.vanished`` answers older questions from the uid set. The
    look-up walks ``keep`` entries of an index: microseconds per expunge.
    """
    row = c.execute("SELECT modseq FROM mail_vanished WHERE mailbox = ? "
                    "ORDER BY modseq DESC LIMIT 1 OFFSET ?", (mailbox_id, keep)).fetchone()
    if row is None:
        return
    c.execute("DELETE FROM mail_vanished WHERE mailbox = ? AND modseq <= ?", (mailbox_id, row[0]))
    c.execute("UPDATE mail_mailboxes SET vanished_floor = max(vanished_floor, ?) WHERE id = ?",
              (row[0], mailbox_id))


def collect_unused(c: sqlite3.Connection, refs: list[str]) -> Unused:
    """Forget the bodies of ``refs`` no message uses any more; what is now unused.

    A pack (``core.mail.packs``) is unused once no message uses any of its members.
    Unused objects are listed as garbage in this transaction (``core.reclaim``)."""
    unused = unused_refs(c, refs)
    objects: dict[str, None] = {}
    for ref in unused:
        obj, offset, _ = packs.locate(ref)
        if offset is None or not packs.in_use(c, obj):
            objects[obj] = None
    reclaim.record(c, GARBAGE, objects)
    return Unused(unused, list(objects))


def unused_refs(c: sqlite3.Connection, refs: list[str]) -> list[str]:
    """Of these refs, those no message uses any more (their mail_bodies rows go too)."""
    out = [ref for ref in refs
           if not c.execute("SELECT 1 FROM mail_messages WHERE ref = ? LIMIT 1",
                            (ref,)).fetchone()]
    c.executemany("DELETE FROM mail_bodies WHERE ref = ?", [(r,) for r in out])
    return out


def chunks(items: Sequence[int], n: int) -> Iterable[Sequence[int]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def used_bytes(c: sqlite3.Connection, login: str) -> int:
    """What a user's messages take, as ``mail.quota`` counts it (a copy counts again)."""
    return int(c.execute("SELECT coalesce(sum(m.size), 0) FROM mail_messages m "
                         "JOIN mail_mailboxes b ON m.mailbox = b.id WHERE b.login = ?",
                         (login,)).fetchone()[0])


def load_extents(c: sqlite3.Connection, mailbox_id: int, first: int, last: int) -> Extents:
    """Size and internal date of the messages with uids ``first``..``last``, by column."""
    rows = c.execute("SELECT uid, size, internal_date FROM mail_messages "
                     "WHERE mailbox = ? AND uid BETWEEN ? AND ? ORDER BY uid",
                     (mailbox_id, first, last)).fetchall()
    if not rows:
        return Extents([], [], [])
    uids, sizes, dates = columns(rows, 3)
    return Extents(uids, sizes, dates)


def load_meta(c: sqlite3.Connection, mailbox_id: int, uids: Sequence[int],
              structure: bool) -> list[Meta]:
    """The metadata rows of messages, in uid order (on the read thread)."""
    out: list[Meta] = []
    cols = ("m.uid, m.ref, m.size, m.internal_date, m.flags, m.modseq, b.header"
            + (", b.structure" if structure else ""))
    for chunk in chunks(sorted(uids), 500):
        q = (f"SELECT {cols} FROM mail_messages m JOIN mail_bodies b ON b.ref = m.ref "  # noqa: S608
             f"WHERE m.mailbox = ? AND m.uid IN ({','.join('?' * len(chunk))}) "
             "ORDER BY m.uid")
        for r in c.execute(q, (mailbox_id, *chunk)):
            out.append(Meta(r[0], r[1], r[2], r[3], flags_set(r[4]), r[5], r[6],
                            json.loads(r[7]) if structure else None))
    return out
