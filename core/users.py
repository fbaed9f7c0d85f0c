"""Logins, their roles and app passwords.

A login is a mail address. Its role is ``owner`` (the login ``twin init``
made: everything) or ``user`` (``twin mail users add``: its own mail, and
on the owner's files only what ``user:LOGIN`` grants give it; #15.8). Each
login has one or more *app passwords* (one per device, revocable), stored
only as Argon2id hashes (argon2-cffi's RFC 9106 defaults). Verifying Argon2id costs tens of
milliseconds and 64 MiB by design, so:

- verification runs in a thread, never on the event loop;
- a successful (login, password) pair is remembered for a few minutes as an
  HMAC under a per-process random key, so a WebDAV client that sends Basic
  auth on every request does not pay Argon2 every time;
- failures are throttled per login and per client address with an exponential
  delay, shared by SMTP, IMAP and WebDAV (``Throttle``, through ``Users.login``).

Passwords never reach a log line; only the login and the outcome do.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import secrets
import sqlite3
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import nacl.exceptions
import nacl.pwhash
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.db import Database, transaction
from core.errors import Conflict, ErrorCode, Forbidden, Invalid, NotFound, Unavailable
from core.net import is_loopback

log = logging.getLogger("twin.auth")
# The hash of 32 random bytes nobody kept (argon2-cffi's defaults, as app passwords
# are hashed): what an unknown login is verified against (``Users._check``).
DUMMY_HASH = ("$argon2id$v=19$m=65536,t=3,p=4$UMmLIb0NUC91vCeJ3GEuMA"
              "$aDqWeGd7XNCy4CnWEskAEJEs5O5DztAtC41pbMSE+cI")
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
    # roles (#15.8): the owner has everything, a user its own mail and what it is granted.
    # The first login of a twin is the one `twin init` made: the owner.
    """
    ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'user'
        CHECK (role IN ('owner', 'user'));
    UPDATE users SET role = 'owner'
        WHERE login = (SELECT login FROM users ORDER BY created, login LIMIT 1);
    """,
]
ROLES = ("owner", "user")
MAX_PASSWORD = 1024
CACHE_SECONDS = 300.0
T = TypeVar("T")


def generate_password() -> str:
    """A 4x4 app password like ``k3vq-9xtm-...``: easy to type, 80 bits."""
    alphabet = "abcdefghijkmnpqrstuvwxyz23456789"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(4))


@dataclass(frozen=True)
class User:
    login: str
    addresses: tuple[str, ...]
    role: str = "user"


@dataclass(frozen=True)
class AppPassword:
    """One app password as the owner may see it: whose, its label, when it was made."""

    login: str
    label: str
    created: float


class Users:
    def __init__(self, db: Database, throttle: Throttle | None = None) -> None:
        self.db = db
        self.throttle = throttle or Throttle()  # failed logins, across every adapter
        db.migrate("users", MIGRATIONS)
        self._hasher = PasswordHasher()
        self._cache_key = secrets.token_bytes(32)
        self._cache: dict[bytes, tuple[float, str]] = {}  # token -> (until, hash)
        self._dummy: str | None = None  # the hash an unknown login is checked against
        self._owners = self._load_owners()

    # -- roles

    def _load_owners(self) -> frozenset[str]:
        return frozenset(r[0] for r in self.db.run_sync(lambda c: c.execute(
            "SELECT login FROM users WHERE role = 'owner'").fetchall()))

    def is_owner(self, login: str) -> bool:
        """Whether ``login`` is the owner's (no database access: the set is kept in memory).

        Only ``twin init`` and a restore make an owner, both before the twin
        serves, so the set read when the service opens stays true while it runs.
        """
        return login in self._owners

    def make_owner(self, login: str) -> None:
        login = normalize_login(login)
        n = self.db.run_sync(lambda c: c.execute(
            "UPDATE users SET role = 'owner' WHERE login = ?", (login,)).rowcount)
        if not n:
            raise NotFound(f"no user {login}")
        self._owners = self._load_owners()
        log.info("%s is an owner login", login)

    # -- administration (CLI, init); synchronous

    def add(self, login: str, role: str = "user") -> User:
        login = normalize_login(login)
        if "@" not in login or len(login) > 254:
            raise Invalid(f"a login is a mail address, not {login!r}")
        if role not in ROLES:
            raise Invalid(f"a role is one of {', '.join(ROLES)}, not {role!r}")
        try:
            self.db.run_sync(lambda c: c.execute(
                "INSERT INTO users (login, created, role) VALUES (?, ?, ?)",
                (login, time.time(), role)))
        except sqlite3.IntegrityError:
            raise Conflict(f"user {login} exists") from None
        self._owners = self._load_owners()
        return User(login, (login,), role)

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

    def passwords(self, login: str | None = None) -> list[AppPassword]:
        """The app passwords (labels and when they were made, never the hash) of
        ``login``, or of every login."""
        rows = self.db.run_sync(lambda c: c.execute(
            "SELECT login, label, created FROM app_passwords WHERE ? IS NULL OR login = ? "
            "ORDER BY login, label", (login, login)).fetchall())
        return [AppPassword(r[0], r[1], r[2]) for r in rows]

    def remove(self, login: str) -> None:
        """Remove a user, its aliases and app passwords (never the owner). Its mail the
        caller checks first: the mailboxes are not this module's."""
        login = normalize_login(login)
        if self.is_owner(login):
            raise Forbidden(f"{login} is the owner's login and cannot be removed")

        def drop(c: sqlite3.Connection) -> int:
            with transaction(c):
                c.execute("DELETE FROM aliases WHERE login = ?", (login,))
                c.execute("DELETE FROM app_passwords WHERE login = ?", (login,))
                return int(c.execute("DELETE FROM users WHERE login = ?", (login,)).rowcount)
        if not self.db.run_sync(drop):
            raise NotFound(f"no user {login}")
        self._cache.clear()
        log.info("user %s removed", login)

    def remove_alias(self, address: str) -> str:
        """Remove an alias; returns the login it led to."""
        address = address.strip().lower()

        def drop(c: sqlite3.Connection) -> str | None:
            rows = c.execute("DELETE FROM aliases WHERE address = ? RETURNING login",
                             (address,)).fetchall()
            return str(rows[0][0]) if rows else None
        login = self.db.run_sync(drop)
        if login is None:
            raise NotFound(f"no alias {address}")
        return str(login)

    def revoke(self, login: str, label: str) -> None:
        n = self.db.run_sync(lambda c: c.execute(
            "DELETE FROM app_passwords WHERE login = ? AND label = ?", (login, label)).rowcount)
        if not n:
            raise NotFound(f"{login} has no app password {label!r}")
        self._cache.clear()

    def all(self) -> list[User]:
        rows = self.db.run_sync(lambda c: c.execute(
            "SELECT u.login, u.role, a.address FROM users u "
            "LEFT JOIN aliases a ON a.login = u.login ORDER BY u.login").fetchall())
        out: dict[str, list[str]] = {}
        roles: dict[str, str] = {}
        for login, role, alias in rows:
            out.setdefault(login, [login])
            roles[login] = role
            if alias:
                out[login].append(alias)
        return [User(k, tuple(v), roles[k]) for k, v in out.items()]

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
        ok, _ = await self._authenticate(login, password, None)
        return ok

    async def _authenticate(self, login: str, password: str,
                            also: Callable[[sqlite3.Connection], T] | None
                            ) -> tuple[bool, T | None]:
        """``authenticate``, and ``also(conn)`` run in the same database call (see
        ``login_with``); its result is None when the credentials are refused unread."""
        login = normalize_login(login)
        if not login or not password or len(password) > MAX_PASSWORD or len(login) > 254:
            return False, None

        def read(c: sqlite3.Connection) -> tuple[list[str], T | None]:
            hashes = [r[0] for r in c.execute(
                "SELECT hash FROM app_passwords WHERE login = ?", (login,))]
            return hashes, also(c) if also is not None else None

        token = hmac.new(self._cache_key, f"{login}\0{password}".encode(),
                         hashlib.sha256).digest()
        hashes, extra = await self.db.run(read)
        # a hit counts only while the hash it matched is still stored: a password
        # revoked or replaced from the CLI (another process) stops working at once,
        # not when the running twin's entry expires (it did, for 300 s)
        hit = self._cache.get(token)
        if hit and hit[0] > time.monotonic() and hit[1] in hashes:
            return True, extra
        matched = await asyncio.to_thread(self._check, hashes, password)
        if matched is not None:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = (time.monotonic() + CACHE_SECONDS, matched)
        return matched is not None, extra

    def _check(self, hashes: list[str], password: str) -> str | None:
        """Argon2 verification: the hash ``password`` matches, if any; an unknown login
        costs one verify, as a known one does.

        An unknown login is verified against ``DUMMY_HASH``: hashing a fresh dummy
        on every unknown login made those cost a hash *and* a verify, twice a
        known user's time, which told a guesser which logins exist (#15.10).
        It is a constant, not made at the first check, because making it there
        cost the first login after every start an extra hash (a 100,000-message
        mailbox's cold new session: LOGIN 0.41 s against Dovecot's 0.14 s). Only
        if the hasher's parameters no longer match it (a newer argon2-cffi) is a
        dummy made once, so its cost stays a real hash's.
        """
        if self._dummy is None:
            self._dummy = DUMMY_HASH if not self._hasher.check_needs_rehash(DUMMY_HASH) \
                else self._hasher.hash(secrets.token_hex(16))
        matched = None
        for h in hashes or [self._dummy]:
            if self._verify(h, password) and hashes:
                matched = h
        return matched

    def _verify(self, stored: str, password: str) -> bool:
        """Whether ``password`` matches the Argon2 hash ``stored``.

        Argon2id hashes are verified by libsodium (PyNaCl, already the twin's
        cryptography): the same function over the same parameters as
        argon2-cffi, in 115-120 ms of CPU where argon2-cffi's bundled code
        takes 180-200 ms (RFC 9106 defaults, this machine). A login's CPU is
        mostly this, and a client opening several connections at once pays it
        for each. Any other variant goes to argon2-cffi."""
        # a password a client sent as bytes that are not UTF-8 reaches here with
        # surrogate escapes: those bytes are what is compared, never an error
        secret = password.encode("utf-8", "surrogateescape")
        if stored.startswith("$argon2id$"):
            try:
                return bool(nacl.pwhash.argon2id.verify(stored.encode(), secret))
            except nacl.exceptions.InvalidkeyError:
                return False
        try:
            return self._hasher.verify(stored, secret)
        except (VerificationError, InvalidHashError):
            return False

    async def login(self, raw_login: str, password: str, peer: str) -> str | None:
        """The one login check of every adapter: normalised once, throttled, then Argon2.

        Returns the login, or None for wrong credentials; raises ``Throttled``
        (without checking anything) when this login or address must wait longer
        than ``Throttle.max_wait``, so the client is told why instead of hanging.
        """
        login, _ = await self.login_with(raw_login, password, peer, None)
        return login

    async def login_with(self, raw_login: str, password: str, peer: str,
                         also: Callable[[sqlite3.Connection], T] | None
                         ) -> tuple[str | None, T | None]:
        """``login``, with ``also(conn)`` run on the database thread in the same call
        that reads the login's password hashes; returns (login or None, its result).

        Why: a request that needs both the login and a read of its own (the WebDAV
        PUT fast path looks its target up) paid a thread hop to the database for
        each, ~0.1-0.3 ms of a 4 KiB PUT (issue 20). ``also`` runs whatever the
        credentials turn out to be: only a read belongs there, and the caller
        must not use its result unless the login is returned."""
        login = normalize_login(raw_login)
        await self.throttle.admit(login, peer)
        ok, extra = await self._authenticate(login, password, also)
        self.throttle.record(login, peer, ok)
        return (login if ok else None), extra


