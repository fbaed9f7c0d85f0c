"""A large mailbox's index kept on disk between runs, as three packed columns.

Why: the first session after a restart loads a mailbox's uid/flags/modseq
columns (``messages.load_index``). For 100,000 messages that is ~0.15-0.3 s,
almost all of it SQLite stepping rows and Python building a tuple per row;
Dovecot answers the same SELECT from its index file in milliseconds. Packed
columns (``array`` bytes: uids and modseqs, and per message the number of its
distinct flag set) are read back as three values and unpacked at C speed.

When it may be used: a kept copy names the mailbox's uidvalidity, uidnext and
highest modseq it was taken at. Every change to a mailbox's messages moves at
least one of them (an insert moves uidnext and modseq, a flag change and an
expunge move modseq, re-creating a mailbox gets a new uidvalidity), so a
copy whose three values equal the mailbox row's is the mailbox as it is,
and any other copy is ignored (the rows are loaded as before). A copy is
written only after the writer checked it against the rows themselves
(count, last uid, sum of modseqs), so an index that had somehow drifted from
the database is not made to outlive the process.

When it is written (``MailStore.save_indexes``, ``Live.index``): for mailboxes
of at least ``MIN_MESSAGES``, at a clean stop, and after a load that had to
read the rows, so a crash later costs only one slow load.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from array import array
from dataclasses import dataclass

from core.db import transaction
from core.mail.model import flags_set, flags_text

MIN_MESSAGES = 5000  # smaller mailboxes load from their rows in a few milliseconds
_INT = "q"  # uids and modseqs: 64-bit, little-endian on disk
_FLAG_ID = "H"  # the number of a message's distinct flag set
MAX_FLAG_SETS = 1 << 16


@dataclass
class Columns:
    """A mailbox's index columns and the mailbox state they are exact for."""

    uidvalidity: int
    uidnext: int
    modseq: int
    uids: list[int]
    flags: list[frozenset[str]]
    modseqs: list[int]


@dataclass
class Packed:
    """``Columns`` as stored (packed and written on the writer)."""

    uidvalidity: int
    uidnext: int
    modseq: int
    count: int
    last_uid: int
    modseq_sum: int
    uids: bytes
    modseqs: bytes
    flag_ids: bytes
    flag_texts: str


def _pack(kind: str, values: list[int]) -> bytes:
    packed = array(kind, values)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def _unpack(kind: str, data: bytes) -> array[int]:
    values = array(kind)
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return values


def pack(columns: Columns) -> Packed | None:
    """The columns packed; None if a mailbox has too many distinct flag sets."""
    numbers: dict[frozenset[str], int] = {}
    ids = [numbers.setdefault(f, len(numbers)) for f in columns.flags]
    if len(numbers) > MAX_FLAG_SETS:
        return None
    return Packed(columns.uidvalidity, columns.uidnext, columns.modseq, len(columns.uids),
                  columns.uids[-1] if columns.uids else 0, sum(columns.modseqs),
                  _pack(_INT, columns.uids), _pack(_INT, columns.modseqs),
                  _pack(_FLAG_ID, ids), json.dumps([flags_text(f) for f in numbers]))


def keep(c: sqlite3.Connection, mailbox_id: int, columns: Columns) -> bool:
    """``pack`` and ``save``, on the writer's connection; False if not kept."""
    packed = pack(columns)
    return packed is not None and save(c, mailbox_id, packed)


def save(c: sqlite3.Connection, mailbox_id: int, packed: Packed) -> bool:
    """Keep a copy if it is the mailbox as its rows are now; whether it was.

    Runs on the writer's connection, in one transaction: the check and the
    write see the same state."""
    with transaction(c):
        row = c.execute("SELECT uidvalidity, uidnext, modseq FROM mail_mailboxes WHERE id = ?",
                        (mailbox_id,)).fetchone()
        found = c.execute("SELECT count(*), coalesce(max(uid), 0), coalesce(sum(modseq), 0) "
                          "FROM mail_messages WHERE mailbox = ?", (mailbox_id,)).fetchone()
        exact = row is not None and tuple(row) == (
            packed.uidvalidity, packed.uidnext, packed.modseq) and tuple(found) == (
            packed.count, packed.last_uid, packed.modseq_sum)
        if exact:
            c.execute("INSERT OR REPLACE INTO mail_index_kept VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                      (mailbox_id, packed.uidvalidity, packed.uidnext, packed.modseq,
                       packed.uids, packed.modseqs, packed.flag_ids, packed.flag_texts))
        else:
            drop(c, mailbox_id)
    return exact


def load(c: sqlite3.Connection, mailbox_id: int, uidvalidity: int, uidnext: int,
         modseq: int) -> Columns | None:
    """The kept copy if it is exact for this mailbox state, else None."""
    row = c.execute("SELECT uids, modseqs, flag_ids, flag_texts FROM mail_index_kept "
                    "WHERE mailbox = ? AND uidvalidity = ? AND uidnext = ? AND modseq = ?",
                    (mailbox_id, uidvalidity, uidnext, modseq)).fetchone()
    if row is None:
        return None
    try:
        sets = [flags_set(t) for t in json.loads(row[3])]
        uids = _unpack(_INT, row[0]).tolist()
        modseqs = _unpack(_INT, row[1]).tolist()
        flags = list(map(sets.__getitem__, _unpack(_FLAG_ID, row[2])))
    except (ValueError, IndexError, TypeError, AttributeError):  # not what ``pack`` wrote
        return None
    if not len(uids) == len(modseqs) == len(flags):
        return None
    return Columns(uidvalidity, uidnext, modseq, uids, flags, modseqs)


def drop(c: sqlite3.Connection, mailbox_id: int) -> None:
    c.execute("DELETE FROM mail_index_kept WHERE mailbox = ?", (mailbox_id,))
