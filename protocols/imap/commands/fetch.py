"""FETCH and UID FETCH (RFC 3501 §6.4.5, §7.4.2; RFC 7162 CHANGEDSINCE/VANISHED).

Flags, uids and modseqs come from the session's index; sizes, dates, headers,
ENVELOPE and BODYSTRUCTURE from the metadata cache; only body sections read
the dispersed store, and then only the byte range the section (and the
``<partial>``) names, streamed to the client as a literal.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.mail import Extents, Mailbox, Meta, addresses
from core.mail.mime import Part
from protocols.imap import binary, preview, render
from protocols.imap.commands import SELECTED, args, command
from protocols.imap.errors import Bad, No
from protocols.imap.parser import Atom, Token
from protocols.imap.selected import compress

if TYPE_CHECKING:
    from protocols.imap.parser import Command
    from protocols.imap.selected import Selected
    from protocols.imap.session import Session

log = logging.getLogger("twin.imap")
BATCH = 200
MACROS = {
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
}
SIMPLE = {"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY", "BODYSTRUCTURE",
          "MODSEQ", "PREVIEW"}
# a client's first look at a mailbox: from the index and one range read, no header
LISTING = {"UID", "FLAGS", "MODSEQ", "RFC822.SIZE", "INTERNALDATE"}
NEEDS_STRUCTURE = {"ENVELOPE", "BODY", "BODYSTRUCTURE", "PREVIEW"}
_SECTION = re.compile(r"^(BODY|BODY\.PEEK)\[([^\]]*)\](?:<(\d{1,10})(?:\.(\d{1,10}))?>)?$",
                      re.I)
_FIELD_OK = re.compile(r"^[!-9;-~]+$")


@dataclass(frozen=True)
class Section:
    """One ``BODY[...]<...>`` item."""

    peek: bool
    path: tuple[int, ...]
    text: str  # "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME
    fields: tuple[str, ...]
    origin: int | None
    length: int | None
    label: str  # as echoed in the response, without the partial's length
    binary: str = ""  # RFC 3516: "BINARY" (decoded content) or "SIZE" (its length)

    @property
    def needs_structure(self) -> bool:
        return bool(self.path) or bool(self.binary)


# RFC 3501 §6.4.5: the RFC822 forms are sections with their own names
RFC822 = {
    "RFC822": Section(False, (), "", (), None, None, "RFC822"),
    "RFC822.TEXT": Section(False, (), "TEXT", (), None, None, "RFC822.TEXT"),
    "RFC822.HEADER": Section(True, (), "HEADER", (), None, None, "RFC822.HEADER"),
}


_BINARY = re.compile(r"^(BINARY|BINARY\.PEEK|BINARY\.SIZE)\[([0-9.]*)\]"
                     r"(?:<(\d{1,10})\.(\d{1,10})>)?$", re.I)


def parse_binary(atom: str) -> Section:
    """RFC 3516 §4.2 ``BINARY[part]<partial>``, ``BINARY.PEEK``, ``BINARY.SIZE[part]``."""
    m = _BINARY.match(atom)
    if m is None:
        raise Bad(f"invalid FETCH item {atom[:60]}")
    kind = m.group(1).upper()
    spec = m.group(2)
    path = tuple(int(n) for n in spec.split(".")) if spec else ()
    if any(n == 0 for n in path) or len(path) > 50:
        raise Bad("invalid section number")
    if kind == "BINARY.SIZE" and m.group(3) is not None:
        raise Bad("BINARY.SIZE takes no partial")
    origin = int(m.group(3)) if m.group(3) is not None else None
    length = int(m.group(4)) if m.group(4) is not None else None
    if kind == "BINARY.SIZE":
        return Section(True, path, "", (), None, None, f"BINARY.SIZE[{spec}]", "SIZE")
    label = f"BINARY[{spec}]" + (f"<{origin}>" if origin is not None else "")
    return Section(kind == "BINARY.PEEK", path, "", (), origin, length, label, "BINARY")


def parse_section(atom: str) -> Section:
    m = _SECTION.match(atom)
    if m is None:
        raise Bad(f"invalid FETCH item {atom[:60]}")
    spec = m.group(2).strip()
    head, _, flist = spec.partition(" ")
    pieces = head.split(".") if head else []
    path: list[int] = []
    while pieces and pieces[0].isdigit():
        n = int(pieces.pop(0))
        if n == 0 or len(path) >= 50:
            raise Bad("invalid section number")
        path.append(n)
    text = ".".join(pieces).upper()
    if text not in ("", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"):
        raise Bad(f"invalid section {spec[:60]}")
    if text == "MIME" and not path:
        raise Bad("MIME needs a part number")
    fields: tuple[str, ...] = ()
    if text.startswith("HEADER.FIELDS"):
        inner = flist.strip()
        if not (inner.startswith("(") and inner.endswith(")")):
            raise Bad("HEADER.FIELDS needs a list of field names")
        names = [f.strip('"') for f in inner[1:-1].split()]
        if not names or not all(_FIELD_OK.match(f) for f in names):
            raise Bad("invalid header field names")
        fields = tuple(f.upper() for f in names)
    elif flist:
        raise Bad(f"invalid section {spec[:60]}")
    origin = int(m.group(3)) if m.group(3) is not None else None
    length = int(m.group(4)) if m.group(4) is not None else None
    if origin is not None and length is None:
        raise Bad("a partial needs <origin.length>")
    section_text = ".".join([*map(str, path), text]) if text else ".".join(map(str, path))
    if fields:
        section_text += " (" + " ".join(fields) + ")"
    label = f"BODY[{section_text}]" + (f"<{origin}>" if origin is not None else "")
    return Section(m.group(1).upper() == "BODY.PEEK", tuple(path), text, fields, origin,
                   length, label)


def find_part(root: Part, path: Sequence[int]) -> Part | None:
    """The part a section number path names (RFC 3501 §6.4.5).

    Numbers count the body parts of a *message*: a multipart body's parts, or
    the one part that a non-multipart body is (so ``1`` of a message whose
    body is message/rfc822 is that whole encapsulated message). Below a
    message/rfc822 part the numbers go on in the encapsulated message's body;
    below a multipart part, in its parts.
    """
    part: Part | None = None
    for n in path:
        if part is None:
            children = root.get("parts", [root])
        elif "msg" in part:
            inner = part["msg"]
            children = inner.get("parts", [inner])
        elif "parts" in part:
            children = part["parts"]
        else:
            return None
        if not 1 <= n <= len(children):
            return None
        part = children[n - 1]
    return part


def parse_items(tokens: list[Token]) -> list[str | Section]:
    if len(tokens) == 1 and isinstance(tokens[0], list):
        raw: list[Token] = preview.modifiers(tokens[0])  # RFC 8970 PREVIEW (LAZY)
    elif len(tokens) == 1:
        raw = [tokens[0]]
    else:
        raise Bad("invalid FETCH items")
    if len(raw) == 1 and isinstance(raw[0], Atom) and raw[0].upper() in MACROS:
        return list(MACROS[raw[0].upper()])
    items: list[str | Section] = []
    for tok in raw:
        name = args.atom(tok)
        upper = name.upper()
        if upper in RFC822:
            items.append(RFC822[upper])
        elif upper in SIMPLE:
            items.append(upper)
        elif upper.startswith("BODY[") or upper.startswith("BODY.PEEK["):
            items.append(parse_section(name))
        elif upper.startswith("BINARY"):
            items.append(parse_binary(name))
        else:
            raise Bad(f"unknown FETCH item {name[:40]}")
    if not items:
        raise Bad("no FETCH items")
    return items


_FIELD_START = re.compile(rb"\r\n(?![ \t])")  # a line break that starts a new field


def filter_header(header: bytes, fields: tuple[str, ...], keep: bool) -> bytes:
    """The header lines named (or not named) by HEADER.FIELDS[.NOT], plus the blank line.

    Field names compare as bytes, ASCII case-folded (RFC 3501 §6.4.5: the
    names are atoms, so a non-ASCII name can never be one asked for): no
    decoding per line, and the asked-for set is built once per field list.
    """
    wanted = _wanted(fields)
    kept = []
    for block in _FIELD_START.split(header):
        colon = block.find(b":")
        if colon >= 0 and (block[:colon].strip().lower() in wanted) == keep:
            kept.append(block)
    kept += (b"", b"")
    return b"\r\n".join(kept)


@functools.lru_cache(maxsize=64)
def _wanted(fields: tuple[str, ...]) -> frozenset[bytes]:
    return frozenset(f.lower().encode("ascii", "replace") for f in fields)


# RFC 3501 §6.4.5 FETCH, §6.4.8 UID FETCH
@command("FETCH", SELECTED, uid=True)
async def fetch(s: Session, cmd: Command) -> str | None:
    sel = s.need_selected()
    if len(cmd.args) not in (2, 3):
        raise Bad("FETCH needs a set and items")
    uids = sel.parse_set(args.atom(cmd.args[0]), uid=cmd.uid)
    items = parse_items([cmd.args[1]])
    changed_since: int | None = None
    vanished = False
    if len(cmd.args) == 3:
        mods = args.plist(cmd.args[2])
        i = 0
        while i < len(mods):
            name = args.atom(mods[i]).upper()
            if name == "CHANGEDSINCE" and i + 1 < len(mods):
                changed_since = args.number(mods[i + 1], bits=63)
                s.enable_condstore()
                i += 1
            elif name == "VANISHED" and cmd.uid and s.qresync:
                vanished = True
            else:
                raise Bad(f"unknown FETCH modifier {name[:30]}")
            i += 1
        if vanished and changed_since is None:
            raise Bad("VANISHED needs CHANGEDSINCE")
    if "MODSEQ" in items:
        s.enable_condstore()
    if cmd.uid and "UID" not in items:
        items.insert(0, "UID")
    if changed_since is not None:
        if "MODSEQ" not in items:
            items.append("MODSEQ")
        if vanished:
            text = args.atom(cmd.args[0])
            gone = await s.mail.vanished(sel.mailbox.id, changed_since)
            in_set = _in_uid_set(text, gone)
            if in_set:
                s.untagged(b"VANISHED (EARLIER) " + compress(in_set).encode())
        by_uid = sel.modseqs
        uids = [u for u in uids if by_uid.get(u, 0) > changed_since]
    sections = [i for i in items if isinstance(i, Section)]
    sets_seen = not sel.read_only and any(not x.peek for x in sections)
    if sets_seen:
        flags = sel.flags
        need = [u for u in uids if u in flags and "\\Seen" not in flags[u]]
        if need:
            changed, _ = await s.mail.set_flags(sel.mailbox.id, need, "+", ["\\Seen"])
            modseqs = sel.modseqs
            for uid, now, modseq in changed:
                if uid in flags:
                    flags[uid], modseqs[uid] = now, modseq
            if "FLAGS" not in items:
                items.append("FLAGS")
    names = {i for i in items if isinstance(i, str)}
    if names <= LISTING and not sections:
        await _fetch_listing(s, uids, [i for i in dict.fromkeys(items) if isinstance(i, str)])
        return None
    structure = bool(names & NEEDS_STRUCTURE) or any(x.needs_structure for x in sections)
    inline = _inline_renderers(s, items) if all(_is_inline(i) for i in items) else None
    pos = -1
    for start in range(0, len(uids), BATCH):
        chunk = uids[start:start + BATCH]
        metas = await s.mail.meta(sel.mailbox.id, chunk, structure=structure)
        for meta in metas:
            held = sel.uids  # the next position first: the messages come in uid order
            pos = pos + 1 if pos + 1 < len(held) and held[pos + 1] == meta.uid \
                else sel.pos(meta.uid)
            if pos < 0:
                continue
            if inline is not None:
                s.out += b"* %d FETCH (%s)\r\n" % (
                    pos + 1, b" ".join([part(pos, meta) for part in inline]))
            else:
                await _fetch_one(s, meta, items)
            await s.maybe_flush()
    return None


def _is_inline(item: str | Section) -> bool:
    """Whether an item comes from the session's index and the cached metadata alone."""
    if isinstance(item, Section):
        return not item.binary and not item.path and item.text.startswith("HEADER")
    return item != "PREVIEW"


