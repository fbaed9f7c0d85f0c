"""The metadata cache (core.mail.cache.MetaCache) behind MailStore.meta.

FETCH and header SEARCH read metadata through ``MailStore.meta``; while a
session has the mailbox open it must answer from memory (no read-thread hop)
and still be exactly what SQLite holds: current flags and modseqs, no expunged
messages, and nothing stale after a mailbox is deleted and made again.
"""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import NotFound
from core.mail import MailStore, Meta
from core.mail.cache import Fixed, MetaCache
from core.service import Service

MSG = b"From: a@x\r\nSubject: s%d\r\n\r\nbody\r\n"


def count_reads(mail: MailStore) -> list[int]:
    """Count the read-thread hops of ``mail`` (a one-element list, bumped per call)."""
    calls = [0]
    run = mail.reads.run

    async def counted(fn: Any, *args: Any) -> Any:
        calls[0] += 1
        return await run(fn, *args)
    mail.reads.run = counted  # type: ignore[method-assign]
    return calls


def fields(metas: list[Meta]) -> list[tuple[Any, ...]]:
    return [(m.uid, m.ref, m.size, m.internal_date, m.flags, m.modseq, m.header)
            for m in metas]


async def test_meta_served_from_memory_and_matches_sqlite(
        service: tuple[Service, str]) -> None:
    svc, login = service
    mail = svc.mail
    for i in range(5):
        await mail.deliver(login, MSG % i)
    snap, watch = await mail.open(login, "INBOX", read_only=False)
    mb = snap.mailbox.id
    calls = count_reads(mail)
    first = await mail.meta(mb, [5, 1, 3], structure=False)
    assert [m.uid for m in first] == [1, 3, 5] and calls[0] == 1
    again = await mail.meta(mb, [1, 3, 5], structure=False)
    assert calls[0] == 1  # no hop: every message was cached by the first read
    assert fields(again) == fields(first)
    # flags and modseq follow the index, not the cache
    await mail.set_flags(mb, [3], "+", ["\\Flagged"])
    fresh = MailStore._load_meta  # what SQLite says, read directly
    truth = await svc.db.run(fresh, mb, [1, 3, 5], False)
    cached = await mail.meta(mb, [1, 3, 5], structure=False)
    assert calls[0] == 1
    assert fields(cached) == fields(truth) and "\\Flagged" in cached[1].flags
    # structure wanted: loaded once, then cached too
    with_structure = await mail.meta(mb, [1], structure=True)
    assert calls[0] == 2 and with_structure[0].structure is not None
    assert (await mail.meta(mb, [1], structure=True))[0].structure is not None
    assert calls[0] == 2
    # an expunged message is not answered
    await mail.set_flags(mb, [3], "+", ["\\Deleted"])
    assert await mail.expunge(mb) == [3]
    assert [m.uid for m in await mail.meta(mb, [1, 3, 5], structure=False)] == [1, 5]
    mail.close(watch)


async def test_appended_message_is_cached_and_mailbox_recreation_is_not_stale(
        service: tuple[Service, str]) -> None:
    svc, login = service
    mail = svc.mail
    await mail.create_mailbox(login, "Box")
    await mail.append(login, "Box", MSG % 1)
    snap, watch = await mail.open(login, "Box", read_only=False)
    mb = snap.mailbox.id
    calls = count_reads(mail)
    await mail.append(login, "Box", MSG % 2)
    metas = await mail.meta(mb, [1, 2], structure=True)
    assert [m.uid for m in metas] == [1, 2]
    assert calls[0] == 1 + 1  # append's mailbox lookup, then uid 1 only (uid 2 was cached)
    mail.close(watch)
    await mail.delete_mailbox(login, "Box")
    await mail.create_mailbox(login, "Box")
    await mail.append(login, "Box", MSG % 3)
    snap, watch = await mail.open(login, "Box", read_only=False)
    (meta,) = await mail.meta(snap.mailbox.id, [1], structure=False)
    assert b"Subject: s3" in meta.header  # not the old mailbox's uid 1
    mail.close(watch)


def test_meta_cache_is_bounded() -> None:
    cache = MetaCache(max_bytes=10 * (100 + MetaCache.PER_ENTRY))
    for uid in range(100):
        cache.put((1, 1, uid), Fixed("r", 1, 0.0, b"h" * 100, None))
    assert len(cache) == 10 and cache.size <= cache.max_bytes
    assert cache.get((1, 1, 99)) is not None and cache.get((1, 1, 0)) is None
    cache.drop((1, 1, 99))
    assert cache.get((1, 1, 99)) is None and len(cache) == 9
    cache.put((1, 1, 1000), Fixed("r", 1, 0.0, b"h" * 10_000, None))  # larger than the bound
    assert cache.get((1, 1, 1000)) is None


