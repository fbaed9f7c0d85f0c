"""What sorting and threading need of a message, derived once from its header.

Why: IMAP SORT and THREAD (RFC 5256, RFC 5957) compare sent dates, base
subjects, first addresses and Message-ID/References of every message they
cover. Derived from the header on every command, that is ~50-140 µs a message:
5-15 s for a 100,000-message mailbox. A message's header never changes, so the
keys are derived once and kept in SQLite (``mail_sort``, keyed by mailbox and
uid as ``mail_messages`` is, so a mailbox's keys are read in one ordered walk;
``MailStore.sort_keys``): when the message is filed (``keep_filed``, in the
filing transaction), else (a copy, a message filed before keys were kept, a
header that could not be read then) the first time a SORT or THREAD needs
them (``load``), which is what Dovecot does with its cache file.
JMAP's Email/query sorts and threads will read the same keys.

``derive`` is pure and bounded by the header's own bound (``mime.MAX_HEADER``):
at most ``MAX_REFS`` references are kept, each value's RFC 2047 decoding is
the standard library's.
"""

from __future__ import annotations

import asyncio
import email.errors
import email.header
import email.utils
import functools
import itertools
import logging
import re
import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from core import gcpause
from core.db import columns
from core.mail import addresses, keptkeys
from core.mail.mime import parse_headers, plain_address

if TYPE_CHECKING:
    from core.db import Database
    from core.mail.commit import GroupCommit

log = logging.getLogger("twin.mail")
MAX_REFS = 20  # the last ones: the nearest ancestors
DERIVE_CHUNK = 1000  # headers read and derived per step (the loop runs in between)
KEYS_VERSION = 1  # bump when ``derive`` changes meaning: kept rows are derived again
_MSGID = re.compile(r"<([^<>\s]+)>")
_WS = re.compile(r"\s+")
_TRAILER = re.compile(r"(?:\(fwd\)|\s)+$", re.I)
_LEADER = re.compile(r"^(?:\s+|(?:\[[^\[\]]*\]\s*)*(?:re|fwd?)\s*(?:\[[^\[\]]*\]\s*)?:)", re.I)
_BLOB = re.compile(r"^\[[^\[\]]*\]\s*")
_REPLY = re.compile(r"^\s*(?:\[[^\[\]]*\]\s*)*(?:re|fwd?)\s*(?:\[[^\[\]]*\]\s*)?:|\(fwd\)\s*$"
                    r"|^\s*\[fwd:", re.I)


class SortKeys(NamedTuple):
    """One message's keys. Strings are upper-cased (i;ascii-casemap, RFC 5256 §3)."""

    sent: float | None  # the Date header in UTC (§2.2); None: use the internal date
    subject: str  # base subject (§2.1)
    reply: bool  # the subject had a reply or forward marker (THREAD §2.2 step 6)
    message_id: str  # without the angle brackets; "" if none
    parents: str  # References' ids (else In-Reply-To's first), space-separated, parent last
    from_key: str  # the first From address's mailbox (SORT FROM)
    to_key: str
    cc_key: str
    display_from: str  # its display name, else the address (RFC 5957 DISPLAYFROM)
    display_to: str


NO_KEYS = SortKeys(None, "", False, "", "", "", "", "", "", "")
COLUMNS = SortKeys._fields  # the mail_sort columns after mailbox, uid, version


def decode_words(value: str) -> str:
    """RFC 2047 encoded words decoded; a value without any (``=?``) is returned as is."""
    if "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, email.errors.HeaderParseError):
        return value


def base_subject(subject: str) -> str:
    """RFC 5256 §2.1: the subject without Re:, Fwd:, [list] tags and (fwd) trailers."""
    s = _WS.sub(" ", decode_words(subject))
    while True:
        s = _TRAILER.sub("", s)  # (2)
        while True:  # (3) and (4) until nothing changes
            before = s
            s = _LEADER.sub("", s)
            m = _BLOB.match(s)
            if m and s[m.end():]:
                s = s[m.end():]
            if s == before:
                break
        if s[:5].upper() == "[FWD:" and s.endswith("]"):  # (6)
            s = s[5:-1]
            continue
        return s.upper()


def is_reply(subject: str) -> bool:
    return bool(_REPLY.search(decode_words(subject)))


def msg_ids(value: str) -> list[str]:
    """The message ids in a References/In-Reply-To value, the last ``MAX_REFS``."""
    return _MSGID.findall(value[-64 * 1024:])[-MAX_REFS:]


def parse_date(value: str | None) -> float | None:
    """A Date header as a UTC timestamp; None when absent or unreadable."""
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _first_address(value: str | None) -> addresses.Address | None:
    """The first address of a field; a group's start marker counts (its name).

    A field of one plain address (most From lines) is read by ``mime``'s regular
    expression, which gives what the full parser gives there at a fifth of
    the cost; anything else (lists, groups, comments) by the full parser."""
    if value is None:
        return None
    plain = plain_address(value)
    if plain is not None:
        name, addr = plain
        mailbox, _, host = addr.rpartition("@")
        return addresses.Address(name or None, None, mailbox, host)
    for a in addresses.parse(value):
        return a
    return None