Item = Callable[[int, Meta], bytes]  # one item of one message: (position, metadata)


def _inline_renderers(s: Session, items: list[str | Section]) -> list[Item]:
    """Each item's renderer, when no item reads the store: chosen once per command.

    Why apart from ``_fetch_parts``: a client listing a mailbox asks for
    header fields of a few hundred messages at a time (``FETCH 1:200
    (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To ...)])``); built
    without a suspension point per item, that costs a third of the chain of
    coroutines the general path needs for items that may stream, and with
    each item's branch taken once, not per message, a fifth less again.
    """
    box = s.need_selected().mailbox
    return [functools.partial(_header_section, s, item, fields_view(box, item))
            if isinstance(item, Section)
            else _SIMPLE.get(item) or functools.partial(_simple_at, s, item)
            for item in items]


def _simple_at(s: Session, item: str, pos: int, meta: Meta) -> bytes:
    return _simple(s, pos, meta, item)


_SIMPLE: dict[str, Item] = {  # items of the message alone, not of the session's view
    "UID": lambda pos, meta: b"UID %d" % meta.uid,
    "RFC822.SIZE": lambda pos, meta: b"RFC822.SIZE %d" % meta.size,
}


def fields_view(box: Mailbox, sec: Section) -> str:
    """What a header-fields cache key shares across a mailbox's messages: one
    string, whose hash Python keeps, so a lookup per message hashes it and the
    uid (a tuple of five values, the field list among them, was a tenth of a
    ``FETCH 1:200`` of header fields)."""
    return f"{box.id}:{box.uidvalidity}:{sec.text}:{' '.join(sec.fields)}"


