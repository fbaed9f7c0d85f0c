"""The mail store on a real Service: SQLite metadata, dispersed-store bytes."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import Conflict, Forbidden, Invalid, NotFound
from core.mail import Mailbox, Meta, mime
from core.service import Service
from tests.protocols.imap.harness import close_service, init_data, open_service

MSG = (b"From: Alice <alice@example.org>\r\nTo: bob@example.org, \"Carol C\" <c@x.org>\r\n"
       b"Subject: hello\r\nMessage-ID: <1@x>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
       b"\r\nbody line 1\r\nbody line 2\r\n")

MULTI = (b"From: a@b\r\nSubject: multi\r\nMIME-Version: 1.0\r\n"
         b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
         b"preamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nfirst part\r\n"
         b"--XX\r\nContent-Type: message/rfc822\r\n\r\n"
         b"From: inner@x\r\nSubject: inner\r\n\r\ninner body\r\n"
         b"--XX\r\nContent-Type: application/octet-stream\r\n"
         b"Content-Transfer-Encoding: base64\r\n"
         b"Content-Disposition: attachment; filename=\"a.bin\"\r\n\r\nAAAA\r\n"
         b"--XX--\r\nepilogue\r\n")


async def delivered(svc: Service, login: str) -> tuple[Mailbox, int, Meta]:
    """Deliver MSG to the Inbox: the Inbox, the new uid and its row."""
    uid = await svc.mail.deliver(login, MSG)
    inbox = await svc.mail.mailbox(login, "INBOX")
    [meta] = await svc.mail.meta(inbox.id, [uid], structure=False)
    return inbox, uid, meta


def test_mime_offsets_of_every_part() -> None:
    root = mime.parse(MULTI)
    assert root["t"] == "multipart" and root["s"] == "mixed"
    text, msg, att = root["parts"]
    assert MULTI[text["b"]:text["z"]] == b"first part"
    assert text["p"] == [["charset", "utf-8"]]
    assert msg["msg"]["env"][1] == "inner"
    assert MULTI[msg["msg"]["b"]:msg["msg"]["z"]] == b"inner body"
    assert MULTI[att["b"]:att["z"]] == b"AAAA" and att["e"] == "base64"
    assert att["disp"] == ["attachment", [["filename", "a.bin"]]]
    assert mime.find_section(root, [2, 1]) is msg["msg"]
    assert mime.find_section(root, [4]) is None
    env = root["env"]
    assert env[1] == "multi" and env[2] == [[None, None, "a", "b"]]


def test_mime_single_part_and_envelope() -> None:
    root = mime.parse(MSG)
    assert root["t"] == "text" and root["l"] == 2
    assert MSG[root["b"]:root["z"]] == b"body line 1\r\nbody line 2\r\n"
    env = root["env"]
    assert env[5] == [[None, None, "bob", "example.org"], ["Carol C", None, "c", "x.org"]]
    assert env[3] == env[2]  # Sender defaults to From
    assert mime.find_section(root, [1]) is root


async def test_crlf_normalised_across_chunks() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for c in (b"a\r", b"\nb\n", b"\n", b"c"):
            yield c
    out = b"".join([c async for c in mime.crlf_normalise(chunks())])
    assert out == b"a\r\nb\r\n\r\nc"


async def test_ensure_user_creates_special_mailboxes_once(service: tuple[Service, str]) -> None:
    svc, login = service
    await svc.mail.ensure_user(login)
    svc.mail._known_users.clear()
    await svc.mail.ensure_user(login)
    boxes = {b.name: b.special for b in await svc.mail.mailboxes(login)}
    assert boxes == {"INBOX": None, "Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash",
                     "Junk": "\\Junk", "Archive": "\\Archive"}


async def test_deliver_is_readable_and_cached(service: tuple[Service, str]) -> None:
    svc, login = service
    uid = await svc.mail.deliver(login, MSG.replace(b"\r\n", b"\n"), flags=["\\Seen"],
                                 internal_date=1_700_000_000.0)
    assert uid == 1
    mb = await svc.mail.mailbox(login, "INBOX")
    [meta] = await svc.mail.meta(mb.id, [uid], structure=True)
    assert meta.flags == {"\\Seen"} and meta.internal_date == 1_700_000_000.0
    assert meta.size == len(MSG)  # stored with CRLF line ends
    assert meta.header.startswith(b"From: Alice") and meta.header.endswith(b"\r\n\r\n")
    assert meta.structure is not None and meta.structure["env"][1] == "hello"
    assert await svc.mail.read_bytes(meta.ref) == MSG
    assert await svc.mail.read_bytes(meta.ref, meta.structure["b"], meta.structure["b"] + 4) \
        == b"body"
    assert await svc.mail.quota(login) == (len(MSG), 0)


async def test_deliver_streamed_message(service: tuple[Service, str]) -> None:
    svc, login = service
    big = MSG + b"x" * 2_000_000 + b"\r\n"

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]
    uid = await svc.mail.deliver(login, chunks())
    mb = await svc.mail.mailbox(login, "INBOX")
    [meta] = await svc.mail.meta(mb.id, [uid], structure=True)
    assert meta.size == len(big)
    assert meta.structure is not None and meta.structure["l"] == 3
    assert await svc.mail.read_bytes(meta.ref, len(big) - 10) == big[-10:]


async def test_concurrent_deliveries_get_distinct_uids(service: tuple[Service, str]) -> None:
    svc, login = service
    uids = await asyncio.gather(*(svc.mail.deliver(login, MSG) for _ in range(50)))
    assert sorted(uids) == list(range(1, 51))
    st = await svc.mail.status((await svc.mail.mailbox(login, "INBOX")).id)
    assert st.messages == 50 and st.uidnext == 51 and st.unseen == 50


async def test_watch_sees_changes_in_order(service: tuple[Service, str]) -> None:
    svc, login = service
    snap, watch = await svc.mail.open(login, "INBOX", read_only=False)
    assert snap.uids == []
    uid = await svc.mail.deliver(login, MSG)
    await svc.mail.set_flags(snap.mailbox.id, [uid], "+", ["\\Deleted"])
    assert await svc.mail.expunge(snap.mailbox.id) == [uid]
    kinds = [(c.kind, c.uids) for c in watch.take()]
    assert kinds == [("exists", (uid,)), ("flags", (uid,)), ("expunge", (uid,))]
    assert watch.recent == {uid}
    assert await svc.mail.vanished(snap.mailbox.id, 0) == [uid]
    svc.mail.close(watch)


async def test_flags_modseq_and_unchangedsince(service: tuple[Service, str]) -> None:
    svc, login = service
    uid = await svc.mail.deliver(login, MSG)
    mb = await svc.mail.mailbox(login, "INBOX")
    changed, failed = await svc.mail.set_flags(mb.id, [uid], "+", ["\\Seen", "$Label1"])
    assert changed[0][1] == {"\\Seen", "$Label1"} and not failed
    modseq = changed[0][2]
    _, failed = await svc.mail.set_flags(mb.id, [uid], "-", ["\\Seen"], unchanged_since=modseq - 1)
    assert failed == [uid]
    with pytest.raises(Invalid):
        await svc.mail.set_flags(mb.id, [uid], "+", ["\\Bogus"])


async def test_copy_move_share_bytes_until_last_copy_goes(service: tuple[Service, str]) -> None:
    svc, login = service
    uid = await svc.mail.deliver(login, MSG)
    inbox = await svc.mail.mailbox(login, "INBOX")
    validity, src, new = await svc.mail.copy(inbox.id, [uid], login, "Archive")
    assert src == [uid] and new == [1]
    assert validity == (await svc.mail.mailbox(login, "Archive")).uidvalidity
    _, src, moved = await svc.mail.copy(inbox.id, [uid], login, "Trash", move=True)
    assert moved == [1]
    assert (await svc.mail.status(inbox.id)).messages == 0
    trash = await svc.mail.mailbox(login, "Trash")
    [meta] = await svc.mail.meta(trash.id, [1], structure=False)
    assert await svc.mail.read_bytes(meta.ref) == MSG
    await svc.mail.set_flags(trash.id, [1], "+", ["\\Deleted"])
    await svc.mail.expunge(trash.id)
    assert await svc.mail.read_bytes(meta.ref) == MSG  # Archive still holds it
    archive = await svc.mail.mailbox(login, "Archive")
    await svc.mail.set_flags(archive.id, [1], "+", ["\\Deleted"])
    await svc.mail.expunge(archive.id)
    with pytest.raises(Exception):  # noqa: B017 - the object is gone from the store
        await svc.mail.read_bytes(meta.ref)


async def test_mailbox_admin(service: tuple[Service, str]) -> None:
    svc, login = service
    await svc.mail.create_mailbox(login, "Projects/2024/Q1")
    names = {b.name for b in await svc.mail.mailboxes(login)}
    assert {"Projects", "Projects/2024", "Projects/2024/Q1"} <= names
    with pytest.raises(Conflict):
        await svc.mail.create_mailbox(login, "Projects")
    with pytest.raises(Conflict):
        await svc.mail.delete_mailbox(login, "Projects")
    await svc.mail.rename_mailbox(login, "Projects", "Work")
    names = {b.name for b in await svc.mail.mailboxes(login)}
    assert {"Work", "Work/2024", "Work/2024/Q1"} <= names and "Projects" not in names
    with pytest.raises(Forbidden):
        await svc.mail.delete_mailbox(login, "INBOX")
    with pytest.raises(NotFound):
        await svc.mail.delete_mailbox(login, "Nope")
    with pytest.raises(Invalid):
        await svc.mail.create_mailbox(login, "a//b")
    await svc.mail.deliver(login, MSG)
    await svc.mail.rename_mailbox(login, "INBOX", "Old")
    old = await svc.mail.mailbox(login, "Old")
    inbox = await svc.mail.mailbox(login, "INBOX")
    assert (await svc.mail.status(old.id)).messages == 1
    assert (await svc.mail.status(inbox.id)).messages == 0


async def test_quota_refuses_over_limit(tmp_path: Path) -> None:
    data, login, _ = init_data(tmp_path)
    svc = await open_service(data, {"mail.quota": len(MSG) + 10})
    try:
        await svc.mail.deliver(login, MSG)
        with pytest.raises(Forbidden):
            await svc.mail.deliver(login, MSG)
        assert await svc.mail.quota(login) == (len(MSG), len(MSG) + 10)
    finally:
        await close_service(svc)


@pytest.mark.slow
async def test_group_commit_throughput(service: tuple[Service, str]) -> None:
    """Concurrent deliveries share fsyncs: far more than one commit per message."""
    svc, login = service
    await svc.mail.ensure_user(login)
    t = time.perf_counter()
    await asyncio.gather(*(svc.mail.deliver(login, MSG) for _ in range(300)))
    rate = 300 / (time.perf_counter() - t)
    assert rate > 50, rate


def test_body_cache_is_bounded_and_least_recently_used_goes_first() -> None:
    from core.mail.cache import BytesCache

    cache = BytesCache(max_bytes=30, max_item=10, entry_bytes=0)
    cache.put("big", b"x" * 11)  # over max_item: never kept
    assert cache.get("big") is None
    for name in "abc":
        cache.put(name, name.encode() * 10)
    assert cache.get("a") == b"a" * 10  # a is now the most recent
    cache.put("d", b"d" * 10)  # evicts b, the least recently used
    assert cache.get("b") is None and cache.get("c") == b"c" * 10
    assert cache.size == 30 and len(cache) == 3
    cache.drop("a")
    assert cache.get("a") is None and cache.size == 20


def test_a_cache_of_small_values_charges_what_each_entry_holds() -> None:
    """IMAP's header fields are small values: charged by their bytes alone, a
    "4 MiB" cache of them held about twice that (a soak's tracemalloc)."""
    import tracemalloc

    from core.mail.cache import BytesCache

    cache: BytesCache[tuple[str, int]] = BytesCache(max_bytes=1 << 20, max_item=4096)
    view = "1:7:HEADER.FIELDS:FROM TO SUBJECT"
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for uid in range(100_000):
            cache.put((view, uid), b"From: someone@example.org\r\nSubject: %d\r\n" % uid)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert cache.size <= 1 << 20
    assert held < 1.25 * (1 << 20), f"{held >> 10} KiB held for a 1024 KiB bound"


async def test_small_bodies_are_served_from_the_cache_until_expunged(
        service: tuple[Service, str]) -> None:
    svc, login = service
    inbox, uid, meta = await delivered(svc, login)
    assert svc.mail.bodies.get(meta.ref) == MSG  # kept as it was stored
    svc.mail.bodies.drop(meta.ref)
    assert await svc.mail.read_bytes(meta.ref, 5, 10) == MSG[5:10]  # read once, then kept
    assert svc.mail.bodies.get(meta.ref) == MSG
    await svc.mail.set_flags(inbox.id, [uid], "+", ["\\Deleted"])
    assert await svc.mail.expunge(inbox.id) == [uid]
    assert svc.mail.bodies.get(meta.ref) is None
    with pytest.raises(Exception):  # noqa: B017 - refused at once, deleted in the background
        await svc.mail.read_bytes(meta.ref)
    await asyncio.gather(*svc.mail._background)
    with pytest.raises(Exception):  # noqa: B017 - and gone from the store
        await svc.mail.read_bytes(meta.ref)


_SPACE = st.text(alphabet=" \t", max_size=3)
_WORD = st.text(alphabet="aZ0.-_!'", min_size=1, max_size=5)
_ADDR = st.builds("{}@{}".format, st.text(alphabet="a.-_", min_size=1, max_size=5),
                  st.text(alphabet="b.-", min_size=1, max_size=5))
_DISPLAY = st.one_of(
    st.lists(st.tuples(_WORD, _SPACE), max_size=3).map(lambda ws: "".join(w + s for w, s in ws)),
    st.text(alphabet='ab ,.()<>@\\', max_size=8).map(lambda t: f'"{t}"'))
_FIELD = st.one_of(
    st.tuples(_SPACE, _ADDR, _SPACE).map("".join),
    st.tuples(_SPACE, _DISPLAY, _SPACE, _ADDR, _SPACE).map(
        lambda p: f"{p[0]}{p[1]}{p[2]}<{p[3]}>{p[4]}"),
    st.text(alphabet="ab.Z09 \t\"\\<>@,()-_!'", max_size=30))


@settings(max_examples=1000, deadline=None)
@given(_FIELD)
def test_plain_address_fast_path_agrees_with_the_rfc_5322_parser(value: str) -> None:
    plain = mime.plain_address(value)
    if plain is not None:
        assert [plain] == email.utils.getaddresses([value])


def test_plain_address_takes_the_common_forms_and_leaves_the_rest() -> None:
    assert mime.plain_address(" a@b.c ") == ("", "a@b.c")
    assert mime.plain_address('"Smith, John" <a@b.c>') == ("Smith, John", "a@b.c")
    assert mime.plain_address("John   Q. Public <a@b.c>") == ("John Q. Public", "a@b.c")
    for other in ("A <a@b.c>, B <c@d.e>", '"a\\"b" <a@b.c>', "Müller <a@b.c>", "a@b.c (x)"):
        assert mime.plain_address(other) is None


async def test_bulk_insert_gives_each_row_its_uid_modseq_and_flags(
        service: tuple[Service, str]) -> None:
    svc, login = service
    inbox, _, meta = await delivered(svc, login)
    items = [(meta.ref, meta.header, "{}", meta.size, 1.0 + i, ["\\Seen"] if i else [])
             for i in range(3)]
    await svc.mail.bulk_insert(login, "INBOX", items)
    metas = await svc.mail.meta(inbox.id, [2, 3, 4], structure=False)
    assert [m.uid for m in metas] == [2, 3, 4]
    assert [m.modseq for m in metas] == [meta.modseq + 1, meta.modseq + 2, meta.modseq + 3]
    assert [sorted(m.flags) for m in metas] == [[], ["\\Seen"], ["\\Seen"]]
    assert [await svc.mail.read_bytes(m.ref) for m in metas] == [MSG] * 3
