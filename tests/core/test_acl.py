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