@pytest.mark.parametrize("kind", ["plain", "multipart"])
def test_meta_cache_holds_no_more_than_its_bound_as_python_holds_it(kind: str) -> None:
    # what the bound means is the memory the process holds, parsed structures included:
    # charged by their headers alone, a "16 MiB" cache held 103 MiB (issue 23's soak)
    import json
    import tracemalloc

    from core.mail import mime

    message = MULTIPART if kind == "multipart" else PLAIN
    header = message[:mime.header_end(message, 0, len(message))]
    structure = json.dumps(mime.parse(message))
    bound = 4 * 1024 * 1024
    cache = MetaCache(max_bytes=bound)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for uid in range(40_000):  # far more than fit
            cache.put((1, 7, uid), Fixed(f"{uid:032x}@0:1000", len(message), 1.7e9,
                                         bytes(header), json.loads(structure)))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    print(f"{kind}: {len(cache)} entries, {held / 2**20:.1f} MiB held for a "
          f"{bound / 2**20:.0f} MiB bound")
    assert held <= 1.15 * bound, held


def test_a_known_structure_length_is_charged_as_measured() -> None:
    """Filing hands over its structure's JSON length: the charge must be the one a
    measurement would give, or the bound above would no longer hold."""
    import json

    from core.mail import mime

    text = json.dumps(mime.parse(MULTIPART), separators=(",", ":"))
    item = Fixed("r", 1, 0.0, b"h" * 50, json.loads(text))
    assert MetaCache.cost(item, len(text)) == MetaCache.cost(item)
    cache = MetaCache()
    cache.put((1, 1, 1), item, len(text))
    assert cache.size == MetaCache.cost(item)


PLAIN = (b"From: x@example.org\r\nTo: alice@alice.localhost\r\nSubject: soak 12345\r\n"
         b"Message-ID: <1234567890.abc@example.org>\r\nDate: Sun, 06 Dec 2026 19:00:00 +0000"
         b"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + b"hello world\r\n" * 60)
MULTIPART = (b"From: \"Bob B\" <bob@example.org>\r\nTo: a@x.org, b@y.org, \"C\" <c@z.org>\r\n"
             b"Cc: d@w.org\r\nSubject: =?utf-8?q?caf=C3=A9?= report\r\nMessage-ID: <x@y>\r\n"
             b"Date: Sun, 06 Dec 2026 19:00:00 +0000\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/mixed; boundary=BB\r\n\r\n--BB\r\n"
             b"Content-Type: multipart/alternative; boundary=CC\r\n\r\n--CC\r\n"
             b"Content-Type: text/plain\r\n\r\nhi\r\n--CC\r\nContent-Type: text/html\r\n\r\n"
             b"<b>hi</b>\r\n--CC--\r\n--BB\r\nContent-Type: application/pdf; name=a.pdf\r\n"
             b"Content-Disposition: attachment; filename=a.pdf\r\n"
             b"Content-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--BB--\r\n")


async def test_select_row_remembered_only_while_valid(service: tuple[Service, str]) -> None:
    """SELECT of an open mailbox skips the row lookup; renames and deletes are seen."""
    svc, login = service
    mail = svc.mail
    await mail.create_mailbox(login, "Box")
    await mail.append(login, "Box", MSG % 1)
    snap1, w1 = await mail.open(login, "Box", read_only=False)
    calls = count_reads(mail)
    snap2, w2 = await mail.open(login, "Box", read_only=True)
    assert calls[0] == 0 and snap2.mailbox == snap1.mailbox
    await mail.append(login, "Box", MSG % 2)
    snap3, w3 = await mail.open(login, "Box", read_only=True)
    assert snap3.mailbox.uidnext == 3 and snap3.uids == [1, 2]  # counters are live
    await mail.rename_mailbox(login, "Box", "Other")
    with pytest.raises(NotFound):
        await mail.open(login, "Box", read_only=True)
    snap4, w4 = await mail.open(login, "Other", read_only=True)
    assert snap4.mailbox.name == "Other" and snap4.mailbox.id == snap1.mailbox.id
    await mail.subscribe(login, "Other", True)
    snap5, w5 = await mail.open(login, "Other", read_only=True)
    assert snap5.mailbox.subscribed
    for w in (w1, w2, w3, w4, w5):
        mail.close(w)
