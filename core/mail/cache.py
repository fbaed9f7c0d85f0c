"""A bounded in-memory cache of small message bodies, keyed by object ref.

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

from collections import OrderedDict


class BodyCache:
    def __init__(self, max_bytes: int = 16 * 1024 * 1024, max_item: int = 64 * 1024) -> None:
        self.max_bytes = max_bytes
        self.max_item = max_item
        self.size = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()

    def get(self, ref: str) -> bytes | None:
        data = self._items.get(ref)
        if data is not None:
            self._items.move_to_end(ref)
        return data

    def put(self, ref: str, data: bytes) -> None:
        if len(data) > self.max_item or self.max_bytes <= 0 or ref in self._items:
            return
        self._items[ref] = data
        self.size += len(data)
        while self.size > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.size -= len(old)

    def drop(self, ref: str) -> None:
        data = self._items.pop(ref, None)
        if data is not None:
            self.size -= len(data)

    def __len__(self) -> int:
        return len(self._items)
