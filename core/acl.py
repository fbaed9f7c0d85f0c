"""Access control: grants over paths, and the one ``Access`` helper that checks them.

A grant is ``(path, grantee, rights, until)``: ``path`` is an object path
("/photos/a.jpg") or, ending in "/", a prefix ("/photos/" covers everything
below it); the grantee is one twin, a circle (checked against its members at
the moment of the request), ``public`` (every twin that passes envelope
verification) or ``user:LOGIN`` (one of this twin's own logins other than
the owner's, over WebDAV; ``public`` and twin grants never reach a login,
and a user grant never reaches a twin); rights are a subset of read, write,
share; ``until`` is an optional expiry.

Local owner sessions (``Principal.OWNER``) pass every check. A remote
request is checked for the *verified* sender of its envelope, never for a
name the request claims. Nothing is cached: every check reads the grants and
circle members from twin.db, so a revoke takes effect on the next request.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass

from core.contacts import Contacts, check_name
from core.db import Database, transaction
from core.errors import Forbidden, Invalid, NotFound
from core.users import normalize_login

log = logging.getLogger("twin.acl")
RIGHTS = ("read", "write", "share")
GRANTEE_KINDS = ("twin", "circle", "public", "user")
MAX_PATH = 1024

MIGRATIONS = [
    """
    CREATE TABLE grants (
        path    TEXT NOT NULL,
        kind    TEXT NOT NULL CHECK (kind IN ('twin', 'circle', 'public')),
        grantee TEXT NOT NULL,
        rights  TEXT NOT NULL,
        until   REAL,
        created REAL NOT NULL,
        PRIMARY KEY (path, kind, grantee)
    );
    """,
    # user:LOGIN grants (#15.8): SQLite cannot change a CHECK, so the table is rebuilt
    """
    CREATE TABLE grants_new (
        path    TEXT NOT NULL,
        kind    TEXT NOT NULL CHECK (kind IN ('twin', 'circle', 'public', 'user')),
        grantee TEXT NOT NULL,
        rights  TEXT NOT NULL,
        until   REAL,
        created REAL NOT NULL,
        PRIMARY KEY (path, kind, grantee)
    );
    INSERT INTO grants_new SELECT path, kind, grantee, rights, until, created FROM grants;
    DROP TABLE grants;
    ALTER TABLE grants_new RENAME TO grants;
    """,
]


def normalize(path: str) -> str:
    """An absolute path without '.', '..', empty segments or control characters.

    A trailing "/" is kept: it is what makes a grant a prefix grant.
    """
    if not isinstance(path, str) or not path.startswith("/") or len(path) > MAX_PATH:
        raise Invalid(f"bad path {path!r:.80}: must be absolute, at most {MAX_PATH} characters")
    if any(ord(ch) < 32 or ch == "\x7f" for ch in path):
        raise Invalid("bad path: control characters")
    parts = path[1:].split("/")
    inner = parts[:-1] if parts[-1] == "" else parts
    if any(p in ("", ".", "..") for p in inner):
        raise Invalid(f"bad path {path!r:.80}: empty, '.' or '..' segment")
    return path


def as_dir(path: str) -> str:
    return path if path.endswith("/") else path + "/"


@dataclass(frozen=True)
class Principal:
    """Who asks: the owner (local session), a verified remote twin, or another local login.

    A login other than the owner's (``twin mail users add``) is a ``local``
    principal: it holds on the owner's files only what ``user:LOGIN`` grants give it.
    """

    twin: str | None
    login: str | None = None

    @property
    def is_owner(self) -> bool:
        return self.twin is None and self.login is None

    @classmethod
    def remote(cls, name: str) -> Principal:
        return cls(name)

    @classmethod
    def local(cls, login: str) -> Principal:
        return cls(None, login)

    def __str__(self) -> str:
        if self.login is not None:
            return f"user:{self.login}"
        return "owner" if self.twin is None else self.twin


OWNER = Principal(None)


@dataclass(frozen=True)
class Grant:
    path: str
    kind: str
    grantee: str
    rights: tuple[str, ...]
    until: float | None
    created: float

    @property
    def who(self) -> str:
        if self.kind in ("circle", "user"):
            return f"{self.kind}:{self.grantee}"
        return "public" if self.kind == "public" else self.grantee

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "grantee": self.who, "rights": list(self.rights),
                "until": self.until}


def parse_rights(text: str) -> tuple[str, ...]:
    """'r', 'rw', 'rws' or 'read,write' -> ('read', 'write')."""
    letters = {"r": "read", "w": "write", "s": "share"}
    words = text.split(",") if "," in text or text in RIGHTS else list(text)
    out = set()
    for word in words:
        right = letters.get(word.strip(), word.strip())
        if right not in RIGHTS:
            raise Invalid(f"unknown right {word!r} (read, write, share or r, w, s)")
        out.add(right)
    if not out:
        raise Invalid("no rights given")
    return tuple(r for r in RIGHTS if r in out)


_COVERS = """
    (g.path = :path OR (substr(g.path, -1) = '/' AND substr(:path, 1, length(g.path)) = g.path))
"""
# A twin (:twin set, :login NULL) is reached by public, twin and circle grants; a
# local login (:login set, :twin NULL) by its user grant only.
_GRANTEE = """
    ((:twin IS NOT NULL AND
      (g.kind = 'public'
       OR (g.kind = 'twin' AND g.grantee = :twin)
       OR (g.kind = 'circle' AND EXISTS (SELECT 1 FROM circle_members m
                                        WHERE m.circle = g.grantee AND m.member = :twin))))
     OR (g.kind = 'user' AND g.grantee = :login))
