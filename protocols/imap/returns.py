"""SEARCH / SORT return options: RFC 4731 §3.1, RFC 5267 §4 (CONTEXT, UPDATE,
PARTIAL), RFC 9394 §3 (PARTIAL counted from the end).

Parsed before the search program runs, so a malformed option costs nothing:
``PARTIAL`` takes exactly ``n:m`` of non-zero 32-bit numbers, both positive
or both negative (no ``*``, no single number), and each option is known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocols.imap.commands import args
from protocols.imap.errors import Bad
from protocols.imap.parser import Atom, Token

OPTIONS = {"MIN", "MAX", "ALL", "COUNT", "SAVE", "UPDATE", "CONTEXT", "PARTIAL"}
_RANGE = re.compile(r"^(-?)([1-9][0-9]{0,9}):(-?)([1-9][0-9]{0,9})$")


@dataclass(frozen=True)
class Partial:
    """RFC 5267 §4.4 ``partial-range``: positions in the result, 1-based, ``lo <= hi``;
    negative ones count from the end (RFC 9394 §3: -1 is the last)."""

    lo: int
    hi: int

    @property
    def label(self) -> str:
        return f"{self.lo}:{self.hi}"

    def pick(self, nums: list[int]) -> list[int]:
        """The result's elements at these positions, in result order."""
        n = len(nums)
        if self.lo > 0:
            return nums[self.lo - 1:self.hi]
        first, last = n + 1 + self.lo, n + 1 + self.hi  # -3:-1 -> n-2 .. n
        return nums[max(first, 1) - 1:max(last, 0)]


def parse_partial(text: str) -> Partial:
    m = _RANGE.match(text)
    if m is None or m.group(1) != m.group(3):
        raise Bad(f"invalid PARTIAL range {text[:30]!r}")
    a, b = int(m.group(2)), int(m.group(4))
    if max(a, b) >= 1 << 32:
        raise Bad("PARTIAL range out of range")
    if m.group(1):  # both negative: -1:-100 is the same as -100:-1
        return Partial(-max(a, b), -min(a, b))
    return Partial(min(a, b), max(a, b))


@dataclass(frozen=True)
class Return:
    """What a ``RETURN (...)`` asked for; an empty list means ALL (RFC 4731 §3.1)."""

    opts: frozenset[str]
    partial: Partial | None = None


def parse(tokens: list[Token]) -> tuple[Return | None, list[Token]]:
    """``RETURN (options)`` before the criteria, and the criteria after it."""
    if not (tokens and isinstance(tokens[0], Atom) and tokens[0].upper() == "RETURN"):
        return None, tokens
    if len(tokens) < 2:
        raise Bad("RETURN needs a list of options")
    raw = args.plist(tokens[1])
    opts: set[str] = set()
    partial = None
    i = 0
    while i < len(raw):
        name = args.atom(raw[i]).upper()
        if name not in OPTIONS:
            raise Bad(f"unknown return option {name[:30]}")
        if name in opts:
            raise Bad(f"return option {name} given twice")
        opts.add(name)
        if name == "PARTIAL":
            if i + 1 >= len(raw):
                raise Bad("PARTIAL needs a range")
            partial = parse_partial(args.atom(raw[i + 1]))
            i += 1
        i += 1
    return Return(frozenset(opts or {"ALL"}), partial), tokens[2:]
