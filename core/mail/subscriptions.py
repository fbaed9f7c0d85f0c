"""Each user's subscribed mailbox names: a set of names, not a property of a mailbox.

RFC 3501 §6.3.6: a name may be subscribed whether or not a mailbox of that
name exists, and a server MUST NOT remove a name from the set because its
mailbox was deleted; RFC 5258 reports such a name as ``\\NonExistent``. So the
set lives in its own table, and CREATE, DELETE and RENAME leave it alone.

A user's set starts as the mailboxes subscribed before this table existed
(``mail_mailboxes.subscribed``, which new mailboxes get by default): ``seed``
copies them once per login, at the first login after the upgrade or after
the user's default mailboxes were created.
"""

from __future__ import annotations

import sqlite3

from core.db import Database, transaction
from core.errors import ErrorCode, Forbidden

MAX_PER_USER = 10_000

MIGRATIONS = [
    """
    CREATE TABLE mail_subscriptions (
        login  TEXT NOT NULL,
        name   TEXT NOT NULL,
        PRIMARY KEY (login, name)
    ) WITHOUT ROWID;
    CREATE TABLE mail_subscription_seeded (login TEXT PRIMARY KEY);
    """,
]


class Subscriptions:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("mail_subscriptions", MIGRATIONS)
        self._seeded: set[str] = set()

    async def seed(self, login: str) -> None:
        """Once per login: the subscriptions it had as a mailbox column."""
        if login in self._seeded:
            return

        def run(c: sqlite3.Connection) -> None:
            with transaction(c):
                if c.execute("SELECT 1 FROM mail_subscription_seeded WHERE login = ?",
                             (login,)).fetchone():
                    return
                c.execute("INSERT INTO mail_subscriptions SELECT login, name FROM mail_mailboxes "
                          "WHERE login = ? AND subscribed = 1", (login,))
                c.execute("INSERT INTO mail_subscription_seeded VALUES (?)", (login,))
        await self.db.run(run)
        self._seeded.add(login)

    async def change(self, login: str, name: str, on: bool) -> None:
        def run(c: sqlite3.Connection) -> None:
            with transaction(c):
                if not on:
                    c.execute("DELETE FROM mail_subscriptions WHERE login = ? AND name = ?",
                              (login, name))
                    return
                count = c.execute("SELECT COUNT(*) FROM mail_subscriptions WHERE login = ?",
                                  (login,)).fetchone()[0]
                if count >= MAX_PER_USER:
                    raise Forbidden(f"more than {MAX_PER_USER} subscriptions", code=ErrorCode.LIMIT)
                c.execute("INSERT OR IGNORE INTO mail_subscriptions VALUES (?, ?)",
                          (login, name))
        await self.seed(login)
        await self.db.run(run)

    async def names(self, login: str) -> set[str]:
        await self.seed(login)
        rows = await self.db.run(lambda c: c.execute(
            "SELECT name FROM mail_subscriptions WHERE login = ?", (login,)).fetchall())
        return {str(r[0]) for r in rows}