def _header_of(s: Session, box: Mailbox, meta: Meta, sec: Section,
               view: str | None = None) -> bytes:
    """``BODY[HEADER]`` or ``BODY[HEADER.FIELDS[.NOT] (...)]`` of the whole message
    ``meta`` of mailbox ``box`` (the selected one, or a CATENATE URL's);
    ``view``: ``fields_view(box, sec)``, if the caller made it once for many.

    Header fields are kept per message once cut out (``ImapServer.header_fields``,
    as Dovecot's cache file keeps them): every new session of a client
    listing a folder asks for the same fields of the same messages."""
    if sec.text == "HEADER":
        return meta.header
    key = (view or fields_view(box, sec), meta.uid)
    data = s.server.header_fields.get(key)
    if data is None:
        data = filter_header(meta.header, sec.fields, sec.text == "HEADER.FIELDS")
        s.server.header_fields.put(key, data)
    return data


def _header_section(s: Session, sec: Section, view: str, pos: int, meta: Meta) -> bytes:
    """``_header_of`` as a response item: its label, the partial, the literal."""
    data = _header_of(s, s.need_selected().mailbox, meta, sec, view)
    if sec.origin is not None:
        assert sec.length is not None
        data = data[sec.origin:sec.origin + sec.length]
    return sec.label.encode() + b" {%d}\r\n" % len(data) + data