def normalize_login(raw: str) -> str:
    """The one spelling of a login: NFC, no surrounding white space, lower case.

    Every lookup and the throttle use it, so ``" Alice@X"`` and ``"alice@x"``
    are one login to both (#15.10: variants were throttled separately). Cut at
    255 characters: still visibly over the 254 a login may have, and a hostile
    client cannot make the throttle's keys large.
    """
    return unicodedata.normalize("NFC", raw[:1024]).strip().lower()[:255]


class Throttled(Unavailable):
    """Too many failed logins: try again in ``retry_after`` seconds (nothing was checked)."""

    code = ErrorCode.THROTTLED

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(f"too many failed logins; try again in {self.retry_after} s")


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0
    next_at: float = 0.0  # no attempt on this key may start before


class Throttle:
    """Exponential delay after failed logins, per login and per client address.

    Why both keys: per login stops many addresses guessing one password; per
    address stops one address trying many logins. The delay doubles with each
    failure of a key (1 s, 2 s, 4 s ... capped at 60 s) and is forgotten after a
    success or after ``window`` seconds of quiet. An address that logged in to
    a login before is held back only by its own failures on that login, so a
    guesser elsewhere (or a stale device behind the same NAT) cannot lock the
    owner's devices out. Loopback peers are not counted per address: behind a
    local proxy every client has that address.

    ``admit`` *reserves* the next slot of each key before it waits: parallel
    attempts queue one delay apart instead of all waiting the same delay and
    then all trying. An attempt that would wait more than ``max_wait`` is
    refused at once with ``Throttled`` and costs no Argon2.
    """

    def __init__(self, base: float = 1.0, cap: float = 60.0, window: float = 900.0,
                 max_wait: float = 2.0, remember: float = 30 * 86400.0) -> None:
        self.base, self.cap, self.window = base, cap, window
        self.max_wait, self.remember = max_wait, remember
        self._fails: dict[tuple[str, str], _Failures] = {}
        self._known: dict[tuple[str, str], float] = {}  # (login, address) -> last success

    def _keys(self, login: str, peer: str, now: float) -> list[tuple[str, str]]:
        known = self._known.get((login, peer))
        if known is not None and now - known <= self.remember:
            return [("pair", f"{login}\0{peer}")]  # only its own failures hold it back
        if is_loopback(peer):  # this machine (or a local proxy): every client shares it
            return [("login", login)]
        return [("ip", peer), ("login", login)]

    def _live(self, key: tuple[str, str], now: float) -> _Failures | None:
        f = self._fails.get(key)
        if f is None or not f.count:
            return None
        if now - f.last > self.window and now >= f.next_at:
            del self._fails[key]
            return None
        return f

    def _step(self, count: int) -> float:
        return float(min(self.cap, self.base * 2 ** (count - 1)))

    def delay(self, login: str, peer: str) -> float:
        """Seconds before an attempt for ``login`` from ``peer`` may start."""
        now = time.monotonic()
        login = normalize_login(login)
        live = [f for k in self._keys(login, peer, now) if (f := self._live(k, now))]
        return max([f.next_at - now for f in live] + [0.0])

    async def admit(self, login: str, peer: str) -> None:
        """Wait for this attempt's turn, or raise ``Throttled`` if it is too far off."""
        now = time.monotonic()
        live = [f for k in self._keys(login, peer, now) if (f := self._live(k, now))]
        start = max([f.next_at for f in live] + [now])
        if start - now > self.max_wait:
            raise Throttled(start - now)
        for f in live:  # reserve: the next attempt queues behind this one
            f.next_at = start + self._step(f.count)
        if start > now:
            await asyncio.sleep(start - now)

    async def before_attempt(self, login: str, peer: str) -> None:
        await self.admit(normalize_login(login), peer)

    def record(self, login: str, peer: str, ok: bool) -> None:
        login = normalize_login(login)
        now = time.monotonic()
        if ok:
            for key in self._keys(login, peer, now):
                self._fails.pop(key, None)
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[(login, peer)] = now
            return
        counts = []
        for key in self._keys(login, peer, now):
            f = self._live(key, now) or self._fails.setdefault(key, _Failures())
            f.count += 1
            f.last = now
            f.next_at = max(f.next_at, now + self._step(f.count))
            counts.append(f.count)
        log.warning("failed login for %s from %s (%d in a row)", login, peer, max(counts))
        if len(self._fails) > 100_000:
            self._fails = {k: f for k, f in self._fails.items() if self._live(k, now)}
            if len(self._fails) > 100_000:
                self._fails.clear()
