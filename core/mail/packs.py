"""How message bytes are laid out in stored objects: alone, or packed.

Filing packs messages up to ``PACK_MEMBER_MAX`` into objects up to
``PACK_BYTES``. Why: every object costs an encryption, an erasure coding into
n shares, n share records and a catalogue row, most of a 4 KiB message's
filing cost alone. The price: an expunged member's bytes stay until its whole
pack is expunged (at most ``PACK_BYTES`` kept per live message; no
compaction), and reading a member reads its pack (then cached: the members
filed together are the new mail a client fetches next).

A message's ref (``mail_messages.ref``) is either a stored object's own ref
(``<id>:<size>``) or a pack member's, ``<object ref>@<offset>:<length>``; so
``ref_size`` reads any message's size from its ref, and nothing but
``locate`` (and ``in_use``, which finds a pack's members by that prefix)
needs to know the difference.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from core.errors import NotFound

PACK_MEMBER_MAX = 32 * 1024
PACK_BYTES = 128 * 1024


def locate(ref: str) -> tuple[str, int | None, int]:
    """(object ref, offset in it or None if the message is the whole object, size)."""
    obj, at, member = ref.partition("@")
    if not at:
        return ref, None, ref_size(ref)
    offset, _, size = member.partition(":")
    try:
        return obj, int(offset), int(size)
    except ValueError:
        raise NotFound(f"invalid message object reference {ref[:80]!r}") from None


def ref_size(ref: str) -> int:
    """The size a ref carries (``id:size``), without a store round trip."""
    try:
        return int(ref.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        raise NotFound(f"invalid message object reference {ref[:80]!r}") from None


def plan(sizes: Sequence[int]) -> tuple[list[list[int]], list[int]]:
    """Which messages (by index) go together: (packs, those stored alone).

    In order, each pack filled up to ``PACK_BYTES``; a message over
    ``PACK_MEMBER_MAX`` is stored alone."""
    packs: list[list[int]] = []
    alone: list[int] = []
    fill = PACK_BYTES
    for i, size in enumerate(sizes):
        if size > PACK_MEMBER_MAX:
            alone.append(i)
            continue
        if fill + size > PACK_BYTES:
            packs.append([])
            fill = 0
        packs[-1].append(i)
        fill += size
    return packs, alone


def refs(sizes: Sequence[int], packs: Sequence[Sequence[int]], alone: Sequence[int],
         objects: Sequence[str]) -> list[str]:
    """The ref of each message once ``objects`` are stored: the packs' objects
    first, in ``plan``'s order, then those of the messages stored alone."""
    out = [""] * len(sizes)
    for pack, obj in zip(packs, objects, strict=False):
        offset = 0
        for i in pack:
            out[i] = f"{obj}@{offset}:{sizes[i]}"
            offset += sizes[i]
    for i, obj in zip(alone, objects[len(packs):], strict=True):
        out[i] = obj
    return out


def in_use(c: sqlite3.Connection, obj: str) -> bool:
    """Whether any message still uses a member of the pack ``obj``."""
    return c.execute("SELECT 1 FROM mail_messages WHERE ref >= ? AND ref < ? LIMIT 1",
                     (obj + "@", obj + "A")).fetchone() is not None  # "A" sorts right after "@"
