"""Receiving in-process: every check refuses with its own code; acks; replay; fuzz."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from core.identity import Identity
from core.peer import envelope as env
from core.peer.errors import STATUS, Refusal
from core.peer.replay import RateLimit, ReplayGuard
from core.service import Service

Pair = tuple[Service, Service]


def sealed(alice: Service, bob: Service, *, identity: Identity | None = None,
           sender: str = "alice", recipient: str = "bob", kind: str = "message",
           value: Any = None, **kw: Any) -> bytes:
    ident = identity or alice.identity
    return env.seal(ident, env.Boxes(ident), sender=sender, recipient=recipient,
                    recipient_key=bob.identity.public_key, kind=kind,
                    value={"text": "hi"} if value is None else value,
                    ttl=kw.pop("ttl", 600), **kw)


async def refused(bob: Service, raw: bytes) -> str:
    with pytest.raises(Refusal) as info:
        await bob.peer.receive(raw)
    return info.value.code


async def test_message_is_stored_and_acked(pair: Pair) -> None:
    alice, bob = pair
    uid = env.new_uid()
    answer = await bob.peer.receive(sealed(alice, bob, uid=uid, value={"text": "hello"}))
    record = await alice.resolve("bob")
    opened = alice.peer._open_ack(record, answer.ack, uid)
    assert opened.result == {"stored": True}
    assert [m.text for m in await bob.peer.inbox.list() if m.uid == uid] == ["hello"]


async def test_replay_is_refused_and_carries_the_first_ack(pair: Pair) -> None:
    alice, bob = pair
    uid = env.new_uid()
    raw = sealed(alice, bob, uid=uid)
    first = await bob.peer.receive(raw)
    with pytest.raises(Refusal) as info:
        await bob.peer.receive(raw)
    assert info.value.code == "replay" and info.value.ack == first.ack
    # a fresh envelope re-sent with the same uid (an outbox retry) is de-duplicated too
    assert await refused(bob, sealed(alice, bob, uid=uid)) == "replay"
    assert len([m for m in await bob.peer.inbox.list(1000) if m.uid == uid]) == 1


async def test_each_check_has_its_code(pair: Pair) -> None:
    alice, bob = pair
    now = int(time.time())
    mallory = Identity(bytes([7]) * 32)
    cases = {
        "unknown_sender": sealed(alice, bob, identity=mallory, sender="mallory"),
        "bad_signature": sealed(alice, bob, identity=mallory),  # claims to be alice
        "wrong_recipient": sealed(alice, bob, recipient="carol"),
        "clock_skew": sealed(alice, bob, timestamp=now + 3600),
        "expired": sealed(alice, bob, timestamp=now - 7200, ttl=60),
        "unknown_kind": sealed(alice, bob, kind="ack"),  # listed, but nobody takes one
        "unsupported_version": b"\x02" + sealed(alice, bob)[1:],
        "malformed": b"\x01" + bytes(10),
        "too_large": b"\x01" + bytes(bob.peer.max_envelope + 1),
        "invalid": sealed(alice, bob, value={"no": "text"}),
    }
    for code, raw in cases.items():
        assert await refused(bob, raw) == code, code
    tampered = bytearray(sealed(alice, bob))
    tampered[-3] ^= 0xFF
    assert await refused(bob, bytes(tampered)) == "bad_signature"


async def test_unknown_kind_name_and_bad_payload(pair: Pair) -> None:
    alice, bob = pair
    body_kind = sealed(alice, bob, kind="no.such.kind")
    assert await refused(bob, body_kind) == "unknown_kind"
    # encrypted to the wrong key: signature fine, payload does not open
    other = env.seal(alice.identity, env.Boxes(alice.identity), sender="alice",
                     recipient="bob", recipient_key=alice.identity.public_key,
                     kind="message", value={"text": "x"}, ttl=600)
    assert await refused(bob, other) == "bad_payload"


async def test_rate_limit(pair: Pair) -> None:
    alice, bob = pair
    saved = bob.peer.rate
    bob.peer.rate = RateLimit(2)
    try:
        codes = []
        for _ in range(3):
            try:
                await bob.peer.receive(sealed(alice, bob, kind="ping", value=1))
                codes.append("ok")
            except Refusal as r:
                codes.append(r.code)
        assert codes == ["ok", "ok", "rate_limited"]
    finally:
        bob.peer.rate = saved


async def test_stale_or_future_acks_are_refused(pair: Pair) -> None:
    """An ack must be fresh (its timestamp and ttl, within peer.max_skew), except the
    stored first ack a peer sends back with a ``replay`` refusal."""
    from core.errors import Invalid

    alice, bob = pair
    record = await alice.resolve("bob")
    uid, now = env.new_uid(), int(time.time())

    def ack(**kw: Any) -> bytes:
        return env.seal(bob.identity, env.Boxes(bob.identity), sender="bob", recipient="alice",
                        recipient_key=alice.identity.public_key, kind="ack",
                        value={"uid": uid, "result": "ok"}, ttl=kw.pop("ttl", 600), **kw)

    assert alice.peer._open_ack(record, ack(), uid).result == "ok"
    skew = alice.peer.max_skew
    stale = ack(timestamp=now - 7200, ttl=60)
    early = ack(timestamp=now + skew + 120)
    for raw in (stale, early):
        with pytest.raises(Invalid, match="stale ack"):
            alice.peer._open_ack(record, raw, uid)
    # just inside the tolerance on both sides
    assert alice.peer._open_ack(record, ack(timestamp=now - 60 - skew + 5, ttl=60), uid)
    assert alice.peer._open_ack(record, ack(timestamp=now + skew - 5), uid)
    # the first ack returned with a replay refusal is as old as the first delivery
    assert alice.peer._open_ack(record, stale, uid, fresh=False).result == "ok"


async def test_replay_guard_groups_lookups_and_marks(tmp_path: Any) -> None:
    """Concurrent claims and marks share database calls and each still gets its answer."""
    import asyncio

    guard = ReplayGuard(tmp_path / "g.db")
    uids = [env.new_uid() for _ in range(300)]
    await asyncio.gather(*(guard.claim("alice", u) for u in uids))
    await asyncio.gather(*(guard.done("alice", u, time.time() + 60, u) for u in uids[:200]))
    for u in uids[200:]:
        guard.release("alice", u)
    results = await asyncio.gather(*(guard.claim("alice", u) for u in uids),
                                   return_exceptions=True)
    assert [r.ack if isinstance(r, Refusal) else None for r in results] == \
        [*uids[:200], *([None] * 100)]
    guard.close()


async def test_replay_lookups_and_marks_waiting_together_take_one_trip(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bundle's lookups and the marks of the one before go to the database thread
    in one call, not one call each."""
    import asyncio

    guard = ReplayGuard(tmp_path / "g.db")
    handled = [env.new_uid() for _ in range(5)]
    for u in handled:
        await guard.claim("alice", u)
    calls: list[int] = []
    run = guard.db.run

    async def counted(fn: Any, *args: Any) -> Any:
        calls.append(len(args[0]) if args else 0)
        return await run(fn, *args)
    monkeypatch.setattr(guard.db, "run", counted)
    fresh = [env.new_uid() for _ in range(5)]
    await asyncio.gather(*(guard.done("alice", u, time.time() + 60, b"ack") for u in handled),
                         *(guard.claim("alice", u) for u in fresh))
    assert calls == [10]
    for u in handled:  # marked: refused with their acks
        with pytest.raises(Refusal) as info:
            await guard.claim("alice", u)
        assert info.value.code == "replay" and info.value.ack == b"ack"
    guard.close()


