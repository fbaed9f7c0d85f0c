"""A bounded CBOR decoder for bytes that come from another twin.

cbor2 decodes everything RFC 8949 and its registered tags allow, including
value sharing (tags 28/29) and string references (tags 25/256): a few hundred
bytes of those decode into a graph whose plain re-encoding is exponential in
size (a 149-byte ``ping`` once cost twelve seconds of the event loop and a
50 MB answer). Nothing twins exchange needs a tag, an indefinite length or a
simple value other than false/true/null, so ``loads`` first walks the item
heads (no allocation, linear in the bytes) and refuses any of those, any
nesting past ``max_depth``, more than ``max_items`` items in all, and trailing
bytes; only then does cbor2 decode what is left, whose size is now linear in
the input. Every decoder of untrusted CBOR in the tree goes through here
(envelope bodies, payloads and acks in ``core.peer.envelope``, phonebook
records in ``phonebook.record``).

It lives in ``phonebook`` because that is the lowest package that decodes
another twin's CBOR (its records); ``core`` may import it, not the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2

# major type 7: false, true, null, then half, single and double floats
_SIMPLE_OK = frozenset({20, 21, 22, 25, 26, 27})


class CBORRefused(ValueError):
    """The bytes are not the plain CBOR this twin accepts (see module docstring)."""


@dataclass(frozen=True)
class Limits:
    """What one decoded value may hold: nesting depth and items (keys count)."""

    max_depth: int = 16
    max_items: int = 1 << 20


DEFAULT = Limits()


def check(data: bytes, limits: Limits = DEFAULT) -> None:
    """Refuse ``data`` unless it is exactly one plain, bounded CBOR item.

    Every container's declared count is checked against the bytes left (each
    item needs at least one), so a head claiming 2^64 elements is refused
    before anything is allocated for it.
    """
    n = len(data)
    pos = 0
    items = 0
    stack: list[int] = []  # items still expected by each enclosing container
    remaining = 1
    while True:
        if remaining == 0:
            if not stack:
                break
            remaining = stack.pop()
            continue
        remaining -= 1
        if pos >= n:
            raise CBORRefused("CBOR ends early")
        first = data[pos]
        major, info = first >> 5, first & 0x1F
        pos += 1
        if info < 24:
            arg = info
        elif info < 28:
            width = 1 << (info - 24)
            if pos + width > n:
                raise CBORRefused("CBOR ends inside an item head")
            arg = int.from_bytes(data[pos:pos + width], "big")
            pos += width
        else:
            raise CBORRefused("indefinite-length or reserved CBOR item")
        items += 1
        if items > limits.max_items:
            raise CBORRefused(f"CBOR value has over {limits.max_items} items")
        if major <= 1:  # unsigned / negative integer
            continue
        if major <= 3:  # byte / text string
            if arg > n - pos:
                raise CBORRefused("CBOR string runs past the end")
            pos += arg
            continue
        if major <= 5:  # array / map
            count = arg if major == 4 else 2 * arg
            if count > n - pos:
                raise CBORRefused("CBOR container declares more items than there are bytes")
            if count:
                if len(stack) >= limits.max_depth:
                    raise CBORRefused(f"CBOR nested deeper than {limits.max_depth}")
                stack.append(remaining)
                remaining = count
            continue
        if major == 6:
            raise CBORRefused(f"CBOR tag {arg} refused (no tags are accepted)")
        if info not in _SIMPLE_OK:
            raise CBORRefused("CBOR simple value refused")
    if pos != n:
        raise CBORRefused("trailing bytes after the CBOR value")


def loads(data: bytes, limits: Limits = DEFAULT) -> Any:
    """``check`` then decode; raises ``CBORRefused`` (a ValueError) for anything refused."""
    check(data, limits)
    try:
        return cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError,
            RecursionError) as exc:  # e.g. invalid UTF-8 in a text string
        raise CBORRefused(f"undecodable CBOR: {exc}") from exc
