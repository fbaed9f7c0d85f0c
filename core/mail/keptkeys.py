"""A large mailbox's SORT and THREAD keys kept packed, one row per mailbox.

Why: the keys of 100,000 messages are ~1.5 million values in ``mail_sort``
rows; reading them back row by row costs 0.25-0.45 s (SQLite stepping each
row, Python building each value), about half of a THREAD from a new session.
Packed by column (``array`` bytes for numbers, one JSON array per text
column) they are read as a dozen values and unpacked at C speed in ~0.05 s.
Dovecot keeps the same fields in its cache file for the same reason.

Why a copy stays valid as the mailbox changes: a message's keys never change
once derived at ``sortkeys.KEYS_VERSION``, and within one UIDVALIDITY a uid
is never given again, with uids handed out in commit order. So a copy taken
from one read snapshot holds every message that exists now with a uid up to
its ``last_uid`` (and some expunged since, which the reader drops: it keeps
only the uids asked for); messages after ``last_uid`` are read from their
rows (the *tail*). A copy of another UIDVALIDITY or keys version is
ignored, and one is written only when every row it holds is at
``KEYS_VERSION``.

When one is written (``MailStore.keep_keys``): at a clean stop for the large
mailboxes in use, and in the background after a read whose tail held
``REKEEP`` messages or more. A deleted mailbox's copy goes with it; INBOX
renamed (its messages move out) drops it.

Bounded: built in chunks of ``CHUNK`` rows, so taking a copy holds packed
bytes, not an object per value.
"""

from __future__ import annotations

import json
import math
import sqlite3
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Any

from core.db import transaction
from core.mail import packing

MIN_MESSAGES = 5000  # smaller mailboxes read their rows in a few milliseconds
REKEEP = 2000  # messages read from rows (the tail) that make a new copy worth taking
CHUNK = 10_000  # rows per step when taking a copy
_INT, _REAL = "q", "d"
NUMBERS = {"size": _INT, "internal_date": _REAL, "sent": _REAL}  # sent None: NaN
FLAGS = ("reply",)  # one byte each
TEXTS = ("subject", "message_id", "parents", "from_key", "to_key", "cc_key",
         "display_from", "display_to")
KEY_FIELDS = ("sent", "reply", *TEXTS)  # = sortkeys.COLUMNS, as a set (checked in tests)
_STORED = ("size", "internal_date", *KEY_FIELDS)


# a mailbox's copy, if one is usable: of its UIDVALIDITY now and the keys version asked
_USABLE = ("FROM mail_sort_kept k JOIN mail_mailboxes m ON m.id = k.mailbox "
           "WHERE k.mailbox = ? AND k.uidvalidity = m.uidvalidity AND k.version = ?")


@dataclass
class Kept:
    """What a read found: the columns uid, size, internal date, *fields for the uids
    asked (``read``), and the last uid the copy covers (later ones are in rows)."""

    columns: list[list[Any]]
    last_uid: int


def _unpack(kind: str, data: bytes) -> list[Any]:
    return packing.from_bytes(kind, data).tolist()


def read(c: sqlite3.Connection, mailbox_id: int, first: int, last: int,
         fields: list[str], version: int) -> Kept | None:
    """The kept keys of the messages with uids in [first, last], or None if there is
    no copy of this UIDVALIDITY and keys ``version``. Runs inside the caller's read
    transaction, so the tail it reads after is of the same snapshot."""
    cols = "".join(f", k.{f}" for f in fields)
    row = c.execute(
        f"SELECT k.last_uid, k.uids, k.size, k.internal_date{cols} {_USABLE}",
        (mailbox_id, version)).fetchone()
    if row is None:
        return None
    try:
        columns = [_unpack(_INT, row[1]), *(_decode(name, data) for name, data in zip(
            ("size", "internal_date", *fields), row[2:], strict=True))]
    except ValueError:  # not what ``take`` wrote (a damaged file): read the rows
        return None
    uids = columns[0]
    if any(len(values) != len(uids) for values in columns):
        return None
    lo, hi = bisect_left(uids, first), bisect_right(uids, last)
    if lo > 0 or hi < len(uids):
        columns = [values[lo:hi] for values in columns]
    return Kept(columns, int(row[0]))


def _decode(name: str, data: bytes) -> list[Any]:
    if name in NUMBERS:
        values = _unpack(NUMBERS[name], data)
        return [None if math.isnan(v) else v for v in values] if name == "sent" else values
    if name in FLAGS:
        return list(map(bool, data))
    values = json.loads(data)
    if not isinstance(values, list):
        raise ValueError(f"{name} is not a list")
    return values


