"""Bundles: each item handled as if it came alone; replays across bundles and singles;
hostile bundles refused before any item is handled."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import PeerRejected
from core.peer import bundle
from core.peer import envelope as env
from core.peer.bundler import NoBundles
from core.peer.client import Refused
from core.peer.errors import Refusal
from core.peer.outbox import Pending
from core.peer.peer import _Opened
from core.service import Service
from tests.core.peer.test_receive import refused, sealed

Pair = tuple[Service, Service]


def item(kind: str = "message", value: Any = None, uid: bytes | None = None) -> dict[str, Any]:
    return {"uid": uid or env.new_uid(), "kind": kind,
            "value": {"text": "hi"} if value is None else value}


async def answers(alice: Service, bob: Service, items: list[dict[str, Any]]) -> list[Any]:
    """Bob's answers to a bundle of ``items`` from alice, read from his verified ack."""
    uid = env.new_uid()
    answer = await bob.peer.receive(sealed(alice, bob, kind=bundle.KIND, value=items, uid=uid))
    opened = alice.peer._open_ack(await alice.resolve("bob"), answer.ack, uid)
    assert isinstance(opened.result, list)
    return opened.result


async def test_each_item_is_handled_and_answered_in_order(pair: Pair) -> None:
    alice, bob = pair
    items = [item(value={"text": f"b{i}"}) for i in range(3)] + [item("ping", 7)]
    got = await answers(alice, bob, items)
    assert got == [{"ok": {"stored": True}}] * 3 + [{"ok": 7}]
    stored = {m.uid: m.text for m in await bob.peer.inbox.list(1000)}
    assert [stored[i["uid"]] for i in items[:3]] == ["b0", "b1", "b2"]


async def test_items_are_refused_one_by_one(pair: Pair) -> None:
    alice, bob = pair
    dup = env.new_uid()
    got = await answers(alice, bob, [
        item(),
        item(value={"no": "text"}),  # the handler refuses it
        item("content.get", {"path": "/"}),  # answered with a stream: never in a bundle
        item(bundle.KIND, [item()]),  # no bundles in bundles
        item("no.such.kind"),
        item("ack", {}),
        item(uid=dup), item(uid=dup),  # the same uid twice: handled once
    ])
    codes = [a["refused"]["code"] if "refused" in a else "ok" for a in got]
    assert codes == ["ok", "invalid", "unknown_kind", "unknown_kind", "unknown_kind",
                     "unknown_kind", "ok", "replay"]
    assert len([m for m in await bob.peer.inbox.list(1000) if m.uid == dup]) == 1


async def test_a_bundled_uid_sent_again_alone_gets_a_signed_ack(pair: Pair) -> None:
    alice, bob = pair
    uid = env.new_uid()
    assert await answers(alice, bob, [item(uid=uid)]) == [{"ok": {"stored": True}}]
    with pytest.raises(Refusal) as info:
        await bob.peer.receive(sealed(alice, bob, uid=uid))
    assert info.value.code == "replay" and info.value.ack is not None
    opened = alice.peer._open_ack(await alice.resolve("bob"), info.value.ack, uid, fresh=False)
    assert opened.result == {"stored": True}
    # and again in a bundle: its result, from the mark
    assert await answers(alice, bob, [item(uid=uid)]) == [{"ok": {"stored": True}}]


async def test_a_single_uid_sent_again_in_a_bundle_gets_its_first_ack(pair: Pair) -> None:
    alice, bob = pair
    uid = env.new_uid()
    first = await bob.peer.receive(sealed(alice, bob, uid=uid))
    assert await answers(alice, bob, [item(uid=uid)]) == [{"replay": first.ack}]


@pytest.mark.parametrize("value", [
    [],  # empty
    [item()] * (bundle.MAX_ITEMS + 1),  # over the count, refused before any is handled
    {"uid": b"x"},  # not a list
    [item(), [1, 2]],  # an item that is not a map
    [{**item(), "extra": 1}],
    [{**item(), "uid": b"short"}],
    [{**item(), "uid": "0" * 16}],
    [{**item(), "kind": ""}],
    [{**item(), "kind": "k" * (env.MAX_KIND + 1)}],
])
async def test_malformed_bundles_are_refused_whole(pair: Pair, value: Any) -> None:
    alice, bob = pair
    before = len(await bob.peer.inbox.list(100_000))
    assert await refused(bob, sealed(alice, bob, kind=bundle.KIND, value=value)) == "malformed"
    assert len(await bob.peer.inbox.list(100_000)) == before


def test_answers_are_checked_by_the_sender() -> None:
    good = [bundle.ok(1), bundle.replayed(b"\x01ack"),
            bundle.refused(Refusal("rate_limited", "slow down"))]
    got = bundle.parse_answers(good, 3)
    assert got[0].result == 1 and got[1].replay_ack == b"\x01ack"
    assert isinstance(got[2].error, PeerRejected) and got[2].error.code == "rate_limited"
    bad: Any
    for bad in ([bundle.ok(1)],  # short
                "x", [{"ok": 1, "replay": b""}] * 3, [{"replay": "text"}] * 3,
                [{"refused": {"code": 1, "message": ""}}] * 3, [{}] * 3):
        with pytest.raises(ValueError):
            bundle.parse_answers(bad, 3)


def through_bob(alice: Service, bob: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """Alice's envelopes go straight into bob's ``receive`` instead of over HTTPS."""
    async def deliver(endpoint: str, raw: bytes) -> bytes:
        try:
            return (await bob.peer.receive(raw)).ack
        except Refusal as refusal:
            raise Refused(refusal.code, refusal.message, refusal.ack) from None
    monkeypatch.setattr(alice.peer.client, "deliver", deliver)


async def test_the_sender_reads_each_items_outcome(pair: Pair,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = pair
    through_bob(alice, bob, monkeypatch)
    record = await alice.resolve("bob")
    before = pending(env.new_uid(), {"text": "first alone"})
    await bob.peer.receive(sealed(alice, bob, uid=before.uid, value=before.value))
    items = [pending(env.new_uid(), {"text": "new"}), before,
             pending(env.new_uid(), {"no": "text"})]
    got = await alice.peer._deliver_bundle(record, items)
    assert [o.result for o in got[:2] if isinstance(o, _Opened)] == [{"stored": True}] * 2
    assert isinstance(got[2], PeerRejected) and got[2].code == "invalid"


async def test_a_peer_without_the_kind_is_told_apart(pair: Pair,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = pair
    through_bob(alice, bob, monkeypatch)
    monkeypatch.delitem(bob.peer.kinds._handlers, bundle.KIND)  # an older twin
    with pytest.raises(NoBundles):
        await alice.peer._deliver_bundle(await alice.resolve("bob"),
                                         [pending(env.new_uid(), {"text": "x"})] * 2)


def pending(uid: bytes, value: Any) -> Pending:
    return Pending(uid, "bob", "message", value, 0.0, 0, 0.0, "", 10)
