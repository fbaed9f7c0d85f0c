"""Contacts (twins known by name) and circles (named groups of contacts).

Both live in twin.db. Circles are only ever read at the moment an access is
checked (``core.acl``), so removing someone from a circle takes effect on the
very next request.
"""

from __future__ import annotations

import builtins
import sqlite3
import time

from core.db import Database, transaction
from core.errors import Conflict, Invalid, NotFound
from phonebook.record import NAME_RE

MIGRATIONS = [
    """
    CREATE TABLE contacts (
        name  TEXT PRIMARY KEY,
        added REAL NOT NULL
    );
    CREATE TABLE circles (
        name  TEXT PRIMARY KEY,
        added REAL NOT NULL
    );
    CREATE TABLE circle_members (
        circle TEXT NOT NULL REFERENCES circles(name) ON DELETE CASCADE,
        member TEXT NOT NULL REFERENCES contacts(name) ON DELETE CASCADE,
        PRIMARY KEY (circle, member)
    );
    """,
]
RESERVED = frozenset({"public", "owner"})


def check_name(name: str, what: str = "twin") -> str:
    name = name.strip().lower()
    if not NAME_RE.match(name) or name in RESERVED:
        raise Invalid(f"bad {what} name {name!r} (a-z, 0-9 and -, at most 63; not "
                      f"{' or '.join(sorted(RESERVED))})")
    return name


class Contacts:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("contacts", MIGRATIONS)

    async def add(self, name: str) -> bool:
        """True if the contact is new."""
        name = check_name(name)
        return await self.db.run(_add_contact, name)

    async def remove(self, name: str) -> None:
        name = check_name(name)
        if not await self.db.run(lambda c: c.execute(
                "DELETE FROM contacts WHERE name = ?", (name,)).rowcount):
            raise NotFound(f"no contact {name!r}")

    async def list(self) -> list[str]:
        return await self.db.run(lambda c: [r[0] for r in c.execute(
            "SELECT name FROM contacts ORDER BY name")])

    # -- circles

    async def circle_add(self, circle: str, members: builtins.list[str]) -> None:
        """Create the circle if needed and add members (who become contacts)."""
        circle = check_name(circle, "circle")
        names = [check_name(m) for m in members]

        def run(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM contacts WHERE name = ?", (circle,)).fetchone():
                raise Conflict(f"{circle!r} is a contact's name; a circle needs another")
            with transaction(conn):
                conn.execute("INSERT OR IGNORE INTO circles VALUES (?, ?)", (circle, time.time()))
                for member in names:
                    conn.execute("INSERT OR IGNORE INTO contacts VALUES (?, ?)",
                                 (member, time.time()))
                    conn.execute("INSERT OR IGNORE INTO circle_members VALUES (?, ?)",
                                 (circle, member))
        await self.db.run(run)

    async def circle_remove(self, circle: str, members: builtins.list[str] | None = None) -> None:
        """Remove members from the circle, or the whole circle when none are named."""
        circle = check_name(circle, "circle")
        names = [check_name(m) for m in members or []]

        def run(conn: sqlite3.Connection) -> None:
            if not conn.execute("SELECT 1 FROM circles WHERE name = ?", (circle,)).fetchone():
                raise NotFound(f"no circle {circle!r}")
            with transaction(conn):
                if not names:
                    conn.execute("DELETE FROM circles WHERE name = ?", (circle,))
                for member in names:
                    conn.execute("DELETE FROM circle_members WHERE circle = ? AND member = ?",
                                 (circle, member))
        await self.db.run(run)

    async def circles(self) -> dict[str, builtins.list[str]]:
        def run(conn: sqlite3.Connection) -> dict[str, builtins.list[str]]:
            out: dict[str, builtins.list[str]] = {r[0]: [] for r in conn.execute(
                "SELECT name FROM circles ORDER BY name")}
            for circle, member in conn.execute(
                    "SELECT circle, member FROM circle_members ORDER BY circle, member"):
                out[circle].append(member)
            return out
        return await self.db.run(run)

    async def is_circle(self, name: str) -> bool:
        return await self.db.run(lambda c: c.execute(
            "SELECT 1 FROM circles WHERE name = ?", (name,)).fetchone() is not None)


def _add_contact(conn: sqlite3.Connection, name: str) -> bool:
    if conn.execute("SELECT 1 FROM circles WHERE name = ?", (name,)).fetchone():
        raise Conflict(f"{name!r} is a circle's name")
    return conn.execute("INSERT OR IGNORE INTO contacts VALUES (?, ?)",
                        (name, time.time())).rowcount == 1
