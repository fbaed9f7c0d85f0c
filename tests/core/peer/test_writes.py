"""content.put|delete|mkdir|move in-process: the owner's checks, hostile cases first.

bob writes into alice's twin (``pair`` opens both services): every envelope is
sealed by bob as a real peer would and handed to ``alice.peer.receive``.
"""

from __future__ import annotations

from typing import Any

import pytest

from core.identity import Identity
from core.peer import envelope as env
from core.peer.errors import Refusal
from core.service import Service

Pair = tuple[Service, Service]


def from_bob(alice: Service, bob: Service, kind: str, value: Any, *,
             identity: Identity | None = None, uid: bytes | None = None) -> bytes:
    ident = identity or bob.identity
    return env.seal(ident, env.Boxes(ident), sender="bob", recipient="alice",
                    recipient_key=alice.identity.public_key, kind=kind, value=value, ttl=600,
                    uid=uid or env.new_uid())


async def refused(alice: Service, raw: bytes) -> Refusal:
    with pytest.raises(Refusal) as info:
        await alice.peer.receive(raw)
    return info.value


async def result(alice: Service, bob: Service, raw: bytes, uid: bytes) -> Any:
    answer = await alice.peer.receive(raw)
    return bob.peer._open_ack(await bob.resolve("alice"), answer.ack, uid).result


@pytest.fixture
async def shares(pair: Pair) -> Pair:
    """alice's /rw/ (read-write for bob), /ro/ (read-only) and /private/ (nobody)."""
    alice, _ = pair
    for folder in ("/rw", "/ro", "/private", "/rw/in"):
        if await alice.files.exists(folder) is None:
            await alice.files.mkdir(folder)
    await alice.access.grant("/rw/", "bob", ("read", "write"))
    await alice.access.grant("/ro/", "bob", ("read",))
    return pair


async def test_mkdir_move_delete_reach_alices_tree(shares: Pair) -> None:
    alice, bob = shares
    uid = env.new_uid()
    made = await result(alice, bob, from_bob(alice, bob, "content.mkdir",
                                             {"path": "/rw/new"}, uid=uid), uid)
    assert made["path"] == "/rw/new" and made["is_dir"] is True
    assert (await alice.files.stat("/rw/new")).is_dir
    uid = env.new_uid()
    await result(alice, bob, from_bob(alice, bob, "content.move",
                                      {"path": "/rw/new", "to": "/rw/renamed",
                                       "overwrite": False}, uid=uid), uid)
    assert await alice.files.exists("/rw/new") is None
    assert await alice.files.exists("/rw/renamed") is not None
    uid = env.new_uid()
    await result(alice, bob, from_bob(alice, bob, "content.delete",
                                      {"path": "/rw/renamed"}, uid=uid), uid)
    assert await alice.files.exists("/rw/renamed") is None


async def test_outside_the_grant_is_refused_before_the_tree_is_touched(shares: Pair) -> None:
    alice, bob = shares
    cases = [
        ("content.mkdir", {"path": "/private/x"}, "not_found"),   # not shared at all
        ("content.mkdir", {"path": "/x"}, "not_found"),
        ("content.mkdir", {"path": "/ro/x"}, "forbidden"),        # shared read-only
        ("content.delete", {"path": "/ro"}, "forbidden"),
        ("content.delete", {"path": "/rw"}, "forbidden"),         # the granted folder itself
        ("content.move", {"path": "/rw/in", "to": "/private/in", "overwrite": False},
         "not_found"),                                             # destination not granted
        ("content.move", {"path": "/ro", "to": "/rw/ro", "overwrite": False}, "forbidden"),
        ("content.put", {"path": "/private/x", "data": b"x"}, "not_found"),
        # the ACL answers before the rest of the request is even looked at
        ("content.put", {"path": "/private/x", "data": 12}, "not_found"),
        ("content.put", {"path": "/private/x", "data": bytes(9 * 1024 * 1024)}, "not_found"),
    ]
    for kind, value, code in cases:
        got = await refused(alice, from_bob(alice, bob, kind, value))
        assert got.code == code, (kind, value, got.code, got.message)
    assert await alice.files.exists("/private/x") is None
    assert await alice.files.exists("/x") is None
    assert await alice.files.exists("/ro") is not None
    assert await alice.files.exists("/rw/in") is not None


