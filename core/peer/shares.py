"""``share.notify``: telling grantees about a share, and remembering what others share with us.

Why a notification at all: grants live on the owner's twin, so without one a
grantee only learns about a share by asking for it. With it, the grantee's
twin keeps a "twin X shares path P with me" record and can show ``X`` under
``/dav/shared/`` before anyone asked anything.

Sender side (``notify``): called by ``twin share`` and ``twin unshare`` after
the grant changed. The recipients are the twin named, or the members of the
circle named *now* (later changes to the circle are not announced); a public
grant announces nothing (there is nobody to tell). The envelope goes through
the durable outbox, so a grantee that is down hears about it later.

Receiver side (``SharedWithMe``): the handler upserts or revokes one record
per (sender, path). The sender is the envelope's verified sender, never a
name in the payload. Envelopes may arrive out of order (retries), so each
carries the time of the change and an older one never overwrites a newer
one; this also makes the handler idempotent. The record only says where to
look: every listing and read still goes to the owner, whose ACL decides.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.acl import RIGHTS, normalize
from core.contacts import check_name
from core.errors import Invalid, NotFound, TwinError
from phonebook.record import TwinRecord

if TYPE_CHECKING:
    from core.contacts import Contacts
    from core.db import Database
    from core.peer.peer import Peer

log = logging.getLogger("twin.peer.shares")
KIND = "share.notify"
MAX_PATHS_PER_TWIN = 1000
MAX_TWINS = 10_000
MAX_SKEW = 24 * 3600.0  # a change stamped further in the future than this is refused

MIGRATIONS = [
    """
    CREATE TABLE shared_with_me (
        twin    TEXT NOT NULL,
        path    TEXT NOT NULL,
        rights  TEXT NOT NULL,
        at      REAL NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (twin, path)
    );
    """,
]


@dataclass(frozen=True)
class Incoming:
    """One thing another twin told us it shares with us."""

    twin: str
    path: str
    rights: tuple[str, ...]
    at: float


class SharedWithMe:
    """The receiving side: records kept in twin.db, and the ``share.notify`` handler."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.generation = 0  # bumped on every change: lets caches of listings drop at once
        db.migrate("peer.shares", MIGRATIONS)

    def install(self, peer: Peer) -> None:
        peer.register(KIND, self.on_notify)

    async def twins(self) -> list[str]:
        """Twins that currently share at least one path with us, sorted."""
        return await self.db.run(lambda c: [r[0] for r in c.execute(
            "SELECT DISTINCT twin FROM shared_with_me WHERE revoked = 0 ORDER BY twin "
            "LIMIT ?", (MAX_TWINS,))])

    async def paths(self, twin: str) -> list[Incoming]:
        rows = await self.db.run(lambda c: c.execute(
            "SELECT twin, path, rights, at FROM shared_with_me WHERE twin = ? AND revoked = 0 "
            "ORDER BY path", (twin,)).fetchall())
        return [Incoming(t, p, tuple(r.split(",")), a) for t, p, r, a in rows]

    # The handler of share.notify (core.peer.kinds): payload
    # {"path": str, "rights": [str], "revoked": bool, "at": float}.
    async def on_notify(self, record: TwinRecord, value: Any) -> dict[str, Any]:
        path, rights, revoked, at = _payload(value)
        changed = await self.db.run(_apply, record.name, path, rights, revoked, at)
        if changed:
            self.generation += 1
        log.info("%s %s %s with us%s", record.name, "revoked" if revoked else "shares", path,
                 "" if changed else " (already known)")
        return {"recorded": True}


def _payload(value: Any) -> tuple[str, tuple[str, ...], bool, float]:
    if not isinstance(value, dict):
        raise Invalid("share.notify needs a map")
    path, rights, revoked, at = (value.get(k) for k in ("path", "rights", "revoked", "at"))
    if not isinstance(path, str) or not isinstance(revoked, bool) \
            or not isinstance(at, int | float) or isinstance(at, bool):
        raise Invalid("share.notify needs path (str), revoked (bool) and at (number)")
    if not isinstance(rights, list) or len(rights) > len(RIGHTS) \
            or any(r not in RIGHTS for r in rights):
        raise Invalid(f"share.notify rights must be a subset of {', '.join(RIGHTS)}")
    if at > time.time() + MAX_SKEW:
        raise Invalid("share.notify is stamped in the future")
    return normalize(path), tuple(r for r in RIGHTS if r in rights), revoked, float(at)


def _apply(c: sqlite3.Connection, twin: str, path: str, rights: tuple[str, ...],
           revoked: bool, at: float) -> bool:
    """Upsert unless a newer change is already recorded; True if something changed."""
    row = c.execute("SELECT at FROM shared_with_me WHERE twin = ? AND path = ?",
                    (twin, path)).fetchone()
    if row is not None and row[0] > at:
        return False
    if row is None and not revoked:
        count = c.execute("SELECT COUNT(*) FROM shared_with_me WHERE twin = ?",
                          (twin,)).fetchone()[0]
        if count >= MAX_PATHS_PER_TWIN:
            raise Invalid(f"more than {MAX_PATHS_PER_TWIN} shares recorded from {twin}")
        if not c.execute("SELECT 1 FROM shared_with_me WHERE twin = ?", (twin,)).fetchone() \
                and c.execute("SELECT COUNT(DISTINCT twin) FROM shared_with_me")\
                .fetchone()[0] >= MAX_TWINS:
            raise Invalid(f"shares from more than {MAX_TWINS} twins recorded")
    c.execute("INSERT OR REPLACE INTO shared_with_me VALUES (?, ?, ?, ?, ?)",
              (twin, path, ",".join(rights), at, int(revoked)))
    return True


async def recipients(contacts: Contacts, grantee: str) -> list[str]:
    """The twins a grant to ``grantee`` reaches now (``public``: none we could name)."""
    grantee = grantee.strip().lower()
    if grantee == "public" or grantee.startswith("user:"):  # user: a local login, no twin
        return []
    name = grantee.removeprefix("circle:")
    if grantee.startswith("circle:") or await contacts.is_circle(check_name(name)):
        members: list[str] = (await contacts.circles()).get(name, [])
        return sorted(members)
    return [check_name(name)]


async def notify(contacts: Contacts, peer: Peer, path: str, grantee: str,
                 rights: tuple[str, ...], *, revoked: bool = False
                 ) -> tuple[list[str], list[str]]:
    """Queue ``share.notify`` for every twin ``grantee`` reaches.

    Returns (queued, failed) twin names. A grantee that cannot be queued (not
    in the phonebook) does not undo the grant: the grant is the truth, the
    notification a courtesy.
    """
    payload = {"path": normalize(path), "rights": list(rights), "revoked": revoked,
               "at": time.time()}
    queued: list[str] = []
    failed: list[str] = []
    try:
        names = await recipients(contacts, grantee)
    except (Invalid, NotFound) as exc:
        log.warning("cannot tell %s about %s: %s", grantee, path, exc)
        return [], [grantee]
    for name in names:
        try:
            await peer.send(name, KIND, payload)
            queued.append(name)
        except TwinError as exc:
            log.warning("cannot tell %s about %s: %s", name, path, exc)
            failed.append(name)
    return queued, failed