"""
_LIVE = "instr(g.rights, :right) > 0 AND (g.until IS NULL OR g.until > :now)"
# Built from the constant fragments above only; every value is a bound parameter.
_ALLOWED = f"SELECT 1 FROM grants g WHERE {_LIVE} AND {_COVERS} AND {_GRANTEE} LIMIT 1"  # noqa: S608
_BELOW = (f"SELECT 1 FROM grants g WHERE {_LIVE} AND {_GRANTEE} AND "  # noqa: S608
          "substr(g.path, 1, length(:prefix)) = :prefix LIMIT 1")


class Access:
    """Every access decision of the twin goes through here."""

    def __init__(self, db: Database, contacts: Contacts) -> None:
        self.db = db
        self.contacts = contacts  # its tables are read by the checks below
        db.migrate("acl", MIGRATIONS)

    async def allowed(self, who: Principal, path: str, right: str) -> bool:
        if right not in RIGHTS:
            raise ValueError(right)
        path = normalize(path)
        if who.is_owner:
            return True
        args = {"path": path, "twin": who.twin, "login": who.login, "right": right,
                "now": time.time()}
        return await self.db.run(lambda c: c.execute(_ALLOWED, args).fetchone() is not None)

    async def check(self, who: Principal, path: str, right: str) -> None:
        """Raise Forbidden unless ``who`` holds ``right`` on ``path``."""
        if not await self.allowed(who, path, right):
            log.info("access refused: %s wants %s on %s", who, right, path)
            raise Forbidden(f"{who} has no {right} right on {path}")

    async def reaches_below(self, who: Principal, prefix: str, right: str = "read") -> bool:
        """Does ``who`` hold ``right`` on anything at or below ``prefix``?

        Lets a listing show a directory that leads to something shared even
        when the directory itself is not.
        """
        prefix = as_dir(normalize(prefix))
        if who.is_owner:
            return True
        args = {"prefix": prefix, "twin": who.twin, "login": who.login, "right": right,
                "now": time.time()}
        return await self.db.run(lambda c: c.execute(_BELOW, args).fetchone() is not None)

    # -- administration (owner only: the CLI and local sessions)

    async def grant(self, path: str, grantee: str, rights: tuple[str, ...],
                    until: float | None = None) -> Grant:
        """``grantee``: 'public', 'circle:NAME', 'user:LOGIN', or a twin or circle name."""
        path = normalize(path)
        kind, name = await self._grantee(grantee)
        rights = tuple(r for r in RIGHTS if r in rights)
        if not rights:
            raise Invalid("a grant needs at least one right")
        if until is not None and until <= time.time():
            raise Invalid("the grant would already have expired")
        g = Grant(path, kind, name, rights, until, time.time())
        await self.db.run(lambda c: c.execute(
            "INSERT OR REPLACE INTO grants VALUES (?, ?, ?, ?, ?, ?)",
            (g.path, g.kind, g.grantee, ",".join(g.rights), g.until, g.created)))
        log.info("granted %s on %s to %s", ",".join(rights), path, g.who)
        return g

    async def revoke(self, path: str, grantee: str) -> list[str]:
        """Remove ``grantee``'s grant on ``path``; for a prefix (``/photos/``) also every
        grant below it (``/photos/holiday.jpg``), so a revoked folder keeps no file
        shared. Returns the paths revoked; NotFound when there were none."""
        path = normalize(path)
        kind, name = await self._grantee(grantee)

        def run(c: sqlite3.Connection) -> list[str]:
            with transaction(c):
                prefix = path if path.endswith("/") else None  # a file path: that grant only
                paths = [p for (p,) in c.execute(
                    "SELECT path FROM grants WHERE kind = ? AND grantee = ? AND (path = ? OR "
                    "substr(path, 1, length(?)) = ?) ORDER BY path",
                    (kind, name, path, prefix, prefix))]
                c.executemany("DELETE FROM grants WHERE path = ? AND kind = ? AND grantee = ?",
                              [(p, kind, name) for p in paths])
                return paths
        revoked = await self.db.run(run)
        if not revoked:
            raise NotFound(f"no grant on {path} to {grantee}")
        log.info("revoked grant(s) on %s to %s", ", ".join(revoked), grantee)
        return revoked

    async def grants(self, path: str | None = None, *, under: str | None = None
                     ) -> list[Grant]:
        """Every grant; or those on ``path``; or (``under``) on that prefix and below."""
        def run(conn: sqlite3.Connection) -> list[Grant]:
            rows = conn.execute(
                "SELECT path, kind, grantee, rights, until, created FROM grants "
                "WHERE (? IS NULL OR path = ?) AND (? IS NULL OR substr(path, 1, length(?)) = ?) "
                "ORDER BY path, kind, grantee", (path, path, under, under, under))
            return [Grant(p, k, g, tuple(r.split(",")), u, c) for p, k, g, r, u, c in rows]
        return await self.db.run(run)

    async def _grantee(self, grantee: str) -> tuple[str, str]:
        grantee = grantee.strip().lower()
        if grantee == "public":
            return "public", ""
        if grantee.startswith("user:"):
            login = normalize_login(grantee.removeprefix("user:"))
            if "@" not in login or len(login) > 254 or any(ord(c) < 33 for c in login):
                raise Invalid(f"user:{login!r:.80} is not a login (a mail address)")
            return "user", login
        if grantee.startswith("circle:"):
            name = check_name(grantee.removeprefix("circle:"), "circle")
            if not await self.contacts.is_circle(name):
                raise NotFound(f"no circle {name!r}")
            return "circle", name
        name = check_name(grantee)
        return ("circle", name) if await self.contacts.is_circle(name) else ("twin", name)