async def test_dot_dot_and_malformed_paths_are_invalid(shares: Pair) -> None:
    alice, bob = shares
    for path in ("/rw/../private/x", "/rw/./x", "rw/x", "/rw//x", "/rw/\x00x", 7, None):
        got = await refused(alice, from_bob(alice, bob, "content.mkdir", {"path": path}))
        assert got.code == "invalid", (path, got.code)
    got = await refused(alice, from_bob(alice, bob, "content.move",
                                        {"path": "/rw/in", "to": "/rw/../private/in"}))
    assert got.code == "invalid"
    assert await alice.files.exists("/private/in") is None


async def test_oversized_body_is_refused(shares: Pair) -> None:
    alice, bob = shares
    limit = alice.config.int("peer.max_put")
    got = await refused(alice, from_bob(alice, bob, "content.put",
                                        {"path": "/rw/big", "data": bytes(limit + 1)}))
    assert got.code == "too_large" and got.status == 413
    assert await alice.files.exists("/rw/big") is None
    # a whole envelope over peer.max_envelope: refused before its signature is looked at
    got = await refused(alice, b"\x01" + bytes(alice.peer.max_envelope + 1))
    assert got.code == "too_large"


async def test_unsigned_forged_and_replayed_envelopes_are_refused(shares: Pair) -> None:
    alice, bob = shares
    mallory = Identity(bytes([9]) * 32)
    forged = from_bob(alice, bob, "content.mkdir", {"path": "/rw/forged"}, identity=mallory)
    assert (await refused(alice, forged)).code == "bad_signature"
    raw = bytearray(from_bob(alice, bob, "content.mkdir", {"path": "/rw/tampered"}))
    raw[-3] ^= 0xFF
    assert (await refused(alice, bytes(raw))).code == "bad_signature"
    unsigned = bytearray(from_bob(alice, bob, "content.mkdir", {"path": "/rw/unsigned"}))
    sig, _ = env.split(bytes(unsigned))
    zeroed = bytes(unsigned).replace(sig, bytes(len(sig)), 1)
    assert (await refused(alice, zeroed)).code == "bad_signature"
    for path in ("/rw/forged", "/rw/tampered", "/rw/unsigned"):
        assert await alice.files.exists(path) is None

    # replayed: the first delete happens once; the replay gets the stored ack, no second run
    await alice.files.mkdir("/rw/once")
    uid = env.new_uid()
    raw_delete = from_bob(alice, bob, "content.delete", {"path": "/rw/once"}, uid=uid)
    await result(alice, bob, raw_delete, uid)
    await alice.files.mkdir("/rw/once")  # alice makes it again
    got = await refused(alice, raw_delete)
    assert got.code == "replay"
    assert await alice.files.exists("/rw/once") is not None  # the replay deleted nothing


async def test_a_revoked_write_grant_takes_effect_on_the_next_request(shares: Pair) -> None:
    alice, bob = shares
    uid = env.new_uid()
    await result(alice, bob, from_bob(alice, bob, "content.mkdir", {"path": "/rw/in/a"},
                                      uid=uid), uid)
    await alice.access.grant("/rw/", "bob", ("read",))  # write taken away, read kept
    got = await refused(alice, from_bob(alice, bob, "content.mkdir", {"path": "/rw/in/b"}))
    assert got.code == "forbidden"
    await alice.access.revoke("/rw/", "bob")
    got = await refused(alice, from_bob(alice, bob, "content.mkdir", {"path": "/rw/in/b"}))
    assert got.code == "not_found"
    assert await alice.files.exists("/rw/in/b") is None
    await alice.access.grant("/rw/", "bob", ("read", "write"))


