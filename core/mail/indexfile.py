"""A large mailbox's index kept on disk between runs, as three packed columns.

Why: the first session after a restart loads a mailbox's uid/flags/modseq
columns (``messages.load_index``). For 100,000 messages that is ~0.15-0.3 s,
almost all of it SQLite stepping rows and Python building a tuple per row;
Dovecot answers the same SELECT from its index file in milliseconds. Packed
columns (uids, modseqs, and per message the number of its distinct flag set)
are read back as three values and unpacked at C speed.

How a column is packed (``_pack_column``): as runs, compressed, where they
are few, else as array bytes. Why: a large mailbox is mostly runs
(uids one after another, the modseqs of one filing batch, long stretches of
read mail with one flag set). 100,000 messages raw were 1.8 MB that SQLite
reads as ~450 overflow pages (9-53 ms of a cold SELECT waiting on the disk),
and building their 300,000 list items one by one from arrays took 13-17 ms
more; as runs they are a few KB, and a list is built per run
(``list += range(...)``, ``[flags] * count``), which is C speed. A column of
many short runs (uids after scattered expunges) is stored as its array.

When it may be used: a kept copy names the mailbox's uidvalidity, uidnext and
highest modseq it was taken at. Every change to a mailbox's messages moves at
least one of them (an insert moves uidnext and modseq, a flag change and an
expunge move modseq, re-creating a mailbox gets a new uidvalidity), so a
copy whose three values equal the mailbox row's is the mailbox as it is,
and any other copy is ignored (the rows are loaded as before). A copy is
written only after the writer checked it against the rows themselves
(count, last uid, sum of modseqs), so an index that had somehow drifted from
the database is not made to outlive the process.

When it is written (``MailStore.keep_indexes``, ``Live.index``): for mailboxes
of at least ``MIN_MESSAGES``, at a clean stop, and after a load that had to
read the rows, so a crash later costs only one slow load. When it is read:
by the first ``open`` of its mailbox, or before that by ``Live.warm`` just
after a start.
"""

from __future__ import annotations

import json
import operator
import sqlite3
import struct
import zlib
from array import array
from dataclasses import dataclass
from itertools import compress, count
from typing import TypeAlias

from core.db import transaction
from core.mail import packing
from core.mail.model import flags_set, flags_text

MIN_MESSAGES = 5000  # smaller mailboxes load from their rows in a few milliseconds
_INT = "q"  # uids and modseqs: 64-bit, little-endian on disk
_FLAG_ID = "H"  # the number of a message's distinct flag set
MAX_FLAG_SETS = 1 << 16
_RUNS, _ARRAY = b"R", b"A"  # a packed column's first byte: how the rest is stored
_RUN_COUNT = struct.Struct("<I")
RUNS_PAY = 4  # a column is stored as runs if it has at most 1/RUNS_PAY as many as values


@dataclass
class Columns:
    """A mailbox's index columns and the mailbox state they are exact for."""

    uidvalidity: int
    uidnext: int
    modseq: int
    uids: list[int]
    flags: list[frozenset[str]]
    modseqs: list[int]
    flag_sets: list[frozenset[str]] | None = None  # the distinct sets in ``flags``, if known


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
    return packing.to_bytes(array(kind, values))


def _unpack(kind: str, data: bytes) -> array[int]:
    return packing.from_bytes(kind, data)


def _runs(values: list[int], step: int, most: int) -> tuple[list[int], list[int]] | None:
    """``values`` as runs: each run's first value and length; within a run every
    value is the one before plus ``step`` (1: uids and modseqs, 0: flag set
    numbers). None if there are more than ``most`` runs. Where the runs break is
    found by ``map`` and ``compress`` at C speed (a loop in Python took 20 ms
    per 100,000 values)."""
    if not values:
        return [], []
    breaks = list(compress(count(1), map(step.__ne__, map(operator.sub, values[1:], values))))
    if len(breaks) >= most:
        return None
    starts = [0, *breaks]
    return [values[i] for i in starts], list(map(operator.sub, [*breaks, len(values)], starts))