@dataclass
class Packed:
    """A copy as written (``take``, then ``write`` on the writer)."""

    uidvalidity: int
    version: int
    last_uid: int
    columns: dict[str, bytes]  # "uids" and every name in _STORED


def take(c: sqlite3.Connection, mailbox_id: int, version: int) -> Packed | None:
    """A copy of a mailbox's keys from one read snapshot (the read connection), or
    None when the mailbox is small, gone, or has a message whose keys are not at
    ``version`` yet (its first SORT or THREAD derives them)."""
    c.execute("BEGIN")
    try:
        mb = c.execute("SELECT uidvalidity FROM mail_mailboxes WHERE id = ?",
                       (mailbox_id,)).fetchone()
        count = c.execute("SELECT count(*) FROM mail_messages WHERE mailbox = ?",
                          (mailbox_id,)).fetchone()[0]
        if mb is None or count < MIN_MESSAGES:
            return None
        numbers: dict[str, array[Any]] = {"uids": array(_INT)} | {
            n: array(k) for n, k in NUMBERS.items()}
        flags = bytearray()
        texts: dict[str, list[str]] = {n: [] for n in TEXTS}
        after, seen = 0, 0
        names = ", ".join(KEY_FIELDS)
        while True:
            rows = c.execute(
                f"SELECT s.uid, s.version, m.size, m.internal_date, {names} "  # noqa: S608
                "FROM mail_sort s JOIN mail_messages m ON m.mailbox = s.mailbox AND "
                "m.uid = s.uid WHERE s.mailbox = ? AND s.uid > ? ORDER BY s.uid LIMIT ?",
                (mailbox_id, after, CHUNK)).fetchall()
            if not rows:
                break
            if any(r[1] != version for r in rows):
                return None
            numbers["uids"].extend(r[0] for r in rows)
            numbers["size"].extend(r[2] for r in rows)
            numbers["internal_date"].extend(r[3] for r in rows)
            numbers["sent"].extend(math.nan if r[4] is None else r[4] for r in rows)
            flags.extend(1 if r[5] else 0 for r in rows)
            for n, name in enumerate(TEXTS):  # one JSON text per chunk, joined below
                texts[name].append(json.dumps([r[6 + n] for r in rows],
                                              ensure_ascii=False)[1:-1])
            after, seen = rows[-1][0], seen + len(rows)
    finally:
        c.execute("COMMIT")
    if seen != count:  # a message without keys (a copy, or filed before keys were kept)
        return None
    packed: dict[str, bytes] = {"reply": bytes(flags)}
    for name, values in numbers.items():
        packed[name] = packing.to_bytes(values)
    for name, parts in texts.items():
        packed[name] = ("[" + ",".join(p for p in parts if p) + "]").encode()
    return Packed(mb[0], version, after, packed)


def write(c: sqlite3.Connection, mailbox_id: int, packed: Packed) -> bool:
    """Store a copy (on the writer) if the mailbox still has its UIDVALIDITY; whether
    it was stored. A mailbox deleted and created again since is not given it."""
    with transaction(c):
        row = c.execute("SELECT uidvalidity FROM mail_mailboxes WHERE id = ?",
                        (mailbox_id,)).fetchone()
        if row is None or row[0] != packed.uidvalidity:
            return False
        names = ("uids", *_STORED)
        c.execute(f"INSERT OR REPLACE INTO mail_sort_kept (mailbox, uidvalidity, version, "  # noqa: S608
                  f"last_uid, {', '.join(names)}) VALUES (?, ?, ?, ?{', ?' * len(names)})",
                  (mailbox_id, packed.uidvalidity, packed.version, packed.last_uid,
                   *(packed.columns[n] for n in names)))
    return True


def stale(c: sqlite3.Connection, mailbox_id: int, version: int) -> bool:
    """Whether a new copy is worth taking: none is usable, or ``REKEEP`` messages or
    more came after it."""
    row = c.execute(f"SELECT k.last_uid {_USABLE}", (mailbox_id, version)).fetchone()
    return row is None or c.execute(
        "SELECT count(*) FROM mail_messages WHERE mailbox = ? AND uid > ?",
        (mailbox_id, row[0])).fetchone()[0] >= REKEEP


def drop(c: sqlite3.Connection, mailbox_id: int) -> None:
    c.execute("DELETE FROM mail_sort_kept WHERE mailbox = ?", (mailbox_id,))
