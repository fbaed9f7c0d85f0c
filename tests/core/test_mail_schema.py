"""The mail store's migrations are append-only.

A database records only how many migrations it ran (``Database.migrate``), so
editing, removing or reordering one that has run anywhere breaks that
database at its next start: a migration inserted before the packed-keys
table made every twin that had the table fail to open its database ("table
mail_sort_kept already exists"; a soak's `twin send` runs, during development).
A new migration goes at the end, and its fingerprint is added here.
"""

from __future__ import annotations

import hashlib

from core.mail import schema

RELEASED = [
    "d3a12e743d3f30cd", "d05ad93183500fa9", "89be09d26bf101ae", "8ed8e6dc41848302",
    "0d3142c2013075fb", "2c09991fe945452b", "2358586c208f2557",
    "7d5991dcd808e8e5",  # mail_sort_kept (core.mail.keptkeys)
]


def test_released_migrations_are_never_edited_or_moved() -> None:
    found = [hashlib.sha256(m.encode()).hexdigest()[:16] for m in schema.MIGRATIONS]
    assert found[:len(RELEASED)] == RELEASED