async def test_chunks_need_an_id_and_no_gaps_and_are_bounded(shares: Pair) -> None:
    alice, bob = shares
    upload = bytes(range(16))

    def chunk(offset: int, data: bytes, **kw: Any) -> bytes:
        return from_bob(alice, bob, "content.put", {"path": "/rw/c.bin", "data": data,
                                                    "upload": kw.pop("upload", upload),
                                                    "offset": offset, "last": False, **kw})
    for bad in (b"short", "not bytes", 16):
        assert (await refused(alice, chunk(0, b"x", upload=bad))).code == "invalid"
    assert (await refused(alice, chunk(-1, b"x"))).code == "invalid"
    # a chunk that does not continue an upload under way, and one with a gap
    assert (await refused(alice, chunk(5, b"x"))).code == "conflict"
    uid = env.new_uid()
    assert await result(alice, bob, from_bob(
        alice, bob, "content.put", {"path": "/rw/c.bin", "data": b"abc", "upload": upload,
                                    "offset": 0, "last": False}, uid=uid), uid) \
        == {"received": 3}
    parts = list((alice.data_dir / "uploads").glob("*.part"))
    assert [p.read_bytes() for p in parts] == [b"abc"]
    assert (await refused(alice, chunk(4, b"x"))).code == "conflict"
    assert not list((alice.data_dir / "uploads").glob("*.part"))  # a failed upload is dropped
    # the whole file is bounded by peer.max_upload at the first chunk that crosses it
    limit = alice.shared_writes.uploads.max_upload
    assert (await refused(alice, chunk(limit, b"x"))).code == "too_large"
    alice.shared_writes.uploads.max_upload = 2
    try:
        assert (await refused(alice, chunk(0, b"abc"))).code == "too_large"
    finally:
        alice.shared_writes.uploads.max_upload = limit
    # a sender holds at most MAX_PER_SENDER uploads under way
    from core.peer.uploads import MAX_PER_SENDER
    for i in range(MAX_PER_SENDER):
        await alice.peer.receive(chunk(0, b"a", upload=bytes([i]) * 16))
    got = await refused(alice, chunk(0, b"a", upload=bytes([99]) * 16))
    assert got.code == "invalid" and "under way" in got.message
    for p in (alice.data_dir / "uploads").glob("*.part"):
        p.unlink()


async def test_if_match_that_no_longer_holds_changes_nothing(shares: Pair) -> None:
    alice, bob = shares
    if await alice.files.exists("/rw/e") is None:
        await alice.files.mkdir("/rw/e")
    etag = (await alice.files.stat("/rw/e")).etag
    got = await refused(alice, from_bob(alice, bob, "content.delete",
                                        {"path": "/rw/e", "if_match": etag + "x"}))
    assert got.code == "precondition_failed" and got.status == 412
    assert await alice.files.exists("/rw/e") is not None
    got = await refused(alice, from_bob(alice, bob, "content.delete",
                                        {"path": "/rw/e", "if_match": 5}))
    assert got.code == "invalid"
    uid = env.new_uid()
    await result(alice, bob, from_bob(alice, bob, "content.delete",
                                      {"path": "/rw/e", "if_match": etag}, uid=uid), uid)
    assert await alice.files.exists("/rw/e") is None


async def test_over_quota_is_refused_as_overquota_and_not_permanent(shares: Pair) -> None:
    """Issue #19.5: the tree refused "quota" and mail "forbidden" (permanent: the sender
    bounced a mail at once that SMTP would have retried); now both "overquota", one
    row of the peer table (mail's refusal: tests/core/test_errors.py)."""
    from core.peer.errors import PERMANENT

    alice, bob = shares
    old = alice.files.quota
    used, _ = await alice.files.usage()
    alice.files.quota = used + 10
    try:
        got = await refused(alice, from_bob(alice, bob, "content.put",
                                            {"path": "/rw/full", "data": bytes(1000)}))
    finally:
        alice.files.quota = old
    assert (got.code, got.status) == ("overquota", 507)
    assert "overquota" not in PERMANENT
    assert await alice.files.exists("/rw/full") is None