async def test_replay_guard_survives_restart(tmp_path: Any) -> None:
    guard = ReplayGuard(tmp_path / "r.db")
    uid = env.new_uid()
    await guard.claim("alice", uid)
    await guard.done("alice", uid, time.time() + 60, b"ack-bytes")
    guard.close()
    again = ReplayGuard(tmp_path / "r.db")
    with pytest.raises(Refusal) as info:
        await again.claim("alice", uid)
    assert info.value.code == "replay" and info.value.ack == b"ack-bytes"
    await again.claim("bob", uid)  # scoped by sender
    again.close()


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600))
async def test_random_bytes_get_a_clean_refusal(pair: Pair, data: bytes) -> None:
    _, bob = pair
    for raw in (data, b"\x01" + data):
        code = await refused(bob, raw)
        assert code in STATUS and code != "internal"


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
async def test_mutated_envelopes_get_a_clean_refusal(pair: Pair, data: st.DataObject) -> None:
    alice, bob = pair
    original = sealed(alice, bob, kind="ping", value={"n": 1})
    raw = bytearray(original)
    for _ in range(data.draw(st.integers(1, 6))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    mutated = bytes(raw[:data.draw(st.integers(0, len(raw)))])
    # a byte set to the value it had (about 1 draw in 256) leaves a valid envelope
    assume(mutated != original)
    code = await refused(bob, mutated)
    assert code in STATUS and code != "internal"