def _mailbox_key(a: addresses.Address | None) -> str:
    return (a.mailbox or "").upper() if a else ""


def _display_key(a: addresses.Address | None) -> str:
    """RFC 5957 §2: the display name, else the address itself."""
    if a is None:
        return ""
    if a.name:
        return decode_words(a.name).upper()
    return ((a.mailbox or "") + (f"@{a.host}" if a.host else "")).upper()


def derive(header: bytes) -> SortKeys:
    """The keys of a message from its header block."""
    first: dict[str, str] = {}
    references: list[str] = []
    for name, value in parse_headers(header):
        if name == "references":
            references.append(decode_words(value))
        elif name not in first:
            first[name] = value
    subject = decode_words(first.get("subject", ""))
    ids = msg_ids(decode_words(first.get("message-id", "")))
    key = ids[0] if ids else ""
    parents = msg_ids(" ".join(references)) or msg_ids(decode_words(
        first.get("in-reply-to", "")))[:1]
    from_, to = (_first_address(decode_words(first[f]) if f in first else None)
                 for f in ("from", "to"))
    cc = _first_address(decode_words(first["cc"]) if "cc" in first else None)
    return SortKeys(
        parse_date(decode_words(first.get("date", ""))), base_subject(subject),
        is_reply(subject), key, " ".join(parents),
        _mailbox_key(from_), _mailbox_key(to), _mailbox_key(cc),
        _display_key(from_), _display_key(to))


@dataclass
class KeyColumns:
    """The keys of a mailbox's messages, by column, in uid order (``load``)."""

    uids: list[int]
    size: list[int]
    internal_date: list[float]
    keys: dict[str, list[Any]]  # the asked-for ``SortKeys`` fields
    unkept: int = 0  # how many were read from rows, not the packed copy (``keptkeys``)

    def sent(self) -> list[float]:
        """SORT DATE's key: the sent date, else the internal date (RFC 5256 §2.2)."""
        return [d if s is None else s
                for s, d in zip(self.keys["sent"], self.internal_date, strict=True)]


def _read(c: sqlite3.Connection, mailbox_id: int, first: int, last: int,
          fields: Sequence[str]) -> tuple[list[list[Any]], int]:
    """Columns uid, size, internal date, keys version, *fields of the range, in uid
    order (a message without kept keys has version None), and how many of them
    came from rows rather than the mailbox's packed copy (``core.mail.keptkeys``).

    One read transaction (one snapshot): the packed copy, then the messages
    after it as two ordered range scans merged here: both tables are keyed
    (mailbox, uid), and scanning each costs about half of SQLite's join, which
    seeks ``mail_sort`` once per message. The rows are turned into columns and
    dropped inside the pause: rows returned alive from it (a tuple per message)
    were all walked by the collector's first pass after it."""
    with gcpause.paused():  # two rows per message: see ``core.gcpause``
        c.execute("BEGIN")
        try:
            kept = keptkeys.read(c, mailbox_id, first, last, list(fields), KEYS_VERSION)
            start = first if kept is None else max(first, kept.last_uid + 1)
            tail = (_merged(c, (mailbox_id, start, last), fields) if start <= last
                    else [[] for _ in range(4 + len(fields))])
        finally:
            c.execute("COMMIT")
    if kept is None:
        return tail, len(tail[0])
    k = kept.columns
    return [k[0] + tail[0], k[1] + tail[1], k[2] + tail[2],
            [KEYS_VERSION] * len(k[0]) + tail[3],
            *(a + b for a, b in zip(k[3:], tail[4:], strict=True))], len(tail[0])


def _merged(c: sqlite3.Connection, span: tuple[int, int, int], fields: Sequence[str]
            ) -> list[list[Any]]:
    msgs = c.execute("SELECT uid, size, internal_date FROM mail_messages "
                     "WHERE mailbox = ? AND uid BETWEEN ? AND ? ORDER BY uid",
                     span).fetchall()
    cols = "".join(f", {f}" for f in fields)  # names from COLUMNS only (``load``)
    keys = c.execute(f"SELECT uid, version{cols} FROM mail_sort "  # noqa: S608
                     "WHERE mailbox = ? AND uid BETWEEN ? AND ? ORDER BY uid",
                     span).fetchall()
    out, kept = columns(msgs, 3), columns(keys, 2 + len(fields))
    if kept[0] != out[0]:  # some messages have no kept keys yet: align by uid
        by_uid = {k[0]: k for k in keys}
        none = (None,) * (2 + len(fields))
        kept = columns([by_uid.get(uid, none) for uid in out[0]], 2 + len(fields))
    return out + kept[1:]


