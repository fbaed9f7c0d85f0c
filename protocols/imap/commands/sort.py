"""SORT and THREAD (RFC 5256; RFC 5957 SORT=DISPLAY).

Both run the search program first (``search.run_search``: off the loop,
bounded), then read the cached metadata of the matches in batches and compute
the sort keys in a worker thread. Comparison is i;ascii-casemap (upper-cased
strings); ties are broken by sequence number, as §3 requires.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from protocols.imap import addresses, returns, threads
from protocols.imap.commands import SELECTED, args, command
from protocols.imap.commands.search import (
    Msg,
    _decode,
    esearch_line,
    run_search,
)
from protocols.imap.errors import Bad, No
from protocols.imap.parser import Token

if TYPE_CHECKING:
    from protocols.imap.parser import Command
    from protocols.imap.selected import Selected
    from protocols.imap.session import Session

SORT_KEYS = {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM",
             "DISPLAYTO"}
CHARSETS = {"UTF-8", "US-ASCII"}
BATCH = 500
_WS = re.compile(r"\s+")
_TRAILER = re.compile(r"(?:\(fwd\)|\s)+$", re.I)
_LEADER = re.compile(r"^(?:\s+|(?:\[[^\[\]]*\]\s*)*(?:re|fwd?)\s*(?:\[[^\[\]]*\]\s*)?:)", re.I)
_BLOB = re.compile(r"^\[[^\[\]]*\]\s*")


def base_subject(subject: str) -> str:
    """RFC 5256 §2.1: the subject without Re:, Fwd:, [list] tags and (fwd) trailers."""
    s = _WS.sub(" ", _decode(subject))
    while True:
        s = _TRAILER.sub("", s)  # (2)
        while True:  # (3) and (4) until nothing changes
            before = s
            s = _LEADER.sub("", s)
            m = _BLOB.match(s)
            if m and s[m.end():]:
                s = s[m.end():]
            if s == before:
                break
        if s[:5].upper() == "[FWD:" and s.endswith("]"):  # (6)
            s = s[5:-1]
            continue
        return s.upper()


def _first_address(values: list[str]) -> addresses.Address | None:
    """The first address of the first field; a group's start marker counts (its name)."""
    for value in values[:1]:
        for a in addresses.parse(value):
            return a
    return None


def _mailbox_key(m: Msg, field: str) -> str:
    a = _first_address(m.header_values(field))
    return (a.mailbox or "").upper() if a else ""


def _display_key(m: Msg, field: str) -> str:
    """RFC 5957 §2: the display name, else the address itself."""
    a = _first_address(m.header_values(field))
    if a is None:
        return ""
    if a.name:
        return _decode(a.name).upper()
    return ((a.mailbox or "") + (f"@{a.host}" if a.host else "")).upper()


def sent_date(m: Msg) -> float:
    """RFC 5256 §2.2: the Date header in UTC, else the internal date."""
    assert m.meta is not None
    values = m.header_values("date")
    if values:
        try:
            return email.utils.parsedate_to_datetime(values[0]).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    return m.meta.internal_date


def _key(name: str) -> Callable[[Msg], Any]:
    def size(m: Msg) -> Any:
        assert m.meta is not None
        return m.meta.size

    def arrival(m: Msg) -> Any:
        assert m.meta is not None
        return m.meta.internal_date

    return {
        "ARRIVAL": arrival,
        "SIZE": size,
        "DATE": sent_date,
        "SUBJECT": lambda m: base_subject((m.header_values("subject") or [""])[0]),
        "FROM": lambda m: _mailbox_key(m, "from"),
        "TO": lambda m: _mailbox_key(m, "to"),
        "CC": lambda m: _mailbox_key(m, "cc"),
        "DISPLAYFROM": lambda m: _display_key(m, "from"),
        "DISPLAYTO": lambda m: _display_key(m, "to"),
    }[name]


@dataclass(frozen=True)
class SortKey:
    name: str
    reverse: bool


def parse_criteria(tokens: list[Token]) -> list[SortKey]:
    out: list[SortKey] = []
    reverse = False
    for tok in tokens:
        name = args.atom(tok).upper()
        if name == "REVERSE":
            if reverse:
                raise Bad("REVERSE REVERSE")
            reverse = True
            continue
        if name not in SORT_KEYS:
            raise Bad(f"unknown sort key {name[:30]}")
        out.append(SortKey(name, reverse))
        reverse = False
    if reverse or not out:
        raise Bad("invalid sort criteria")
    return out


async def matches(s: Session, sel: Selected, tokens: list[Token]) -> list[Msg]:
    """The messages the search program names, with their cached metadata."""
    uids, _ = await run_search(s, sel, tokens)
    out: list[Msg] = []
    for start in range(0, len(uids), BATCH):
        chunk = uids[start:start + BATCH]
        for meta in await s.mail.meta(sel.mailbox.id, chunk, structure=False):
            if meta.uid in sel.flags:
                out.append(Msg(meta.uid, sel.seq_of(meta.uid), meta.flags, meta.modseq,
                               meta.uid in sel.recent, meta))
    return out


