"""Bounded in-memory caches: bytes by key (``BytesCache``: small message bodies by
object ref, and IMAP's header fields of a message), and messages' immutable
metadata (``MetaCache``, described on the class).

Why: a FETCH of a small body used to cost a full dispersed-store read (the
catalogue row on the database thread, k share reads on the I/O threads, a
decrypt and a decode), several thread hops for a few kilobytes. Most mail is
small and clients fetch the messages that just arrived, so the bytes of small
messages are kept here as they are stored and as they are first read.

Correctness: a ref names one immutable object (a random id; never reused), so
a cached body is never stale. The store drops a ref when the last message
using it goes (``MailStore._delete_objects``), before the object itself is
deleted, so an expunged message's bytes do not outlive it here.

Memory: only bodies up to ``max_item`` bytes, at most ``max_bytes`` in all,
least recently used first out.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, NamedTuple, TypeVar

from core.mail.mime import Part

K = TypeVar("K", bound=Hashable)


ENTRY_BYTES = 200  # what an entry holds besides its value: key, bytes header, dict node


class BytesCache(Generic[K]):
    """Values of at most ``max_item`` bytes, ``max_bytes`` in all, least recently
    used first out.

    Each entry is charged ``entry_bytes`` on top of its value: IMAP's header
    fields are ~80-byte values under ~120 bytes of key and node, and charged
    by their values alone they held about twice their bound (a soak's
    tracemalloc: 3.8 MiB held for 1.2 MiB charged, still growing)."""

    def __init__(self, max_bytes: int = 16 * 1024 * 1024, max_item: int = 64 * 1024,
                 entry_bytes: int = ENTRY_BYTES) -> None:
        self.max_bytes = max_bytes
        self.max_item = max_item
        self.entry_bytes = entry_bytes
        self.size = 0
        self._items: OrderedDict[K, bytes] = OrderedDict()

    def get(self, ref: K) -> bytes | None:
        data = self._items.get(ref)
        if data is not None:
            self._items.move_to_end(ref)
        return data

    def put(self, ref: K, data: bytes) -> None:
        if len(data) > self.max_item or self.max_bytes <= 0 or ref in self._items:
            return
        self._items[ref] = data
        self.size += len(data) + self.entry_bytes
        while self.size > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.size -= len(old) + self.entry_bytes

    def drop(self, ref: K) -> None:
        data = self._items.pop(ref, None)
        if data is not None:
            self.size -= len(data) + self.entry_bytes

    def __len__(self) -> int:
        return len(self._items)


class Fixed(NamedTuple):
    """The parts of a message's metadata that never change (flags and modseq do)."""

    ref: str
    size: int
    internal_date: float
    header: bytes
    structure: Part | None  # the parsed structure (``mime.Part``), None when not loaded yet


MetaKey = tuple[int, int, int]  # (mailbox id, uidvalidity, uid)


class MetaCache:
    """A bounded cache of the immutable metadata of messages, keyed by (mailbox, uidvalidity, uid).

    Why: every FETCH of headers or a body, and every header SEARCH, used to read
    ``mail_messages`` joined with ``mail_bodies`` on the read thread: a thread
    hop and an SQLite query per command (for SEARCH, the headers of the whole
    mailbox). A message's ref, size, date, header and structure never change
    while it exists, and flags and modseq come from the shared mailbox index,
    so those reads are served from memory once each message has been read (or
    appended) once.

    Correctness: a uid is never reused within one uidvalidity, and a mailbox
    created anew (even with a reused row id) gets a new uidvalidity, so an entry
    is never stale; the caller only serves uids its live index still holds, so
    an expunged message's entry (dropped when its expunge is published, or
    simply aged out) is never answered.

    Memory: at most ``max_bytes`` as Python holds it, least recently used first
    out. An entry is charged its header, a fixed allowance, and its parsed
    structure at ``STRUCTURE_FACTOR`` times the structure's compact JSON: the
    dicts and lists of a parsed ``mime.Part`` take 6.8-7.0 times the bytes of its
    JSON (measured with tracemalloc). Charging the header alone let a "16 MiB"
    cache hold 103 MiB of small messages' metadata (issue 23).
    """

    PER_ENTRY = 384  # the key, the tuple and its small fields, the ordered-dict node
    STRUCTURE_FACTOR = 7

    def __init__(self, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[MetaKey, tuple[Fixed, int]] = OrderedDict()

    def get(self, key: MetaKey) -> Fixed | None:
        entry = self._items.get(key)
        if entry is None:
            return None
        self._items.move_to_end(key)
        return entry[0]

    @classmethod
    def cost(cls, item: Fixed, structure_json: int | None = None) -> int:
        """What ``item`` is charged; ``structure_json``: the length of its structure's
        compact JSON, when the caller has it (filing does: re-encoding every new
        message's structure to measure it was ~2% of a receiving twin's CPU)."""
        held = len(item.header) + cls.PER_ENTRY
        if item.structure is not None:
            if structure_json is None:
                structure_json = len(json.dumps(item.structure, separators=(",", ":")))
            held += cls.STRUCTURE_FACTOR * structure_json
        return held

    def put(self, key: MetaKey, item: Fixed, structure_json: int | None = None) -> None:
        cost = self.cost(item, structure_json)
        if cost > self.max_bytes:
            return
        self.drop(key)
        self._items[key] = (item, cost)
        self.size += cost
        while self.size > self.max_bytes:
            _, (_, gone) = self._items.popitem(last=False)
            self.size -= gone

    def drop(self, key: MetaKey) -> None:
        entry = self._items.pop(key, None)
        if entry is not None:
            self.size -= entry[1]

    def __len__(self) -> int:
        return len(self._items)
