"""Grants over paths and prefixes, for twins, circles and the public; expiry; revoke."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core.acl import OWNER, Access, Principal, normalize, parse_rights
from core.contacts import Contacts
from core.db import Database
from core.errors import Forbidden, Invalid, NotFound

BOB, CAROL, DAVE = Principal.remote("bob"), Principal.remote("carol"), Principal.remote("dave")


@pytest.fixture
def access(tmp_path: Path) -> Access:
    db = Database(tmp_path / "twin.db")
    return Access(db, Contacts(db))


async def test_owner_passes_and_strangers_do_not(access: Access) -> None:
    assert await access.allowed(OWNER, "/anything", "write")
    assert not await access.allowed(BOB, "/anything", "read")
    with pytest.raises(Forbidden):
        await access.check(BOB, "/anything", "read")


async def test_exact_and_prefix_grants(access: Access) -> None:
    await access.grant("/photos/", "bob", ("read",))
    await access.grant("/doc.txt", "carol", ("read", "write"))
    assert await access.allowed(BOB, "/photos/a.jpg", "read")
    assert await access.allowed(BOB, "/photos/2024/b.jpg", "read")
    assert not await access.allowed(BOB, "/photos", "read")  # the prefix is "/photos/"
    assert not await access.allowed(BOB, "/photosx/a.jpg", "read")
    assert not await access.allowed(BOB, "/photos/a.jpg", "write")
    assert await access.allowed(CAROL, "/doc.txt", "write")
    assert not await access.allowed(CAROL, "/doc.txt/more", "read")  # exact, not a prefix
    assert await access.reaches_below(BOB, "/")
    assert not await access.reaches_below(DAVE, "/")


async def test_circle_grant_follows_membership_at_request_time(access: Access) -> None:
    await access.contacts.circle_add("family", ["bob"])
    await access.grant("/family/", "family", ("read",))
    assert (await access.grants())[0].who == "circle:family"
    assert await access.allowed(BOB, "/family/x", "read")
    assert not await access.allowed(CAROL, "/family/x", "read")
    await access.contacts.circle_add("family", ["carol"])
    assert await access.allowed(CAROL, "/family/x", "read")
    await access.contacts.circle_remove("family", ["bob"])
    assert not await access.allowed(BOB, "/family/x", "read")


async def test_public_expiry_and_revoke(access: Access) -> None:
    await access.grant("/pub/", "public", ("read",))
    assert await access.allowed(DAVE, "/pub/x", "read")
    await access.revoke("/pub/", "public")
    assert not await access.allowed(DAVE, "/pub/x", "read")  # next request: refused
    with pytest.raises(NotFound):
        await access.revoke("/pub/", "public")
    g = await access.grant("/soon", "bob", ("read",), until=time.time() + 0.3)
    assert g.until and await access.allowed(BOB, "/soon", "read")
    time.sleep(0.4)
    assert not await access.allowed(BOB, "/soon", "read")
    with pytest.raises(Invalid):
        await access.grant("/past", "bob", ("read",), until=time.time() - 1)


def test_paths_and_rights_are_validated() -> None:
    for bad in ("relative", "/a/../b", "/a//b", "/a/./b", "/a\x00b", "/" + "a" * 2000):
        with pytest.raises(Invalid):
            normalize(bad)
    assert normalize("/a/b/") == "/a/b/"
    assert parse_rights("rw") == ("read", "write")
    assert parse_rights("read,share") == ("read", "share")
    with pytest.raises(Invalid):
        parse_rights("rx")


async def test_user_grants_reach_that_login_only(access: Access) -> None:
    """#15.8: a local login holds only its user: grants; twins never hold them."""
    bob_login = Principal.local("bob@alice.test")
    carol_login = Principal.local("carol@alice.test")
    assert not bob_login.is_owner and str(bob_login) == "user:bob@alice.test"
    await access.grant("/pub/", "public", ("read",))
    await access.grant("/twins/", "bob", ("read", "write"))
    await access.grant("/docs/", " User:Bob@Alice.TEST ", ("read",))
    assert [g.who for g in await access.grants("/docs/")] == ["user:bob@alice.test"]
    assert await access.allowed(bob_login, "/docs/a.txt", "read")
    assert not await access.allowed(bob_login, "/docs/a.txt", "write")
    assert not await access.allowed(carol_login, "/docs/a.txt", "read")
    assert not await access.allowed(bob_login, "/pub/x", "read")  # public is for twins
    assert not await access.allowed(bob_login, "/twins/x", "read")  # so is a twin's grant
    assert not await access.allowed(Principal.remote("bob"), "/docs/a.txt", "read")
    assert await access.reaches_below(bob_login, "/")
    assert not await access.reaches_below(carol_login, "/")
    with pytest.raises(Invalid):
        await access.grant("/docs/", "user:nobody", ("read",))
    assert await access.revoke("/docs/", "user:bob@alice.test") == ["/docs/"]
    assert not await access.allowed(bob_login, "/docs/a.txt", "read")


def test_grants_of_the_first_schema_survive_the_user_kind_migration(tmp_path: Path) -> None:
    """The grants table is rebuilt for the user kind; existing grants must stay."""
    import sqlite3

    from core.acl import MIGRATIONS

    db = Database(tmp_path / "twin.db")
    Contacts(db)
    db.migrate("acl", MIGRATIONS[:1])
    db.run_sync(lambda c: c.execute(
        "INSERT INTO grants VALUES ('/a/', 'twin', 'bob', 'read', NULL, 1.0)"))
    access = Access(db, Contacts(db))
    rows = db.run_sync(lambda c: c.execute("SELECT path, kind, grantee FROM grants").fetchall())
    assert rows == [("/a/", "twin", "bob")]
    db.run_sync(lambda c: c.execute(
        "INSERT INTO grants VALUES ('/b/', 'user', 'x@y', 'read', NULL, 1.0)"))
    with pytest.raises(sqlite3.IntegrityError):
        db.run_sync(lambda c: c.execute(
            "INSERT INTO grants VALUES ('/c/', 'other', 'x', 'read', NULL, 1.0)"))
    assert access is not None
