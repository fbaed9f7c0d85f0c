"""Bad input and bad bytes get clear errors, never a crash and never wrong data."""

from __future__ import annotations

import os

import pytest

from storage import IntegrityError, InvalidReference, ObjectRef
from storage.backends import check_key
from storage.codec import SegmentKey, encode_segment
from storage.engine import share_key
from storage.share import _FIXED, HEADER_BYTES, MAGIC, VERSION, ShareId, check, share_hash
from tests.storage.conftest import StoreFactory

SID = ShareId(b"\x11" * 16, 0, 2, 4, 6, 100)


def _share(sid: ShareId = SID, payload: bytes = b"p" * 25, version: int = VERSION) -> bytes:
    prefix = _FIXED.pack(MAGIC, version, sid.k, sid.n, sid.index, sid.object_id, sid.segment,
                         sid.cipher_len, len(payload))
    return prefix + share_hash(prefix, payload, version) + payload


def test_a_well_formed_share_passes() -> None:
    assert bytes(check(_share(), SID, None)) == b"p" * 25


def test_shares_written_by_an_older_version_still_read_and_still_detect_corruption() -> None:
    old = _share(version=1)  # BLAKE2b-256: what round 1 wrote
    assert VERSION == 2 and old[4] == 1
    assert old[36:68] != _share()[36:68]  # a different hash, so really the old code path
    assert bytes(check(old, SID, None)) == b"p" * 25
    with pytest.raises(IntegrityError, match="hash mismatch"):
        check(old[:-1] + b"q", SID, None)


@pytest.mark.parametrize(("data", "message"), [
    (b"", "truncated header"),
    (_share()[:HEADER_BYTES - 1], "truncated header"),
    (b"XXXX" + _share()[4:], "bad magic"),
    (_share()[:4] + b"\x09" + _share()[5:], "unsupported share version"),
    (_share()[:-1], "payload bytes"),
    (_share() + b"!", "payload bytes"),
    (_share()[:-1] + b"q", "hash mismatch"),
    (_share(ShareId(SID.object_id, 0, 2, 2, 3, 100), b"p" * 50), "header claims"),  # wrong k/n
    (_share(ShareId(SID.object_id, 0, 2, 9, 6, 100)), "impossible k=9 n=6"),
    (_share(ShareId(b"\x22" * 16, 0, 2, 4, 6, 100)), "header claims object 2222"),
    (_share(ShareId(SID.object_id, 1, 2, 4, 6, 100)), "segment 1"),
    (_share(payload=b"p" * 24), "does not fit the header"),
])
def test_malformed_shares_are_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(IntegrityError, match=message):
        check(data, SID, None)


def test_a_self_consistent_share_that_is_not_the_catalogued_one_is_refused() -> None:
    with pytest.raises(IntegrityError, match="differs from the catalogue"):
        check(_share(), SID, b"\x00" * 32)


@pytest.mark.parametrize("text", ["../../etc/passwd", "a" * 32 + "/..:1", "A" * 32 + ":1",
                                  "0" * 31 + ":1", "0" * 32 + ":-1", "0" * 32 + ":x", "",
                                  "0" * 32 + "\x00:1", "0" * 32 + ":1:2"])
def test_references_with_path_characters_or_garbage_are_refused(text: str) -> None:
    with pytest.raises(InvalidReference):
        ObjectRef.parse(text)


@pytest.mark.parametrize("key", ["../x", "/abs", "a/../b", "a b", "a\nb", "", "x" * 201, "é"])
def test_backend_keys_are_boring(key: str) -> None:
    with pytest.raises(InvalidReference):
        check_key(key)


async def test_store_refuses_bad_references_before_touching_backends(
        make_store: StoreFactory) -> None:
    store = make_store()
    for bad in ("../../etc/passwd", "0" * 32 + "/../x", 42):
        with pytest.raises(InvalidReference):
            await store.read(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidReference):
            await store.delete(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await store.put(12345)  # type: ignore[arg-type]
    await store.close()


async def test_planted_bad_shares_are_skipped_and_reported(make_store: StoreFactory) -> None:
    store = make_store()
    data = os.urandom(10_000)
    ref = await store.put(data)
    m = await store.engine.manifest(ref.id)
    entry = m.segments[0]
    truncated = store.by_name[entry.placement[0]]
    await truncated.put(share_key("s", ref.id, 0, 0), [b"TWSH\x01"])
    # a share rebuilt for a different k/n, with a valid hash of its own
    sk = SegmentKey(b"k" * 32, m.prefix, bytes.fromhex(ref.id), 0, True, 2, 3)
    alien = encode_segment(sk, data)
    await store.by_name[entry.placement[1]].put(
        share_key("s", ref.id, 0, 1), [alien.headers[1], alien.payloads[1]])
    assert await store.read(ref) == data  # four good shares remain
    report = await store.verify()
    reasons = {p.index: p.reason for p in report.problems}
    assert "truncated header" in reasons[0]
    assert "k=2 n=3" in reasons[1]
    assert report.degraded == {ref.id: 4}
    assert (await store.repair()).shares_rebuilt == 2
    assert (await store.verify()).healthy
    await store.close()


async def test_limits_on_store_parameters(make_store: StoreFactory) -> None:
    for kw in ({"k": 0}, {"k": 7, "n": 6}, {"n": 7}, {"segment_size": 10},
               {"segment_size": 1 << 40}):
        with pytest.raises(ValueError):
            make_store(**kw)
