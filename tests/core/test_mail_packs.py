"""Small messages filed together share one stored object (core.mail.packs, PACK_BYTES)."""

from __future__ import annotations

import asyncio
import time

import pytest

from core.errors import Unavailable
from core.mail import packs
from core.mail.cache import BytesCache
from core.mail.journal import Entry
from core.service import Service


def message(n: int, size: int = 0) -> bytes:
    return f"From: a@example.com\r\nSubject: m{n}\r\n\r\n".encode() + b"y" * size + b"\r\n"


async def file(svc: Service, login: str, messages: list[bytes], first_seq: int = 1) -> list[str]:
    """File ``messages`` as one journal batch; the ref of each, in order."""
    entries = [Entry(first_seq + i, login, m, time.time()) for i, m in enumerate(messages)]
    await svc.mail.file(entries)
    inbox = await svc.mail.mailbox(login, "INBOX")
    snapshot, watch = await svc.mail.open(login, "INBOX", read_only=True)
    svc.mail.close(watch)
    metas = await svc.mail.meta(inbox.id, snapshot.uids, structure=False)
    return [m.ref for m in metas][-len(messages):]


async def objects(svc: Service) -> set[str]:
    return {f"{i.id}:{i.size}" for i in await svc.store.list()}


def forget_bodies(svc: Service) -> None:
    """Empty the body cache, so reads go to the dispersed store."""
    svc.mail.bodies = BytesCache(max_item=packs.PACK_BYTES)


async def expunge(svc: Service, login: str, uids: list[int]) -> None:
    inbox = await svc.mail.mailbox(login, "INBOX")
    await svc.mail.set_flags(inbox.id, uids, "+", ["\\Deleted"])
    await svc.mail.expunge(inbox.id, uids)


async def test_small_messages_of_one_batch_share_an_object_and_read_back_exactly(
        service: tuple[Service, str]) -> None:
    svc, login = service
    small = [message(i, 100 * i) for i in range(10)]
    big = message(99, packs.PACK_MEMBER_MAX)  # too big to pack: stored alone
    before = await objects(svc)
    refs = await file(svc, login, [*small, big])
    assert len(await objects(svc) - before) == 2
    assert all("@" in ref for ref in refs[:10]) and "@" not in refs[10]
    forget_bodies(svc)  # read from the store, not from the cache filing filled
    for ref, data in zip(refs, [*small, big], strict=True):
        assert await svc.mail.read_bytes(ref) == data
        assert await svc.mail.read_bytes(ref, 5, 20) == data[5:20]
        assert b"".join([c async for c in svc.mail.read(ref, 3)]) == data[3:]


async def test_packs_stay_within_their_size_limit(service: tuple[Service, str]) -> None:
    svc, login = service
    before = await objects(svc)
    size = packs.PACK_MEMBER_MAX - 100
    await file(svc, login, [message(i, size) for i in range(12)])
    made = await objects(svc) - before
    assert all(int(ref.split(":")[1]) <= packs.PACK_BYTES for ref in made)
    assert len(made) == 3  # four members of ~32 KiB in each 128 KiB pack


async def test_a_pack_is_deleted_only_when_its_last_member_is_expunged(
        service: tuple[Service, str]) -> None:
    svc, login = service
    before = await objects(svc)
    refs = await file(svc, login, [message(i) for i in range(3)])
    [pack] = await objects(svc) - before
    await expunge(svc, login, [1, 2])
    forget_bodies(svc)
    assert await svc.mail.read_bytes(refs[2]) == message(2)  # the last member still reads
    assert pack in await objects(svc)
    await expunge(svc, login, [3])
    for _ in range(100):  # deletion runs behind the expunge
        if pack not in await objects(svc):
            break
        await asyncio.sleep(0.02)
    assert pack not in await objects(svc)
    with pytest.raises(Unavailable):
        await svc.mail.read_bytes(refs[2])


