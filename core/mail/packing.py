"""Number columns as bytes on disk: ``array`` bytes, little-endian whatever the machine.

One place for the packed copies a large mailbox keeps (``core.mail.indexfile``:
uids, modseqs, flag set numbers; ``core.mail.keptkeys``: SORT and THREAD keys),
so both read and write the same byte order. ``array`` rather than ``struct``:
it packs and unpacks a whole column at C speed.
"""

from __future__ import annotations

import sys
from array import array
from typing import Any


def to_bytes(values: array[Any]) -> bytes:
    """``values`` as little-endian bytes (``values`` itself is left as it was)."""
    if sys.byteorder == "big":
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def from_bytes(kind: str, data: bytes) -> array[Any]:
    """What ``to_bytes`` wrote for an array of typecode ``kind``. ValueError if
    ``data`` is not a whole number of items."""
    values = array(kind)
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return values
