"""Logins: app passwords stored as Argon2id only, checked off the loop, throttled."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core.db import Database
from core.errors import Conflict, Invalid
from core.users import Throttle, Users


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
    assert throttle.delay("a", "1.2.3.4") == pytest.approx(0.2)
    assert throttle.delay("a", "5.6.7.8") == 0  # another client is not punished
    start = time.monotonic()
    await throttle.before_attempt("a", "1.2.3.4")
    assert time.monotonic() - start >= 0.19
    throttle.record("a", "1.2.3.4", ok=True)
    assert throttle.delay("a", "1.2.3.4") == 0