def sort_messages(msgs: list[Msg], keys: list[SortKey]) -> list[Msg]:
    """Stable passes from the last key to the first; sequence order breaks ties."""
    out = sorted(msgs, key=lambda m: m.seq)
    for k in reversed(keys):
        fn = _key(k.name)
        values = {m.uid: fn(m) for m in out}
        out.sort(key=lambda m: values[m.uid], reverse=k.reverse)
    return out


def _charset(tok: Token) -> None:
    if args.astring(tok).upper() not in CHARSETS:
        raise No("unsupported charset", "BADCHARSET (UTF-8 US-ASCII)")


# RFC 5256 §3 SORT, UID SORT
@command("SORT", SELECTED, uid=True)
async def sort(s: Session, cmd: Command) -> str | None:
    sel = s.need_selected()
    ret, a = returns.parse(list(cmd.args))  # RFC 5267 §3 ESORT, §4.4 PARTIAL
    opts = ret.opts if ret is not None else None
    if len(a) < 3:
        raise Bad("SORT needs criteria, a charset and a search program")
    keys = parse_criteria(args.plist(a[0]))
    _charset(a[1])
    msgs = await matches(s, sel, a[2:])
    ordered = await asyncio.to_thread(sort_messages, msgs, keys)
    nums = [m.uid if cmd.uid else m.seq for m in ordered]
    if opts is None:
        s.untagged(b"SORT" + b"".join(b" %d" % n for n in nums))
        return None
    assert ret is not None
    if "SAVE" in opts:
        sel.saved = sorted(m.uid for m in ordered)
    if opts - {"SAVE"}:  # MIN and MAX are the first and last in sort order
        s.untagged(esearch_line(cmd.tag, cmd.uid, opts, nums, None, ret.partial))
    if "UPDATE" in opts:  # RFC 5267 §4.2: changes to this sorted result follow, unasked
        from protocols.imap.commands import updates  # it imports this module

        if updates.may_add(s, cmd.tag, ret, sort=True):
            updates.add_sorted(s, sel, cmd.tag, cmd.uid, a[2:], keys, [m.uid for m in ordered])
    return None


# -- THREAD

def ordered_subject(msgs: list[Msg]) -> list[list[Msg]]:
    """RFC 5256 §2.4 ORDEREDSUBJECT: by base subject, then sent date; groups in the
    order of their first message's sent date."""
    ordered = sort_messages(msgs, [SortKey("SUBJECT", False), SortKey("DATE", False)])
    groups: list[list[Msg]] = []
    last: str | None = None
    for m in ordered:
        subject = base_subject((m.header_values("subject") or [""])[0])
        if groups and subject == last:
            groups[-1].append(m)
        else:
            groups.append([m])
            last = subject
    groups.sort(key=lambda t: (sent_date(t[0]), t[0].seq))
    return groups


def render_flat(threads: list[list[Msg]], uid: bool) -> bytes:
    """A parent with its children as siblings: ``(1)``, ``(1 2)``, ``(1 (2)(3))``."""
    out = bytearray()
    for t in threads:
        n = [m.uid if uid else m.seq for m in t]
        if len(n) <= 2:
            out += b"(" + b" ".join(b"%d" % x for x in n) + b")"
        else:
            out += b"(%d " % n[0] + b"".join(b"(%d)" % x for x in n[1:]) + b")"
    return bytes(out)


# RFC 5256 §4 THREAD, UID THREAD
@command("THREAD", SELECTED, uid=True)
async def thread(s: Session, cmd: Command) -> str | None:
    sel = s.need_selected()
    a = list(cmd.args)
    if len(a) < 3:
        raise Bad("THREAD needs an algorithm, a charset and a search program")
    algorithm = args.atom(a[0]).upper()
    if algorithm not in ("ORDEREDSUBJECT", "REFERENCES"):
        raise Bad(f"unknown threading algorithm {algorithm[:30]}")
    _charset(a[1])
    msgs = await matches(s, sel, a[2:])
    if algorithm == "REFERENCES":
        text = await asyncio.to_thread(_references, msgs, cmd.uid)
    else:
        text = render_flat(await asyncio.to_thread(ordered_subject, msgs), cmd.uid)
    s.untagged(b"THREAD " + text if text else b"THREAD")
    return None


_REPLY = re.compile(r"^\s*(?:\[[^\[\]]*\]\s*)*(?:re|fwd?)\s*(?:\[[^\[\]]*\]\s*)?:|\(fwd\)\s*$"
                    r"|^\s*\[fwd:", re.I)


def _references(msgs: list[Msg], uid: bool) -> bytes:
    """RFC 5256 §2.2 REFERENCES over the matched messages."""
    items = []
    for m in msgs:
        subject = (m.header_values("subject") or [""])[0]
        items.append(threads.Message(
            m.uid if uid else m.seq, m.seq, sent_date(m),
            (threads.msg_ids((m.header_values("message-id") or [""])[0]) or [""])[0],
            " ".join(m.header_values("references")),
            (m.header_values("in-reply-to") or [""])[0],
            base_subject(subject), bool(_REPLY.search(_decode(subject)))))
    return threads.render(threads.thread(items))