def _pack_column(kind: str, values: list[int], step: int) -> bytes:
    """A column as compressed runs if they are few, else as array bytes (module doc)."""
    runs = _runs(values, step, len(values) // RUNS_PAY)
    if runs is None:
        return _ARRAY + _pack(kind, values)  # many short runs: compressing gains little
    firsts, lengths = runs
    return _RUNS + zlib.compress(_RUN_COUNT.pack(len(firsts)) + _pack(kind, firsts)
                                 + _pack(_INT, lengths), 1)


Column: TypeAlias = "tuple[list[int], list[int]] | array[int]"  # runs (firsts, lengths), or all


def _unpack_column(kind: str, data: bytes) -> Column:
    """What ``_pack_column`` wrote. Raises ValueError (or zlib.error, struct.error)
    on anything else."""
    if data[:1] == _RUNS:
        body = zlib.decompress(data[1:])
        (runs,) = _RUN_COUNT.unpack_from(body)
        split = _RUN_COUNT.size + runs * array(kind).itemsize
        firsts, lengths = _unpack(kind, body[_RUN_COUNT.size:split]), _unpack(_INT, body[split:])
        if not len(firsts) == len(lengths) == runs or min(lengths, default=1) < 1:
            raise ValueError("runs do not match their count")
        return firsts.tolist(), lengths.tolist()
    if data[:1] == _ARRAY:
        return _unpack(kind, data[1:])
    raise ValueError("not a packed column")


def _length(column: Column) -> int:
    return len(column) if isinstance(column, array) else sum(column[1])


def _numbers(column: Column) -> list[int]:
    """A uid or modseq column (runs of values one apart) as a list."""
    if isinstance(column, array):
        return column.tolist()
    out: list[int] = []
    for first, length in zip(*column, strict=True):
        out += range(first, first + length)
    return out


def _flag_sets(column: Column, sets: list[frozenset[str]]) -> list[frozenset[str]]:
    """The flag set column (runs of one set number) as a list of the sets themselves."""
    if isinstance(column, array):
        return list(map(sets.__getitem__, column))
    out: list[frozenset[str]] = []
    for number, length in zip(*column, strict=True):
        out += [sets[number]] * length
    return out


def pack(columns: Columns) -> Packed | None:
    """The columns packed; None if a mailbox has too many distinct flag sets."""
    numbers: dict[frozenset[str], int] = {}
    ids = [numbers.setdefault(f, len(numbers)) for f in columns.flags]
    if len(numbers) > MAX_FLAG_SETS:
        return None
    return Packed(columns.uidvalidity, columns.uidnext, columns.modseq, len(columns.uids),
                  columns.uids[-1] if columns.uids else 0, sum(columns.modseqs),
                  _pack_column(_INT, columns.uids, 1), _pack_column(_INT, columns.modseqs, 1),
                  _pack_column(_FLAG_ID, ids, 0), json.dumps([flags_text(f) for f in numbers]))


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
        packed = (_unpack_column(_INT, row[0]), _unpack_column(_INT, row[1]),
                  _unpack_column(_FLAG_ID, row[2]))
        if len({_length(column) for column in packed}) != 1:  # before building any list
            return None
        uids, modseqs = _numbers(packed[0]), _numbers(packed[1])
        flags = _flag_sets(packed[2], sets)
    except (ValueError, IndexError, TypeError, AttributeError, zlib.error, struct.error):
        return None  # not what ``pack`` wrote (an older form included): the rows are read
    return Columns(uidvalidity, uidnext, modseq, uids, flags, modseqs, sets)


def usable(c: sqlite3.Connection) -> list[int]:
    """The mailboxes whose copy is exact for them now, INBOXes first (``Live.warm``).
    Their sizes are not asked: counting a large mailbox's rows after a start reads
    its index pages from the disk, longer than loading the copy."""
    return [int(r[0]) for r in c.execute(
        "SELECT k.mailbox FROM mail_index_kept k JOIN mail_mailboxes m ON m.id = k.mailbox "
        "WHERE k.uidvalidity = m.uidvalidity AND k.uidnext = m.uidnext "
        "AND k.modseq = m.modseq ORDER BY m.name = 'INBOX' DESC, k.mailbox")]


def drop(c: sqlite3.Connection, mailbox_id: int) -> None:
    c.execute("DELETE FROM mail_index_kept WHERE mailbox = ?", (mailbox_id,))
