"""Shard keys and values, as every backend takes them (``storage.backends``).

A leaf module, so that the backend kinds (``local``, ``resp``) can use them
without importing ``storage.backends``, which imports them to pick one.
"""

from __future__ import annotations

import re

from storage.errors import InvalidReference

Buffer = bytes | memoryview
MAX_KEY = 200
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")


def check_key(key: str) -> str:
    """Keys are interpolated into file indexes and SCAN patterns: keep them boring."""
    if not isinstance(key, str) or not _KEY_RE.match(key) or ".." in key:
        raise InvalidReference(f"invalid shard key {key!r:.80}")
    return key