def _in_uid_set(text: str, uids: list[int]) -> list[int]:
    ranges = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        a = 0xFFFFFFFF if lo == "*" else int(lo)
        b = 0xFFFFFFFF if (hi or lo) == "*" else int(hi or lo)
        ranges.append((min(a, b), max(a, b)))
    return [u for u in uids if any(a <= u <= b for a, b in ranges)]


_LISTING_FIELDS = {"UID": b"UID %d", "FLAGS": b"FLAGS %s", "MODSEQ": b"MODSEQ (%d)",
                   "RFC822.SIZE": b"RFC822.SIZE %d", "INTERNALDATE": b"INTERNALDATE %s"}


async def _fetch_listing(s: Session, uids: list[int], items: list[str]) -> None:
    """``FETCH 1:* (UID RFC822.SIZE FLAGS INTERNALDATE)``: what a mail client asks
    of every message when it first opens a mailbox (Thunderbird, mbsync).

    Sizes and dates come from one range read (``MailStore.sizes``, only when
    asked for), the rest from the session's index; no header is loaded.
    Rendered by column, one ``%`` format per message: a ``UID FETCH 1:*
    (FLAGS)`` of 100,000 messages is a tight loop. A message expunged by
    another session meanwhile is left out, as the general path leaves it out.
    """
    sel = s.need_selected()
    if not uids:
        return
    extents = Extents(uids, [], [])
    if {"RFC822.SIZE", "INTERNALDATE"} & set(items):
        extents = await s.mail.sizes(sel.mailbox.id, uids[0], uids[-1])
    if extents.uids != uids:  # a subset, or some expunged meanwhile: keep what both have
        have = dict(zip(extents.uids, zip(extents.sizes, extents.dates, strict=True),
                        strict=True))
        uids = [u for u in uids if u in have]
        if not uids:
            return
        extents.sizes = [have[u][0] for u in uids]
        extents.dates = [have[u][1] for u in uids]
    first, n = sel.pos(uids[0]), len(uids)
    # None: the uids are a contiguous run of the index (``1:*``), columns are slices
    positions = None if sel.uids[first:first + n] == uids else [sel.pos(u) for u in uids]
    cols: list[Sequence[Any]] = [range(first + 1, first + 1 + n) if positions is None
                                 else [p + 1 for p in positions]]
    for item in items:
        if item == "UID":
            cols.append(uids)
        elif item == "RFC822.SIZE":
            cols.append(extents.sizes)
        elif item == "INTERNALDATE":
            cols.append(render.date_times(extents.dates))
        elif item == "FLAGS":
            cols.append(_flag_texts(sel, uids, positions, first))
        else:
            cols.append(sel.modseq_list[first:first + n] if positions is None
                        else [sel.modseq_list[p] for p in positions])
    template = b"* %d FETCH (" + b" ".join(_LISTING_FIELDS[i] for i in items) + b")\r\n"
    for start in range(0, n, 4096):
        rows = zip(*(c[start:start + 4096] for c in cols), strict=True)
        s.out += b"".join([template % row for row in rows])
        await s.maybe_flush()


