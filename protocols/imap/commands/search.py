"""SEARCH and UID SEARCH (RFC 3501 §6.4.4; RFC 7162 §3.1.5 MODSEQ).

The search program is compiled once into a tree of predicates, each with the
cost of what it needs: the session's index (flags, uids, modseq), the cached
metadata (size, dates, header fields) or the message text. Messages are only
loaded to the level the program needs, in batches, and text is read from the
dispersed store only for BODY/TEXT keys.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.header
import email.policy
import email.utils
import itertools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.mail import Meta, addresses
from core.mail.mime import parse_headers
from core.mail.sortkeys import decode_words
from protocols.imap import render, returns, rev2
from protocols.imap.commands import SELECTED, args, command
from protocols.imap.errors import Bad, ImapError, No
from protocols.imap.parser import Atom, Token
from protocols.imap.returns import Partial
from protocols.imap.selected import compress

if TYPE_CHECKING:
    from protocols.imap.parser import Command
    from protocols.imap.selected import Selected
    from protocols.imap.session import Session

INDEX, META, TEXT = 0, 1, 2
MAX_TEXT = 32 * 1024 * 1024
# A program's size is bounded before anything runs (#15.10: a 100k-token
# program stalled the loop 3 s): keys, nesting, and the uids its sets hold.
MAX_KEYS = 1000
MAX_DEPTH = 100
MAX_SET_UIDS = 1_000_000  # beyond the mailbox's own size (see Compiler.set_budget)
_SEQSET = re.compile(r"^(?:[0-9*:,]+|\$)$")
_FLAG_KEYS = {"ANSWERED": ("\\Answered", True), "DELETED": ("\\Deleted", True),
              "DRAFT": ("\\Draft", True), "FLAGGED": ("\\Flagged", True),
              "SEEN": ("\\Seen", True), "UNANSWERED": ("\\Answered", False),
              "UNDELETED": ("\\Deleted", False), "UNDRAFT": ("\\Draft", False),
              "UNFLAGGED": ("\\Flagged", False), "UNSEEN": ("\\Seen", False)}
_HEADER_KEYS = {"FROM", "TO", "CC", "BCC", "SUBJECT"}
ADDRESS_FIELDS = {"from", "to", "cc", "bcc", "sender", "reply-to"}
_DATE_KEYS = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}


@dataclass
class Msg:
    uid: int
    seq: int
    flags: frozenset[str]
    modseq: int
    recent: bool
    meta: Meta | None = None
    text: str | None = None
    headers: list[tuple[str, str]] | None = None
    flat: str | None = None
    decoded: dict[str, list[str]] | None = None

    def may_contain(self, needle: str) -> bool:
        """False only if no header value can contain ``needle`` (lower-case).

        A fast reject on the whole header block (unfolded, lower-cased), so
        most messages of a header SEARCH are never split into fields. Not
        usable with RFC 2047 encoded words, whose decoded text is not in it.
        """
        if self.flat is None:
            assert self.meta is not None
            self.flat = self.meta.header.decode("utf-8", "replace").replace("\r\n", "").lower()
        return "=?" in self.flat or needle in self.flat

    def header_values(self, name: str) -> list[str]:
        """Decoded values of one header; only the named header's values are decoded, once."""
        if self.decoded is None:
            self.decoded = {}
        values = self.decoded.get(name)
        if values is None:
            if self.headers is None:
                assert self.meta is not None
                self.headers = parse_headers(self.meta.header)
            values = self.decoded[name] = [decode_words(v) for k, v in self.headers if k == name]
        return values


Pred = Callable[[Msg], bool]


FlagsPred = Callable[[frozenset[str]], bool]


@dataclass
class Node:
    pred: Pred
    cost: int
    # the same test on a message's flags alone, when that is all it reads (``UNSEEN``,
    # ``NOT DELETED``): decided once per distinct flag set (``_index_search``)
    on_flags: FlagsPred | None = None


def _flag_node(flag: str, want: bool) -> Node:
    return Node(lambda m: (flag in m.flags) == want, INDEX, lambda f: (flag in f) == want)


