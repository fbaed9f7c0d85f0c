"""Contacts and circles in twin.db."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.contacts import Contacts
from core.db import Database
from core.errors import Conflict, Invalid, NotFound


@pytest.fixture
def contacts(tmp_path: Path) -> Contacts:
    return Contacts(Database(tmp_path / "twin.db"))


async def test_add_list_remove(contacts: Contacts) -> None:
    assert await contacts.add("bob") is True
    assert await contacts.add("BOB") is False
    await contacts.add("carol")
    assert await contacts.list() == ["bob", "carol"]
    await contacts.remove("bob")
    assert await contacts.list() == ["carol"]
    with pytest.raises(NotFound):
        await contacts.remove("bob")


async def test_circles_and_membership(contacts: Contacts) -> None:
    await contacts.circle_add("family", ["bob", "carol"])
    await contacts.circle_add("work", [])
    assert await contacts.circles() == {"family": ["bob", "carol"], "work": []}
    assert await contacts.list() == ["bob", "carol"]  # members became contacts
    await contacts.circle_remove("family", ["carol"])
    assert (await contacts.circles())["family"] == ["bob"]
    await contacts.remove("bob")  # leaves every circle
    assert (await contacts.circles())["family"] == []
    await contacts.circle_remove("family")
    assert await contacts.circles() == {"work": []}
    with pytest.raises(NotFound):
        await contacts.circle_remove("family")


async def test_names_are_checked(contacts: Contacts) -> None:
    for bad in ("", "Bad Name", "public", "a" * 64, "../x"):
        with pytest.raises(Invalid):
            await contacts.add(bad)
    await contacts.add("bob")
    with pytest.raises(Conflict):
        await contacts.circle_add("bob", [])
    await contacts.circle_add("family", [])
    with pytest.raises(Conflict):
        await contacts.add("family")
