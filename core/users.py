"""Logins and app passwords.

A login is the owner's mail address. Each login has one or more *app
passwords* (one per device, revocable), stored only as Argon2id hashes
(argon2-cffi's RFC 9106 defaults). Verifying Argon2id costs tens of
milliseconds and 64 MiB by design, so:

- verification runs in a thread, never on the event loop;
- a successful (login, password) pair is remembered for a few minutes as an
  HMAC under a per-process random key, so a WebDAV client that sends Basic
  auth on every request does not pay Argon2 every time;
- failures are throttled per (login, client address) with an exponential delay,
  shared by SMTP, IMAP and WebDAV (``Throttle``).

Passwords never reach a log line; only the login and the outcome do.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import sqlite3
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.db import Database
from core.errors import Conflict, Invalid, NotFound

log = logging.getLogger("twin.auth")
MIGRATIONS = [
    """
    CREATE TABLE users (
        login    TEXT PRIMARY KEY,
        created  REAL NOT NULL
    );
    CREATE TABLE app_passwords (
        id       INTEGER PRIMARY KEY,
        login    TEXT NOT NULL REFERENCES users(login) ON DELETE CASCADE,
        label    TEXT NOT NULL,
        hash     TEXT NOT NULL,
        created  REAL NOT NULL,
        UNIQUE (login, label)
    );
    CREATE TABLE aliases (
        address  TEXT PRIMARY KEY,
        login    TEXT NOT NULL REFERENCES users(login) ON DELETE CASCADE
    );
    """,
]
MAX_PASSWORD = 1024
CACHE_SECONDS = 300.0


def generate_password() -> str:
    """A 4x4 app password like ``k3vq-9xtm-...``: easy to type, 80 bits."""
    alphabet = "abcdefghijkmnpqrstuvwxyz23456789"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(4))


@dataclass(frozen=True)
class User:
    login: str
    addresses: tuple[str, ...]


class Users:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("users", MIGRATIONS)
        self._hasher = PasswordHasher()
        self._cache_key = secrets.token_bytes(32)
        self._cache: dict[bytes, float] = {}

    # -- administration (CLI, init); synchronous

    def add(self, login: str) -> User:
        login = login.strip().lower()
        if "@" not in login or len(login) > 254:
            raise Invalid(f"a login is a mail address, not {login!r}")
        try:
            self.db.run_sync(lambda c: c.execute("INSERT INTO users VALUES (?, ?)",
                                                 (login, time.time())))
        except sqlite3.IntegrityError:
            raise Conflict(f"user {login} exists") from None
        return User(login, (login,))

    def set_password(self, login: str, label: str = "default") -> str:
        """Create (or replace) the app password ``label``; returns it in clear once."""
        password = generate_password()
        digest = self._hasher.hash(password)

        def store(c: sqlite3.Connection) -> None:
            if not c.execute("SELECT 1 FROM users WHERE login = ?", (login,)).fetchone():
                raise NotFound(f"no user {login}")
            c.execute("INSERT OR REPLACE INTO app_passwords (login, label, hash, created) "
                      "VALUES (?, ?, ?, ?)", (login, label, digest, time.time()))
        self.db.run_sync(store)
        self._cache.clear()
        log.info("app password %r set for %s", label, login)
        return password

    def revoke(self, login: str, label: str) -> None:
        n = self.db.run_sync(lambda c: c.execute(
            "DELETE FROM app_passwords WHERE login = ? AND label = ?", (login, label)).rowcount)
        if not n:
            raise NotFound(f"{login} has no app password {label!r}")
        self._cache.clear()

    def all(self) -> list[User]:
        rows = self.db.run_sync(lambda c: c.execute(
            "SELECT u.login, a.address FROM users u LEFT JOIN aliases a ON a.login = u.login "
            "ORDER BY u.login").fetchall())
        out: dict[str, list[str]] = {}
        for login, alias in rows:
            out.setdefault(login, [login])
            if alias:
                out[login].append(alias)
        return [User(k, tuple(v)) for k, v in out.items()]

    def add_alias(self, address: str, login: str) -> None:
        try:
            self.db.run_sync(lambda c: c.execute("INSERT INTO aliases VALUES (?, ?)",
                                                 (address.lower(), login)))
        except sqlite3.IntegrityError:
            raise Conflict(f"{address} is taken or {login} does not exist") from None

    def owner_of(self, address: str) -> str | None:
        """The login that receives mail for ``address``, if any (sync, cheap)."""
        address = address.lower()
        row = self.db.run_sync(lambda c: c.execute(
            "SELECT login FROM users WHERE login = ? UNION "
            "SELECT login FROM aliases WHERE address = ?", (address, address)).fetchone())
        return str(row[0]) if row else None

    # -- authentication (adapters); async

    async def authenticate(self, login: str, password: str) -> bool:
        login = login.strip().lower()
        if not login or not password or len(password) > MAX_PASSWORD or len(login) > 254:
            return False
        token = hmac.new(self._cache_key, f"{login}\0{password}".encode(),
                         hashlib.sha256).digest()
        expires = self._cache.get(token)
        if expires and expires > time.monotonic():
            return True
        hashes = await self.db.run(lambda c: [r[0] for r in c.execute(
            "SELECT hash FROM app_passwords WHERE login = ?", (login,))])
        ok = await asyncio.to_thread(self._check, hashes, password)
        if ok:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = time.monotonic() + CACHE_SECONDS
        return ok

    def _check(self, hashes: list[str], password: str) -> bool:
        if not hashes:  # spend the same time as a real check: no user enumeration
            hashes = [self._hasher.hash(secrets.token_hex(8))]
            found = False
        else:
            found = True
        ok = False
        for h in hashes:
            try:
                ok = self._hasher.verify(h, password) or ok
            except (VerificationError, InvalidHashError):
                continue
        return ok and found


class Throttle:
    """Exponential delay after failed logins, per (login, peer address).

    The delay doubles with each failure (1 s, 2 s, 4 s ... capped at 60 s) and
    is forgotten after a success or after ``window`` seconds of quiet. Callers
    await ``before_attempt`` and report the outcome with ``record``.
    """

    def __init__(self, base: float = 1.0, cap: float = 60.0, window: float = 900.0) -> None:
        self.base, self.cap, self.window = base, cap, window
        self._fails: dict[tuple[str, str], tuple[int, float]] = {}

    def delay(self, login: str, peer: str) -> float:
        count, last = self._fails.get((login.lower(), peer), (0, 0.0))
        if not count or time.monotonic() - last > self.window:
            return 0.0
        return float(min(self.cap, self.base * 2 ** (count - 1)))

    async def before_attempt(self, login: str, peer: str) -> None:
        wait = self.delay(login, peer)
        if wait:
            await asyncio.sleep(wait)

    def record(self, login: str, peer: str, ok: bool) -> None:
        key = (login.lower(), peer)
        if ok:
            self._fails.pop(key, None)
            return
        count, _ = self._fails.get(key, (0, 0.0))
        self._fails[key] = (count + 1, time.monotonic())
        log.warning("failed login for %s from %s (%d in a row)", login, peer, count + 1)
        if len(self._fails) > 100_000:
            self._fails.clear()
