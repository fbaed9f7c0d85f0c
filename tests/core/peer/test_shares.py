"""share.notify received in-process: recorded per verified sender, ordered by time, bounded."""

from __future__ import annotations

import time
from typing import Any

import pytest

from core.peer import envelope as env
from core.peer.errors import Refusal
from core.peer.shares import recipients
from core.service import Service

Pair = tuple[Service, Service]


def notify(alice: Service, bob: Service, value: Any) -> bytes:
    return env.seal(alice.identity, env.Boxes(alice.identity), sender="alice", recipient="bob",
                    recipient_key=bob.identity.public_key, kind="share.notify", value=value,
                    ttl=600)


async def test_grant_then_revoke_and_out_of_order(pair: Pair) -> None:
    alice, bob = pair
    told = bob.shared_with_me
    now = time.time()
    generation = told.generation
    await bob.peer.receive(notify(alice, bob, {"path": "/films/", "rights": ["read"],
                                               "revoked": False, "at": now}))
    assert await told.twins() == ["alice"] and told.generation == generation + 1
    assert [(i.twin, i.path, i.rights) for i in await told.paths("alice")] == [
        ("alice", "/films/", ("read",))]
    # an older grant arriving after a newer revoke does not bring the share back
    await bob.peer.receive(notify(alice, bob, {"path": "/films/", "rights": [],
                                               "revoked": True, "at": now + 1}))
    await bob.peer.receive(notify(alice, bob, {"path": "/films/", "rights": ["read"],
                                               "revoked": False, "at": now - 5}))
    assert await told.twins() == [] and await told.paths("alice") == []


@pytest.mark.parametrize("value", [
    "not a map",
    {"path": "relative", "rights": ["read"], "revoked": False, "at": 1.0},
    {"path": "/a/../b", "rights": ["read"], "revoked": False, "at": 1.0},
    {"path": "/a", "rights": ["root"], "revoked": False, "at": 1.0},
    {"path": "/a", "rights": ["read"], "revoked": "no", "at": 1.0},
    {"path": "/a", "rights": ["read"], "revoked": False, "at": time.time() + 10 * 86400},
])
async def test_bad_payloads_are_refused(pair: Pair, value: Any) -> None:
    alice, bob = pair
    with pytest.raises(Refusal) as info:
        await bob.peer.receive(notify(alice, bob, value))
    assert info.value.code == "invalid"


async def test_recipients_of_twins_circles_and_public(pair: Pair) -> None:
    alice, _ = pair
    await alice.contacts.add("bob")
    await alice.contacts.circle_add("friends", ["bob"])
    assert await recipients(alice.contacts, "bob") == ["bob"]
    assert await recipients(alice.contacts, "circle:friends") == ["bob"]
    assert await recipients(alice.contacts, "friends") == ["bob"]
    assert await recipients(alice.contacts, "public") == []