def _flag_texts(sel: Selected, uids: list[int], positions: list[int] | None,
                first: int) -> list[bytes]:
    """FLAGS texts, one render per distinct flag set, \\Recent added where it is."""
    column = sel.flag_list[first:first + len(uids)] if positions is None \
        else [sel.flag_list[p] for p in positions]
    texts = {f: render.flags(f) for f in set(column)}
    shown = list(map(texts.__getitem__, column))
    if sel.recent:
        for i, uid in enumerate(uids):
            if uid in sel.recent:
                shown[i] = render.flags(column[i] | {"\\Recent"})
    return shown


async def _fetch_one(s: Session, meta: Meta, items: list[str | Section]) -> None:
    """One message's FETCH response, whole or not at all.

    A body read can fail half-way through the response (the message was
    expunged by another session and its object deleted meanwhile). Its partial
    bytes are dropped, so the tagged NO that follows is not swallowed by an
    announced literal (which left the client waiting forever); if part of it
    already went out (a streamed large body), the stream cannot be repaired
    and the connection is closed instead.
    """
    mark, flushes = len(s.out), s.flushes
    try:
        await _fetch_parts(s, meta, items)
    except Exception:
        if s.flushes != flushes:
            log.warning("FETCH of uid %d failed mid-literal: closing the connection", meta.uid)
            raise ConnectionError("response broken off inside a literal") from None
        del s.out[mark:]
        raise


async def _fetch_parts(s: Session, meta: Meta, items: list[str | Section]) -> None:
    pos = s.need_selected().pos(meta.uid)
    s.out += b"* %d FETCH (" % (pos + 1)
    for n, item in enumerate(items):
        if n:
            s.out += b" "
        if isinstance(item, Section) and item.binary:
            await _binary(s, meta, item)
        elif isinstance(item, Section):
            s.out += item.label.encode() + b" "
            await _section(s, meta, item)
        elif item == "PREVIEW":
            s.out += await preview.fetch_item(s, meta)
        else:
            s.out += _simple(s, pos, meta, item)
    s.out += b")\r\n"