async def test_an_expunged_member_leaves_the_body_cache_at_once(
        service: tuple[Service, str]) -> None:
    """Its pack lives on for the other members, but its own bytes must not stay in
    memory (they did, until the cache evicted them: the soak's heap grew by them)."""
    svc, login = service
    refs = await file(svc, login, [message(i) for i in range(3)])
    assert all(svc.mail.bodies.get(r) is not None for r in refs)  # filing cached them
    await expunge(svc, login, [1, 2])
    assert svc.mail.bodies.get(refs[0]) is None and svc.mail.bodies.get(refs[1]) is None
    assert svc.mail.bodies.get(refs[2]) == message(2)
    inbox = await svc.mail.mailbox(login, "INBOX")
    await svc.mail.copy(inbox.id, [3], login, "Archive", move=True)  # a copy lives on
    assert svc.mail.bodies.get(refs[2]) == message(2)


async def test_a_copy_keeps_its_pack_alive_after_the_original_is_expunged(
        service: tuple[Service, str]) -> None:
    svc, login = service
    refs = await file(svc, login, [message(i) for i in range(2)])
    inbox = await svc.mail.mailbox(login, "INBOX")
    await svc.mail.copy(inbox.id, [1, 2], login, "Archive")
    await expunge(svc, login, [1, 2])
    forget_bodies(svc)
    assert [await svc.mail.read_bytes(r) for r in refs] == [message(0), message(1)]


def test_a_malformed_member_ref_is_refused() -> None:
    from core.errors import NotFound

    with pytest.raises(NotFound):
        packs.locate("abc:100@x:5")
    assert packs.locate("abc:100@10:5") == ("abc:100", 10, 5)
    assert packs.locate("abc:100") == ("abc:100", None, 100)


async def test_a_batch_gives_each_user_consecutive_uids_and_modseqs(
        service: tuple[Service, str]) -> None:
    svc, alice = service
    bob = "bob@alice.localhost"
    await svc.mail.ensure_user(bob)
    logins = [alice, bob, alice, alice, bob]
    await svc.mail.file([Entry(i + 1, login, message(i), time.time())
                         for i, login in enumerate(logins)])
    for login, expected in ((alice, [0, 2, 3]), (bob, [1, 4])):
        inbox = await svc.mail.mailbox(login, "INBOX")
        snapshot, watch = await svc.mail.open(login, "INBOX", read_only=True)
        svc.mail.close(watch)
        metas = await svc.mail.meta(inbox.id, snapshot.uids, structure=False)
        assert [m.uid for m in metas] == list(range(1, len(expected) + 1))
        assert [await svc.mail.read_bytes(m.ref) for m in metas] == [
            message(i) for i in expected]
        modseqs = [m.modseq for m in metas]
        assert modseqs == sorted(set(modseqs))  # distinct, rising with the uid
        status = await svc.mail.status(inbox.id)
        assert (status.uidnext, status.highestmodseq) == (len(expected) + 1, modseqs[-1])


async def listed(svc: Service) -> set[str]:
    return set(await svc.db.run(lambda c: [r[0] for r in c.execute(
        "SELECT ref FROM mail_garbage")]))


async def test_a_pack_whose_delete_fails_stays_listed_until_a_sweep_deletes_it(
        service: tuple[Service, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The expunge lists the freed pack in its own transaction (core.reclaim): a
    failed delete, or a crash before it, leaves it listed for the next sweep,
    where it used to be an orphan only ``storage verify`` would find."""
    svc, login = service
    before = await objects(svc)
    await file(svc, login, [message(i) for i in range(2)])
    [pack] = await objects(svc) - before
    store = svc.store
    assert store is not None
    real_delete = store.delete

    async def failing(ref: object) -> None:
        raise OSError("backend down")
    monkeypatch.setattr(store, "delete", failing)
    await expunge(svc, login, [1, 2])
    for _ in range(100):  # the delete runs (and fails) behind the expunge
        if not svc.mail.garbage.gone(pack):
            break
        await asyncio.sleep(0.02)
    assert await listed(svc) == {pack}
    assert pack in await objects(svc)
    monkeypatch.setattr(store, "delete", real_delete)
    assert await svc.mail.garbage.sweep() == 1
    assert pack not in await objects(svc)
    assert await listed(svc) == set()
