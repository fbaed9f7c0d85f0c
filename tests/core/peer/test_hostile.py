"""A hostile but correctly signed peer, in-process: shared-reference bombs,
forged ack lengths, sender-chosen ttl and a replay store that must stay bounded."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import cbor2
import pytest

from core.errors import Invalid
from core.peer import envelope as env
from core.peer.errors import Refusal
from core.peer.replay import Bounds, ReplayGuard
from core.service import Service
from tests.hostile_peer import seal_raw, shared_ref_bomb

Pair = tuple[Service, Service]


def to_bob(alice: Service, bob: Service, plain: bytes, **kw: Any) -> bytes:
    return seal_raw(alice.identity, sender="alice", recipient="bob",
                    recipient_key=bob.identity.public_key, plain=plain, **kw)


async def test_shared_reference_bomb_is_refused_before_it_is_re_encoded(pair: Pair) -> None:
    alice, bob = pair
    raw = to_bob(alice, bob, shared_ref_bomb(20))  # 178 bytes; 4 M items re-encoded
    start = time.perf_counter()
    with pytest.raises(Refusal) as info:
        await bob.peer.receive(raw)
    took = time.perf_counter() - start
    assert info.value.code == "bad_payload", info.value
    assert took < 0.5, took
    # the same ping without the tags is answered as before
    plain = cbor2.dumps([[0, 0], [[0, 0], [0, 0]]], canonical=True)
    answer = await bob.peer.receive(to_bob(alice, bob, plain))
    assert len(answer.ack) < 1000


async def test_payload_nesting_and_item_count_are_bounded(pair: Pair) -> None:
    alice, bob = pair
    deep = b"\x81" * 10_000 + b"\x00"
    many = b"\x9a" + (2_000_000).to_bytes(4, "big") + bytes(2_000_000)
    for plain in (deep, many):
        with pytest.raises(Refusal) as info:
            await bob.peer.receive(to_bob(alice, bob, plain))
        assert info.value.code == "bad_payload"


async def test_a_forged_ack_cannot_ask_for_a_huge_stream_key(pair: Pair) -> None:
    """bytes(n) of the peer's integer would allocate n bytes (or overflow)."""
    alice, bob = pair
    record = await alice.resolve("bob")
    for key, header in ((2**62, 24), (1_500_000_000, 24), (b"k" * 32, 2**63), ("k", b"h")):
        uid = env.new_uid()
        ack = env.seal(bob.identity, env.Boxes(bob.identity), sender="bob", recipient="alice",
                       recipient_key=alice.identity.public_key, kind="ack", ttl=600,
                       value={"uid": uid, "result": None,
                              "stream": {"key": key, "header": header}})
        with pytest.raises(Invalid, match="malformed stream key"):
            alice.peer._open_ack(record, ack, uid)


async def test_sender_chosen_ttl_is_capped(pair: Pair) -> None:
    alice, bob = pair
    ping = cbor2.dumps(1)
    for kw in ({"ttl": 2**31 - 1}, {"ttl": 2**31 - 1, "timestamp": 0},
               {"ttl": bob.peer.max_ttl + 1}):
        with pytest.raises(Refusal) as info:
            await bob.peer.receive(to_bob(alice, bob, ping, **kw))
        assert info.value.code == "malformed" and "max_ttl" in info.value.message, kw
    await bob.peer.receive(to_bob(alice, bob, ping, ttl=bob.peer.max_ttl))


def _stored(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as db:
        rows, acks = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(ack)), 0) FROM seen").fetchone()
    return int(rows), int(acks)


async def test_replay_store_stays_bounded_under_big_pings(pair: Pair) -> None:
    """Hostile ttl and 16 KiB pings: acks are not hoarded, far expiries are refused."""
    alice, bob = pair
    path = Path(bob.data_dir) / "peer-replay.db"
    rows_before, acks_before = _stored(path)
    big = cbor2.dumps(b"x" * 16 * 1024)
    for i in range(150):
        raw = to_bob(alice, bob, big, ttl=2**31 - 1 if i % 2 else 600)
        try:
            await bob.peer.receive(raw)
        except Refusal as refusal:
            assert refusal.code == "malformed"
    rows, acks = _stored(path)
    assert rows - rows_before <= 75
    assert acks - acks_before == 0  # each ack is over peer.max_stored_ack
    with sqlite3.connect(path) as db:
        far = db.execute("SELECT MAX(expires) FROM seen").fetchone()[0]
    assert far < time.time() + bob.peer.dedup_keep + bob.peer.max_ttl + 3600


async def test_replay_store_is_bounded_per_sender(tmp_path: Path) -> None:
    guard = ReplayGuard(tmp_path / "r.db", Bounds(max_ack=100, ack_budget=1000, per_sender=100))
    now = time.time()
    try:
        # marks past their replay window (kept only for outbox re-sends) are evicted
        for i in range(300):
            uid = i.to_bytes(16, "big")
            await guard.claim("mallory", uid)
            await guard.done("mallory", uid, now + 86400, b"a" * 60, replay_until=now - 1)
        rows, acks = _stored(tmp_path / "r.db")
        assert rows <= 100 and acks <= 1000, (rows, acks)
        await guard.claim("mallory", b"\xff" * 16)  # still taken
        guard.release("mallory", b"\xff" * 16)
        # marks still guarding against a replay are never evicted: the sender waits
        for i in range(300, 500):
            uid = i.to_bytes(16, "big")
            try:
                await guard.claim("mallory", uid)
            except Refusal as refusal:
                assert refusal.code == "rate_limited"
                break
            await guard.done("mallory", uid, now + 86400, b"", replay_until=now + 600)
        else:
            raise AssertionError("the sender was never refused")
        rows, _ = _stored(tmp_path / "r.db")
        assert rows <= 100
        # other senders are not affected
        await guard.claim("alice", b"\x01" * 16)
    finally:
        guard.close()


def test_a_refusal_body_nested_too_deep_is_not_a_crash() -> None:
    from core.peer import client

    for body in (b"[" * 100_000, b'{"code": "x", "ack": 5}', b'["code"]', b'{"a": ' * 50_000):
        assert not client._is_refusal(body) or body.startswith(b'{"code"')
        assert client._refused(400, body).code in ("unavailable", "x")


async def test_a_stamp_older_than_the_skew_is_refused(pair: Pair) -> None:
    """Every delivery attempt is sealed afresh: an hour-old stamp with a day's ttl
    is a replay (or a broken clock), not a late delivery."""
    alice, bob = pair
    old = int(time.time()) - bob.peer.max_skew - 60
    with pytest.raises(Refusal) as info:
        await bob.peer.receive(to_bob(alice, bob, cbor2.dumps(1), timestamp=old, ttl=86400))
    assert info.value.code == "clock_skew" and "in the past" in info.value.message