def _refs(c: sqlite3.Connection, mailbox_id: int, uids: Sequence[int]) -> dict[int, str]:
    q = (f"SELECT uid, ref FROM mail_messages WHERE mailbox = ? "  # noqa: S608
         f"AND uid IN ({','.join('?' * len(uids))})")
    return {r[0]: r[1] for r in c.execute(q, (mailbox_id, *uids))}


def _headers(c: sqlite3.Connection, refs: Sequence[str]) -> dict[str, bytes]:
    q = f"SELECT ref, header FROM mail_bodies WHERE ref IN ({','.join('?' * len(refs))})"  # noqa: S608
    return {r[0]: r[1] for r in c.execute(q, list(refs))}


def _derive_all(headers: dict[str, bytes]) -> dict[str, SortKeys]:
    return {ref: derive(h) for ref, h in headers.items()}


def _keep(mailbox_id: int, derived: list[tuple[int, SortKeys]], c: sqlite3.Connection
          ) -> None:
    """Write derived keys, only for messages still there (one may be expunged since)."""
    c.executemany(
        f"INSERT OR REPLACE INTO mail_sort SELECT ?, ?, ?{', ?' * len(COLUMNS)} "  # noqa: S608
        "WHERE EXISTS (SELECT 1 FROM mail_messages WHERE mailbox = ? AND uid = ?)",
        [(mailbox_id, uid, KEYS_VERSION, *keys, mailbox_id, uid) for uid, keys in derived])


def keep_filed(c: sqlite3.Connection, mailbox_id: int, first_uid: int,
               headers: Sequence[bytes]) -> None:
    """Keys of messages being filed (uids ``first_uid`` + k), in the filing transaction.

    Why at filing and not only at the first SORT: that first SORT of a
    100,000-message mailbox spent 5 s deriving (Dovecot 2.3 s building its
    cache), and a client meets it on its first look at a large folder. Here it
    is ~15-25 µs a message, a few per cent of filing. A header ``derive``
    cannot read does not stop the filing: its keys are left to ``load``,
    which derives them (or reports why) when a SORT or THREAD needs them.
    """
    rows: list[tuple[Any, ...]] = []
    for k, header in enumerate(headers):
        try:
            keys = derive(header)
        except Exception as exc:  # hostile input: a bug in derive must not stop filing
            log.warning("sort keys of uid %d in mailbox %d left for the first SORT: %s",
                        first_uid + k, mailbox_id, type(exc).__name__)
            continue
        rows.append((mailbox_id, first_uid + k, KEYS_VERSION, *keys))
    c.executemany(f"INSERT OR REPLACE INTO mail_sort VALUES (?, ?, ?{', ?' * len(COLUMNS)})",  # noqa: S608
                  rows)


async def load(reads: Database, commit: GroupCommit[Any], mailbox_id: int,
               uids: Sequence[int], fields: Collection[str]) -> KeyColumns:
    """The ``fields`` of the messages ``uids`` (ascending) that still exist (or
    that the packed copy holds: a session may still show one expunged since).

    One range read on the read thread (``_read``); the keys of messages not
    derived yet (or by an older ``KEYS_VERSION``) are derived from their
    headers in a worker thread ``DERIVE_CHUNK`` at a time and kept, so the next
    SORT or THREAD of the mailbox reads them.
    """
    names = [f for f in COLUMNS if f in fields]
    if not uids:
        return KeyColumns([], [], [], {f: [] for f in names})
    cols, unkept = await reads.run(_read, mailbox_id, uids[0], uids[-1], names)
    if len(cols[0]) != len(uids) or cols[0] != (uids if isinstance(uids, list) else list(uids)):
        # a subset (a search's matches, or the packed copy's expunged): those asked for
        wanted = set(uids)
        keep = [u in wanted for u in cols[0]]
        cols = [list(itertools.compress(col, keep)) for col in cols]
    found, versions = cols[0], cols[3]
    stale = ([] if versions.count(KEYS_VERSION) == len(versions) else
             [i for i, v in enumerate(versions) if v != KEYS_VERSION])
    for start in range(0, len(stale), DERIVE_CHUNK):
        chunk = stale[start:start + DERIVE_CHUNK]
        refs = await reads.run(_refs, mailbox_id, [found[i] for i in chunk])
        at: dict[str, list[int]] = {}  # bodies to derive -> their rows (copies share one)
        for i in chunk:
            at.setdefault(refs.get(found[i], ""), []).append(i)
        derived = await asyncio.to_thread(_derive_all, await reads.run(_headers, list(at)))
        kept: list[tuple[int, SortKeys]] = []
        for ref, positions in at.items():  # a message gone meanwhile: one without headers
            keys = derived.get(ref, NO_KEYS)
            for i in positions:
                for n, f in enumerate(names):
                    cols[4 + n][i] = getattr(keys, f)
                kept.append((found[i], keys))
        await commit.submit(functools.partial(_keep, mailbox_id, kept))
    return KeyColumns(cols[0], cols[1], cols[2], {f: cols[4 + n] for n, f in enumerate(names)},
                      unkept)