def _day(text: str) -> dt.date:
    try:
        return dt.datetime.strptime(text, "%d-%b-%Y").date()
    except ValueError:
        raise Bad(f"invalid date {text[:30]!r}") from None


def _sent_date(m: Msg) -> dt.date | None:
    values = m.header_values("date")
    if not values:
        return None
    try:
        return email.utils.parsedate_to_datetime(values[0]).date()
    except (TypeError, ValueError, IndexError):
        return None


class Compiler:
    def __init__(self, session: Session, sel: Selected) -> None:
        self.s = session
        self.sel = sel
        self.depth = 0
        self.keys = 0
        self.set_budget = MAX_SET_UIDS + 4 * len(sel.uids)
        self.modseq_used = False
        # RFC 5267 §4.2 updates re-test only changed messages unless a key's meaning
        # moves with the mailbox: sequence numbers, ``*``, ``$``, the clock (WITHIN)
        self.stable = True

    def _uids(self, text: str, *, uid: bool, strict: bool = True) -> set[int]:
        """A sequence set's uids, counted against the program's budget."""
        uids = set(self.sel.parse_set(text, uid=uid, strict=strict))
        self.set_budget -= len(uids)
        if self.set_budget < 0:
            raise Bad("search program too large (sequence sets)")
        return uids

    def program(self, tokens: list[Token]) -> Node:
        if not tokens:
            raise Bad("empty search program")
        nodes = []
        pos = 0
        while pos < len(tokens):
            node, pos = self.key(tokens, pos)
            nodes.append(node)
        return _and(nodes)

    def key(self, t: list[Token], pos: int) -> tuple[Node, int]:
        self.depth += 1
        self.keys += 1
        if self.depth > MAX_DEPTH:
            raise Bad("search program nested too deeply")
        if self.keys > MAX_KEYS:
            raise Bad(f"search program too large (over {MAX_KEYS} keys)")
        try:
            return self._key(t, pos)
        finally:
            self.depth -= 1

    def _arg(self, t: list[Token], pos: int) -> str:
        if pos >= len(t):
            raise Bad("search key is missing its argument")
        return args.astring(t[pos])

    def _key(self, t: list[Token], pos: int) -> tuple[Node, int]:
        tok = t[pos]
        if isinstance(tok, list):
            return self.program(tok), pos + 1
        if not isinstance(tok, Atom):
            raise Bad("expected a search key")
        k = tok.upper()
        if k == "ALL":
            return Node(lambda m: True, INDEX, lambda f: True), pos + 1
        if k in _FLAG_KEYS:
            flag, want = _FLAG_KEYS[k]
            return _flag_node(flag, want), pos + 1
        if k in ("KEYWORD", "UNKEYWORD"):
            kw = self._arg(t, pos + 1)
            return _flag_node(kw, k == "KEYWORD"), pos + 2
        if k == "NEW":
            return Node(lambda m: m.recent and "\\Seen" not in m.flags, INDEX), pos + 1
        if k == "OLD":
            return Node(lambda m: not m.recent, INDEX), pos + 1
        if k == "RECENT":
            return Node(lambda m: m.recent, INDEX), pos + 1
        if k == "NOT":
            if pos + 1 >= len(t):
                raise Bad("NOT needs a key")
            inner, nxt = self.key(t, pos + 1)
            on = inner.on_flags
            return Node(lambda m: not inner.pred(m), inner.cost,
                        None if on is None else lambda f: not on(f)), nxt
        if k == "OR":
            if pos + 1 >= len(t):
                raise Bad("OR needs two keys")
            a, nxt = self.key(t, pos + 1)
            if nxt >= len(t):
                raise Bad("OR needs two keys")
            b, nxt = self.key(t, nxt)
            fa, fb = a.on_flags, b.on_flags
            return Node(lambda m: a.pred(m) or b.pred(m), max(a.cost, b.cost),
                        None if fa is None or fb is None else lambda f: fa(f) or fb(f)), nxt
        if k == "UID":
            self.stable = self.stable and not any(c in self._arg(t, pos + 1) for c in "*$")
            uids = self._uids(self._arg(t, pos + 1), uid=True)
            return Node(lambda m: m.uid in uids, INDEX), pos + 2
        if k in ("LARGER", "SMALLER"):
            n = args.number(t[pos + 1] if pos + 1 < len(t) else Atom(""), bits=63)
            if k == "LARGER":
                return Node(lambda m: m.meta is not None and m.meta.size > n, META), pos + 2
            return Node(lambda m: m.meta is not None and m.meta.size < n, META), pos + 2
        if k in ("OLDER", "YOUNGER"):  # RFC 5032 WITHIN: internal date, in seconds
            secs = args.number(t[pos + 1] if pos + 1 < len(t) else Atom(""))
            self.stable = False
            edge = time.time() - secs
            if k == "OLDER":
                return Node(lambda m: m.meta is not None and m.meta.internal_date <= edge,
                            META), pos + 2
            return Node(lambda m: m.meta is not None and m.meta.internal_date >= edge,
                        META), pos + 2
        if k in _DATE_KEYS:
            day = _day(self._arg(t, pos + 1))
            return self._date(k, day), pos + 2
        if k in _HEADER_KEYS:
            return self._header(k.lower(), self._arg(t, pos + 1)), pos + 2
        if k == "HEADER":
            return self._header(self._arg(t, pos + 1).lower(), self._arg(t, pos + 2)), pos + 3
        if k in ("BODY", "TEXT"):
            needle = self._arg(t, pos + 1).lower()
            body_only = k == "BODY"

            def text(m: Msg) -> bool:
                assert m.text is not None
                if body_only:
                    return needle in m.text.split("\n\n", 1)[-1]
                return needle in m.text
            return Node(text, TEXT), pos + 2
        if k == "MODSEQ":
            self.modseq_used = True
            self.s.enable_condstore()
            nxt = pos + 1
            if nxt < len(t) and isinstance(t[nxt], str) and not str(t[nxt]).isdigit():
                nxt += 2  # entry name and type (RFC 7162 §3.1.5): per-message modseq suffices
            n = args.number(t[nxt] if nxt < len(t) else Atom(""), bits=63)
            return Node(lambda m: m.modseq >= n, INDEX), nxt + 1
        if _SEQSET.match(k):
            self.stable = False
            uids = self._uids(k, uid=False, strict=False)
            return Node(lambda m: m.uid in uids, INDEX), pos + 1
        raise Bad(f"unknown search key {k[:30]}")

    def _date(self, k: str, day: dt.date) -> Node:
        sent = k.startswith("SENT")
        op = k[4:] if sent else k

        def pred(m: Msg) -> bool:
            if sent:
                d = _sent_date(m)
                if d is None:
                    return False
            else:
                assert m.meta is not None
                d = dt.date(*time.localtime(m.meta.internal_date)[:3])
            return d < day if op == "BEFORE" else d == day if op == "ON" else d >= day
        return Node(pred, META)

    def _header(self, name: str, needle: str) -> Node:
        needle = needle.lower()
        address = name in ADDRESS_FIELDS

        def pred(m: Msg) -> bool:
            # an address may hold comments anywhere: <user (c)@ (c) example.org>
            if not m.may_contain(needle) and not (
                    address and m.flat is not None and "(" in m.flat):
                return False
            values = m.header_values(name)
            if address:  # RFC 3501 §6.4.4: the address as well as the field's text
                values = values + [a.text for v in values for a in addresses.parse(v)]
            return any(needle in v.lower() for v in values) if values else False
        return Node(pred, META)


