"""Logins: app passwords stored as Argon2id only, checked off the loop, throttled."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import argon2
import pytest
from argon2 import PasswordHasher

from core.db import Database
from core.errors import Conflict, Invalid
from core.users import Throttle, Throttled, Users, normalize_login


@pytest.fixture
def users(tmp_path: Path) -> Users:
    return Users(Database(tmp_path / "twin.db"))


async def test_app_password_is_stored_as_argon2id_and_checks(users: Users) -> None:
    users.add("alice@alice.example")
    password = users.set_password("alice@alice.example")
    stored = users.db.run_sync(lambda c: c.execute("SELECT hash FROM app_passwords").fetchone())
    assert stored[0].startswith("$argon2id$") and password not in stored[0]
    assert await users.authenticate("Alice@alice.example", password)
    assert await users.authenticate("alice@alice.example", password)  # cached path
    assert not await users.authenticate("alice@alice.example", password + "x")
    assert not await users.authenticate("nobody@alice.example", password)
    assert not await users.authenticate("alice@alice.example", "x" * 5000)


async def test_a_new_password_replaces_the_old_and_revoke_removes_it(users: Users) -> None:
    users.add("alice@alice.example")
    old = users.set_password("alice@alice.example")
    new = users.set_password("alice@alice.example")
    assert not await users.authenticate("alice@alice.example", old)
    assert await users.authenticate("alice@alice.example", new)
    users.revoke("alice@alice.example", "default")
    assert not await users.authenticate("alice@alice.example", new)


async def test_a_password_revoked_or_replaced_by_another_process_stops_at_once(
        tmp_path: Path, users: Users) -> None:
    # the running twin (users) has a good login cached; the CLI (another Users on the
    # same twin.db, as another process has) revokes or replaces it: refused at once
    users.add("alice@alice.example")
    phone = users.set_password("alice@alice.example", "phone")
    laptop = users.set_password("alice@alice.example", "laptop")
    assert await users.authenticate("alice@alice.example", phone)
    assert await users.authenticate("alice@alice.example", laptop)
    cli = Users(Database(tmp_path / "twin.db"))
    cli.revoke("alice@alice.example", "phone")
    cli.set_password("alice@alice.example", "laptop")
    assert not await users.authenticate("alice@alice.example", phone)
    assert not await users.authenticate("alice@alice.example", laptop)


def test_logins_are_addresses_and_unique(users: Users) -> None:
    users.add("alice@alice.example")
    with pytest.raises(Conflict):
        users.add("alice@alice.example")
    with pytest.raises(Invalid):
        users.add("alice")


def test_aliases_route_to_their_login(users: Users) -> None:
    users.add("alice@alice.example")
    users.add_alias("postmaster@alice.example", "alice@alice.example")
    assert users.owner_of("POSTMASTER@alice.example") == "alice@alice.example"
    assert users.owner_of("bob@alice.example") is None
    assert users.all()[0].addresses == ("alice@alice.example", "postmaster@alice.example")


async def test_failed_logins_slow_down_exponentially_and_success_resets() -> None:
    throttle = Throttle(base=0.05, cap=0.2)
    assert throttle.delay("a", "1.2.3.4") == 0
    for _ in range(3):
        throttle.record("a", "1.2.3.4", ok=False)
    assert throttle.delay("a", "1.2.3.4") == pytest.approx(0.2, abs=0.02)
    assert throttle.delay("b", "5.6.7.8") == 0  # another login from another client: free
    start = time.monotonic()
    await throttle.before_attempt("a", "1.2.3.4")
    assert time.monotonic() - start >= 0.17
    throttle.record("a", "1.2.3.4", ok=True)
    assert throttle.delay("a", "1.2.3.4") == 0


def test_login_variants_are_one_login_to_the_throttle() -> None:
    """#15.10: the raw login was the key, so " Alice@X" escaped alice@x's failures."""
    throttle = Throttle(base=10, cap=60)
    throttle.record("alice@x.example", "1.1.1.1", ok=False)
    for variant in (" Alice@X.example", "ALICE@x.example\t", "alice@x.example\r\n"):
        assert throttle.delay(variant, "2.2.2.2") > 5, variant  # another address too
    assert normalize_login(" A\u0301lice@X ") == normalize_login("\u00e1lice@x")  # NFC


def test_failures_count_per_login_and_per_address() -> None:
    throttle = Throttle(base=10, cap=60)
    for i in range(3):  # one login guessed from many addresses
        throttle.record("owner@x", f"10.0.0.{i}", ok=False)
    assert throttle.delay("owner@x", "10.9.9.9") > 30
    for i in range(3):  # one address guessing many logins
        throttle.record(f"user{i}@x", "10.1.1.1", ok=False)
    assert throttle.delay("someone-else@x", "10.1.1.1") > 30
    assert throttle.delay("someone-else@x", "10.2.2.2") == 0


def test_a_device_that_logged_in_before_is_not_locked_out_by_a_guesser() -> None:
    throttle = Throttle(base=10, cap=60)
    throttle.record("owner@x", "192.0.2.1", ok=True)  # the owner's phone
    for _ in range(5):
        throttle.record("owner@x", "203.0.113.9", ok=False)  # a guesser elsewhere
    assert throttle.delay("owner@x", "203.0.113.10") > 30
    assert throttle.delay("owner@x", "192.0.2.1") == 0