def _simple(s: Session, pos: int, meta: Meta, item: str) -> bytes:
    """An item that is not a body section; ``pos`` is the message's place in the
    session's index (flags and modseq are the session's view)."""
    sel = s.need_selected()
    if item == "UID":
        return b"UID %d" % meta.uid
    if item == "FLAGS":
        flags = sel.flag_list[pos]
        if meta.uid in sel.recent:
            flags = flags | {"\\Recent"}
        return b"FLAGS " + render.flag_set(flags)
    if item == "MODSEQ":
        return b"MODSEQ (%d)" % sel.modseq_list[pos]
    if item == "INTERNALDATE":
        return b"INTERNALDATE " + render.date_time(meta.internal_date)
    if item == "RFC822.SIZE":
        return b"RFC822.SIZE %d" % meta.size
    structure = meta.structure
    assert structure is not None
    if item == "ENVELOPE":
        return b"ENVELOPE " + render.envelope(addresses.envelope(structure["env"], meta.header))
    if item == "BODYSTRUCTURE":
        return b"BODYSTRUCTURE " + render.body_structure(structure, extended=True, utf8=s.utf8)
    if item == "BODY":
        return b"BODY " + render.body_structure(structure, extended=False, utf8=s.utf8)
    raise Bad(f"unsupported item {item}")


async def _range(s: Session, box: Mailbox, meta: Meta, sec: Section
                 ) -> tuple[bytes | None, int, int]:
    """What a section of message ``meta`` of ``box`` names: (bytes, 0, 0) when
    computed here, else (None, start, end)."""
    if not sec.path:
        if sec.text == "":
            return None, 0, meta.size
        if sec.text.startswith("HEADER"):
            return _header_of(s, box, meta, sec), 0, 0
        return None, len(meta.header), meta.size  # TEXT
    assert meta.structure is not None
    part: Any = find_part(meta.structure, sec.path)
    if part is None:
        return b"", 0, 0
    if sec.text == "":
        return None, part["b"], part["z"]
    if sec.text == "MIME":
        return None, part["h"], part["b"]
    msg = part.get("msg", part if "env" in part else None)
    if msg is None:
        return b"", 0, 0
    if sec.text == "HEADER":
        return None, msg["h"], msg["b"]
    if sec.text == "TEXT":
        return None, msg["b"], msg["z"]
    raw = await s.mail.read_bytes(meta.ref, msg["h"], msg["b"])
    return filter_header(raw, sec.fields, sec.text == "HEADER.FIELDS"), 0, 0


async def _section(s: Session, meta: Meta, sec: Section) -> None:
    """Append a section's literal; large ranges stream from the store."""
    data, start, end = await _range(s, s.need_selected().mailbox, meta, sec)
    if data is not None:
        if sec.origin is not None:
            assert sec.length is not None
            data = data[sec.origin:sec.origin + sec.length]
        s.out += b"{%d}\r\n" % len(data) + data
        return
    if sec.origin is not None:
        assert sec.length is not None
        start = min(end, start + sec.origin)
        end = min(end, start + sec.length)
    if end - start <= 64 * 1024:
        data = await s.mail.read_bytes(meta.ref, start, end)
        s.out += b"{%d}\r\n" % len(data) + data
        return
    # The first chunk is read before the literal is announced: a store that cannot
    # be read now fails the FETCH with a NO (RFC 9051 section 7.1), instead of a
    # connection broken off inside an announced literal.
    chunks = aiter(s.mail.read(meta.ref, start, end))
    first = await anext(chunks, b"")
    s.out += b"{%d}\r\n" % (end - start)
    await s.stream(_after(first, chunks))


async def _after(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``first`` and then the rest of a body's chunks."""
    if first:
        yield first
    async for chunk in rest:
        yield chunk


async def _binary(s: Session, meta: Meta, sec: Section) -> None:
    """RFC 3516 §4.2: a part's decoded content (or its size), literal8 when needed."""
    if not sec.path:
        data = await s.mail.read_bytes(meta.ref, 0, meta.size)
    else:
        assert meta.structure is not None
        part = find_part(meta.structure, sec.path)
        if part is None:
            data = b""
        else:
            raw = await s.mail.read_bytes(meta.ref, part["b"], part["z"])
            decoded = binary.decode(raw, part["e"]) if "parts" not in part else raw
            if decoded is None:
                raise No(f"unknown Content-Transfer-Encoding {part['e'][:40]}", "UNKNOWN-CTE")
            data = decoded
    if sec.binary == "SIZE":
        s.out += sec.label.encode() + b" %d" % len(data)
        return
    if sec.origin is not None:
        assert sec.length is not None
        data = data[sec.origin:sec.origin + sec.length]
    s.out += sec.label.encode() + b" " + (b"~" if binary.needs_literal8(data) else b"")
    s.out += b"{%d}\r\n" % len(data) + data