def _and(nodes: list[Node]) -> Node:
    if len(nodes) == 1:
        return nodes[0]
    ordered = sorted(nodes, key=lambda n: n.cost)  # cheap keys first
    tests = [n.on_flags for n in nodes]
    on_flags: FlagsPred | None = None
    if all(tests):
        flag_tests = [t for t in tests if t is not None]
        on_flags = lambda f: all(t(f) for t in flag_tests)  # noqa: E731
    return Node(lambda m: all(n.pred(m) for n in ordered), max(n.cost for n in nodes),
                on_flags)


def message_text(raw: bytes) -> str:
    """Headers and decoded text parts, lower-cased, for BODY/TEXT keys."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    head, _, _ = raw.partition(b"\r\n\r\n")
    out = [decode_words(head.decode("utf-8", "replace"))]
    for part in msg.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        charset = part.get_content_charset() or "utf-8"
        try:
            out.append(payload.decode(charset, "replace"))
        except LookupError:
            out.append(payload.decode("utf-8", "replace"))
    return "\n\n".join(out).lower()


SEARCH_SECONDS = 60.0  # the work one SEARCH (or SORT, THREAD) may take
INDEX_CHUNK = 10_000
META_CHUNK = 500


async def run_search(s: Session, sel: Selected, tokens: list[Token],
                     only: set[int] | None = None) -> tuple[list[int], int]:
    """Matching uids and the highest modseq among them (among ``only``, if given).

    Off the event loop and bounded: predicates that need metadata run in a
    worker thread a batch at a time, message text is read and decoded one
    message at a time (decoding in the thread), and the whole search gives up
    with NO [LIMIT] after ``SEARCH_SECONDS``.
    """
    compiler = Compiler(s, sel)
    node = compiler.program(tokens)
    recent = sel.recent
    if node.cost < META:
        return await _index_search(node, sel, only, compiler.modseq_used)
    msgs = [Msg(u, i, f, m, u in recent) for i, (u, f, m)
            in enumerate(zip(sel.uids, sel.flag_list, sel.modseq_list, strict=True), 1)
            if only is None or u in only]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SEARCH_SECONDS

    def matching(chunk: list[Msg]) -> list[Msg]:
        return [m for m in chunk if (node.cost < META or m.meta is not None) and node.pred(m)]

    def text_match(m: Msg, raw: bytes) -> bool:
        m.text = message_text(raw)
        try:
            return node.pred(m)
        finally:
            m.text = None

    hits: list[Msg] = []
    step = INDEX_CHUNK if node.cost < META else META_CHUNK
    for start in range(0, len(msgs), step):
        chunk = msgs[start:start + step]
        if node.cost >= META:
            metas = {m.uid: m for m in await s.mail.meta(sel.mailbox.id,
                                                        [m.uid for m in chunk],
                                                        structure=False)}
            for m in chunk:
                m.meta = metas.get(m.uid)
        if node.cost >= TEXT:
            for m in chunk:
                if m.meta is None:
                    continue  # expunged meanwhile
                raw = await s.mail.read_bytes(m.meta.ref, 0, min(m.meta.size, MAX_TEXT))
                if await asyncio.to_thread(text_match, m, raw):
                    hits.append(m)
                if loop.time() > deadline:
                    raise No("search took too long", "LIMIT")
        elif node.cost >= META:
            hits += await asyncio.to_thread(matching, chunk)
        else:
            hits += matching(chunk)
            await asyncio.sleep(0)
        if loop.time() > deadline:
            raise No("search took too long", "LIMIT")
    top = max((m.modseq for m in hits), default=0)
    return [m.uid for m in hits], (top if compiler.modseq_used else 0)


async def _index_search(node: Node, sel: Selected, only: set[int] | None,
                        modseq_used: bool) -> tuple[list[int], int]:
    """``run_search`` for a program of flags, uids and sequence numbers only
    (``UID SEARCH UNSEEN``, ``NOT DELETED``): one probe object refilled per
    message instead of an object per message, about 0.5 µs a message."""
    if node.on_flags is not None and only is None:  # a few distinct flag sets: decide each
        verdict = {f: node.on_flags(f) for f in set(sel.flag_list)}
        matched = list(itertools.compress(sel.uids, map(verdict.__getitem__, sel.flag_list)))
        return matched, 0  # a MODSEQ key reads more than flags: not this path
    # copies: the loop below gives the event loop a turn between chunks
    uids, flags, modseqs = list(sel.uids), list(sel.flag_list), list(sel.modseq_list)
    recent, pred = sel.recent, node.pred
    probe = Msg(0, 0, frozenset(), 0, False)
    hits: list[int] = []
    top = 0
    for start in range(0, len(uids), INDEX_CHUNK):
        for i in range(start, min(start + INDEX_CHUNK, len(uids))):
            uid = uids[i]
            if only is not None and uid not in only:
                continue
            probe.uid, probe.seq, probe.flags, probe.modseq = uid, i + 1, flags[i], modseqs[i]
            probe.recent = uid in recent
            if pred(probe):
                hits.append(uid)
                top = max(top, modseqs[i])
        await asyncio.sleep(0)
    return hits, (top if modseq_used else 0)


def esearch_line(tag: str, uid: bool, opts: frozenset[str], nums: list[int],
                 modseqs: list[int] | None, partial: Partial | None = None) -> bytes:
    """RFC 4731 §3.1 ESEARCH response (RFC 7162 §3.1.5 MODSEQ when asked for;
    RFC 5267 §4.4 PARTIAL: the range and its part of the result, or NIL)."""
    line = b"ESEARCH (TAG " + render.string(tag) + b")" + (b" UID" if uid else b"")
    if partial is not None:
        part = compress(partial.pick(nums))
        line += b" PARTIAL (" + partial.label.encode() + b" " + (part.encode() or b"NIL") + b")"
    if nums and "MIN" in opts:
        line += b" MIN %d" % nums[0]
    if nums and "MAX" in opts:
        line += b" MAX %d" % nums[-1]
    if nums and "ALL" in opts:
        line += b" ALL " + compress(nums).encode()
    if "COUNT" in opts:
        line += b" COUNT %d" % len(nums)
    if modseqs and nums:
        if ("MIN" in opts) != ("MAX" in opts) and not opts & {"ALL", "COUNT"}:
            line += b" MODSEQ %d" % (modseqs[0] if "MIN" in opts else modseqs[-1])
        else:
            line += b" MODSEQ %d" % max(modseqs)
    return line


def _saved(opts: frozenset[str], uids: list[int]) -> list[int]:
    """RFC 5182 §2.4: with MIN and/or MAX but not ALL or COUNT, only those are saved."""
    if opts & {"ALL", "COUNT"} or not opts & {"MIN", "MAX"} or not uids:
        return list(uids)
    return sorted({uids[0] if "MIN" in opts else uids[-1], uids[-1] if "MAX" in opts
                   else uids[0]})


# RFC 3501 §6.4.4 SEARCH, §6.4.8 UID SEARCH; RFC 4731 ESEARCH; RFC 5182 SEARCHRES
@command("SEARCH", SELECTED, uid=True)
async def search(s: Session, cmd: Command) -> str | None:
    sel = s.need_selected()
    ret, tokens = returns.parse(list(cmd.args))
    ret = rev2.search_return(s, ret)  # RFC 9051 §6.4.4: ESEARCH, never SEARCH
    opts = ret.opts if ret is not None else None
    from protocols.imap.commands import updates  # it runs searches: imported late

    update = ret is not None and "UPDATE" in ret.opts and updates.may_add(s, cmd.tag, ret)
    if len(tokens) >= 2 and isinstance(tokens[0], Atom) and tokens[0].upper() == "CHARSET":
        charset = args.astring(tokens[1]).upper()
        if charset not in ("UTF-8", "US-ASCII"):
            raise No("unsupported charset", "BADCHARSET (UTF-8 US-ASCII)")
        tokens = tokens[2:]
    try:
        uids, top = await run_search(s, sel, tokens)
    except ImapError:
        if opts is not None and "SAVE" in opts:
            sel.saved = []  # RFC 5182 §2.1: a failed SAVE leaves $ empty
        raise
    nums = uids if cmd.uid else sel.seqs_of(uids)
    if opts is None:
        line = b"SEARCH" + render.numbers(nums)
        if top:
            line += b" (MODSEQ %d)" % top
        s.untagged(line)
        return None
    assert ret is not None
    if "SAVE" in opts:
        sel.saved = _saved(opts, uids)
    if opts - {"SAVE"}:
        by_uid = sel.modseqs
        modseqs = [by_uid.get(u, 0) for u in uids] if top else None
        s.untagged(esearch_line(cmd.tag, cmd.uid, opts, nums, modseqs, ret.partial))
    if update:  # RFC 5267 §4.2: changes to this result follow, unasked
        updates.add(s, sel, cmd.tag, cmd.uid, tokens, uids)
    return None