async def test_parallel_attempts_queue_instead_of_all_trying_after_one_delay() -> None:
    """#15.10: each waited the same delay and then all tried at once."""
    throttle = Throttle(base=0.2, cap=5, max_wait=0.5)
    throttle.record("a@x", "1.2.3.4", ok=False)
    results = await asyncio.gather(*(throttle.before_attempt("a@x", "1.2.3.4")
                                     for _ in range(10)), return_exceptions=True)
    admitted = [r for r in results if r is None]
    refused = [r for r in results if isinstance(r, Throttled)]
    assert 1 <= len(admitted) <= 2 and len(refused) == 10 - len(admitted)
    assert all(r.retry_after >= 1 for r in refused)


async def test_a_long_wait_is_refused_at_once_with_the_delay() -> None:
    throttle = Throttle(base=8, cap=60, max_wait=2)
    throttle.record("a@x", "1.2.3.4", ok=False)
    start = time.monotonic()
    with pytest.raises(Throttled) as info:
        await throttle.before_attempt("a@x", "1.2.3.4")
    assert time.monotonic() - start < 0.5
    assert 7 <= info.value.retry_after <= 8
    assert "try again in" in str(info.value)


class CountingHasher(PasswordHasher):
    def __init__(self) -> None:
        super().__init__()
        self.hashes = 0

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self.hashes += 1
        return super().hash(password, salt=salt)


async def test_an_unknown_login_costs_what_a_known_one_costs(users: Users) -> None:
    """#15.10: an unknown login hashed a fresh dummy *and* verified it: twice the time.
    Each login, known or not, is one Argon2id verify and no hash."""
    users.add("alice@alice.example")
    users.set_password("alice@alice.example")
    hasher = users._hasher = CountingHasher()
    verified: list[str] = []
    real = users._verify

    def counting(stored: str, password: str) -> bool:
        verified.append(stored)
        return real(stored, password)

    users._verify = counting  # type: ignore[method-assign]
    for login in ("alice@alice.example", "nobody@alice.example", "other@alice.example"):
        hasher.hashes, verified[:] = 0, []
        assert not await users.authenticate(login, "wrong guess")
        assert hasher.hashes == 0 and len(verified) == 1, login
        assert verified[0].startswith("$argon2id$v=19$m=65536,t=3,p=4$"), login


def test_libsodium_and_argon2_cffi_agree_on_every_hash() -> None:
    """Verification goes through libsodium; hashes made by argon2-cffi (every stored
    one, and the dummy) verify there exactly as in argon2-cffi, and what argon2-cffi
    refuses (another password, a damaged or foreign hash) is refused."""
    from core.users import DUMMY_HASH

    users = Users.__new__(Users)
    users._hasher = PasswordHasher()
    stored = users._hasher.hash("pässwörd 1")
    damaged = stored[:-4] + ("AAAA" if not stored.endswith("AAAA") else "BBBB")
    argon2i = PasswordHasher(type=argon2.Type.I).hash("pässwörd 1")
    for h, password, expected in ((stored, "pässwörd 1", True), (stored, "pässwörd 2", False),
                                  (stored, "", False), (damaged, "pässwörd 1", False),
                                  (DUMMY_HASH, "anything", False), ("garbage", "x", False),
                                  (argon2i, "pässwörd 1", True), (argon2i, "x", False),
                                  (stored, "p\udcc3\udca4ss", False),
                                  (argon2i, "p\udcc3\udca4ss", False)):
        assert users._verify(h, password) is expected, (h[:20], password)


def test_the_dummy_hash_is_one_of_the_hashers_own() -> None:
    """Its verify costs what a stored password's does only while its parameters are
    the hasher's: a newer argon2-cffi with other defaults makes a dummy of its own."""
    from core.users import DUMMY_HASH

    assert not PasswordHasher().check_needs_rehash(DUMMY_HASH)


def test_roles_the_first_login_of_an_old_database_becomes_the_owner(tmp_path: Path) -> None:
    """#15.8: databases made before roles existed: the init login (the first) is the owner."""
    from core.users import MIGRATIONS

    db = Database(tmp_path / "twin.db")
    db.migrate("users", MIGRATIONS[:1])
    db.run_sync(lambda c: c.executemany("INSERT INTO users VALUES (?, ?)", [
        ("alice@a.test", 1.0), ("bob@a.test", 2.0)]))
    users = Users(db)
    assert users.is_owner("alice@a.test") and not users.is_owner("bob@a.test")
    assert {u.login: u.role for u in users.all()} == {"alice@a.test": "owner",
                                                       "bob@a.test": "user"}
    users.add("carol@a.test")
    assert not users.is_owner("carol@a.test")
    users.make_owner("Carol@A.test")
    assert users.is_owner("carol@a.test")
    with pytest.raises(Invalid):
        users.add("dave@a.test", role="admin")


async def test_login_with_reads_its_extra_in_the_same_database_call(users: Users) -> None:
    # the WebDAV PUT fast path reads its target with the login's hashes: one thread
    # hop to the database per PUT, not two (issue 20); a revocation still counts at once
    users.add("alice@alice.example")
    password = users.set_password("alice@alice.example")
    await users.login("alice@alice.example", password, "192.0.2.1")  # cached from now on
    calls = 0
    run = users.db.run

    async def counted(fn, *args):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return await run(fn, *args)

    users.db.run = counted  # type: ignore[method-assign]

    def extra(c: object) -> str:
        return "read on the database thread"

    login, got = await users.login_with("Alice@alice.example", password, "192.0.2.1", extra)
    assert (login, got, calls) == ("alice@alice.example", "read on the database thread", 1)
    login, got = await users.login_with("alice@alice.example", "wrong", "192.0.2.1", extra)
    assert login is None
    users.revoke("alice@alice.example", "default")
    login, _ = await users.login_with("alice@alice.example", password, "192.0.2.1", extra)
    assert login is None
