"""SORT and THREAD (RFC 5256; RFC 5957 SORT=DISPLAY).

Both run the search program first (``search.run_search``: off the loop,
bounded), then read the matches' keys by column (``MailStore.sort_keys``:
each message's sent date, base subject, first addresses and references,
derived from its header once and kept, ``core.mail.sortkeys``), and sort or
thread in a worker thread. Comparison is i;ascii-casemap (the keys are
upper-cased); ties are broken by sequence number, as §3 requires.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core import gcpause
from core.mail.sortkeys import KeyColumns
from protocols.imap import render, returns, threads
from protocols.imap.commands import SELECTED, args, command
from protocols.imap.commands.search import esearch_line, run_search
from protocols.imap.errors import Bad, No
from protocols.imap.parser import Atom, Token
from protocols.imap.selected import SMALL_LOOKUP

if TYPE_CHECKING:
    from protocols.imap.parser import Command
    from protocols.imap.selected import Selected
    from protocols.imap.session import Session

SORT_KEYS = {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM",
             "DISPLAYTO"}
# the ``SortKeys`` field each criterion reads (ARRIVAL and SIZE are the message's own)
FIELDS = {"DATE": "sent", "SUBJECT": "subject", "FROM": "from_key", "TO": "to_key",
          "CC": "cc_key", "DISPLAYFROM": "display_from", "DISPLAYTO": "display_to"}
THREAD_FIELDS = ("sent", "subject", "reply", "message_id", "parents")
CHARSETS = {"UTF-8", "US-ASCII"}


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


async def keyed(s: Session, sel: Selected, tokens: list[Token],
                fields: tuple[str, ...] | list[str]) -> KeyColumns:
    """The messages the search program names, with the key columns ``fields``."""
    uids, _ = await run_search(s, sel, tokens)
    if uids != sel.uids:  # keep only what the session still holds (``ALL``: all of it)
        held = set(sel.uids) if len(uids) >= SMALL_LOOKUP else sel.flags
        uids = [u for u in uids if u in held]
    return await s.mail.sort_keys(sel.mailbox.id, uids, fields)


def _column(found: KeyColumns, name: str) -> list[Any]:
    if name == "ARRIVAL":
        return found.internal_date
    if name == "SIZE":
        return found.size
    if name == "DATE":
        return found.sent()
    return found.keys[FIELDS[name]]


def sort_uids(found: KeyColumns, keys: list[SortKey]) -> list[int]:
    """Stable passes from the last key to the first; uid (= sequence) order breaks ties."""
    order = list(range(len(found.uids)))
    for k in reversed(keys):
        column = _column(found, k.name)
        order.sort(key=column.__getitem__, reverse=k.reverse)
    return [found.uids[i] for i in order]


def whole_view(sel: Selected, tokens: list[Token], *what: Hashable) -> Hashable | None:
    """The key of a result over the whole mailbox (search program ``ALL``) as this
    session sees it, or None for any other program (its result may depend on the
    time, ``YOUNGER``, or on flags).

    Why: a client that opens a mailbox sorts or threads all of it, and the next
    session asks again; over 100,000 messages that is most of a new session's
    time. The key names the session's message set: its count and last uid,
    and the expunges it holds back (``Selected.held``). Neither SORT's keys
    nor THREAD's depend on flags, and the index drops these results whenever
    messages come or go (``MailboxIndex.apply``), so among the results it
    holds, sets reached from one another by new messages (a higher last uid)
    or expunges (a lower count, or more held) never share a key."""
    if len(tokens) != 1 or not isinstance(tokens[0], Atom) or str(tokens[0]).upper() != "ALL":
        return None
    return (*what, len(sel.uids), sel.uids[-1] if sel.uids else 0, len(sel.held))


async def sorted_matches(s: Session, sel: Selected, tokens: list[Token],
                         keys: list[SortKey]) -> list[int]:
    """The uids the search program names, in the order of ``keys``."""
    key = whole_view(sel, tokens, "SORT", *keys)
    kept = s.mail.derived(sel.mailbox.id, key) if key is not None else None
    if kept is not None:
        return list(kept)
    fields = [FIELDS[k.name] for k in keys if k.name in FIELDS]
    found = await keyed(s, sel, tokens, fields)
    ordered = await asyncio.to_thread(sort_uids, found, keys)
    if key is not None:
        s.mail.keep_derived(sel.mailbox.id, key, tuple(ordered))
    return ordered


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
    ordered = await sorted_matches(s, sel, a[2:], keys)
    nums = ordered if cmd.uid else sel.seqs_of(ordered)  # in sort order
    if opts is None:
        s.untagged(b"SORT" + render.numbers(nums))
        return None
    assert ret is not None
    if "SAVE" in opts:
        sel.saved = sorted(ordered)
    if opts - {"SAVE"}:  # MIN and MAX are the first and last in sort order
        s.untagged(esearch_line(cmd.tag, cmd.uid, opts, nums, None, ret.partial))
    if "UPDATE" in opts:  # RFC 5267 §4.2: changes to this sorted result follow, unasked
        from protocols.imap.commands import updates  # it imports this module

        if updates.may_add(s, cmd.tag, ret, sort=True):
            updates.add_sorted(s, sel, cmd.tag, cmd.uid, a[2:], keys, ordered)
    return None


# -- THREAD

def ordered_subject(found: KeyColumns, nums: list[int]) -> list[list[int]]:
    """RFC 5256 §2.4 ORDEREDSUBJECT: by base subject, then sent date; groups in the
    order of their first message's sent date. ``nums``: what to show per message."""
    sent, subjects = found.sent(), found.keys["subject"]
    order = sorted(range(len(nums)), key=lambda i: (subjects[i], sent[i], i))
    groups: list[list[int]] = []
    last: str | None = None
    for i in order:
        if groups and subjects[i] == last:
            groups[-1].append(i)
        else:
            groups.append([i])
            last = subjects[i]
    groups.sort(key=lambda g: (sent[g[0]], g[0]))
    return [[nums[i] for i in g] for g in groups]


def render_flat(groups: list[list[int]]) -> bytes:
    """A parent with its children as siblings: ``(1)``, ``(1 2)``, ``(1 (2)(3))``."""
    out = bytearray()
    for n in groups:
        if len(n) <= 2:
            out += b"(" + b" ".join(b"%d" % x for x in n) + b")"
        else:
            out += b"(%d " % n[0] + b"".join(b"(%d)" % x for x in n[1:]) + b")"
    return bytes(out)


def references(found: KeyColumns, nums: list[int]) -> bytes:
    """RFC 5256 §2.2 REFERENCES over the matched messages (in sequence order: a
    message's position there breaks ties between equal dates, as its number would)."""
    sent, k = found.sent(), found.keys
    return threads.render(threads.thread(zip(
        nums, range(1, len(nums) + 1), sent, k["message_id"], k["parents"], k["subject"],
        k["reply"], strict=True)))


def _thread_text(found: KeyColumns, nums: list[int], algorithm: str) -> bytes:
    with gcpause.paused():  # a container per message: see ``core.gcpause``
        if algorithm == "REFERENCES":
            return references(found, nums)
        return render_flat(ordered_subject(found, nums))


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
    key = whole_view(sel, a[2:], "THREAD", algorithm, cmd.uid)
    text = s.mail.derived(sel.mailbox.id, key) if key is not None else None
    if text is None:
        found = await keyed(s, sel, a[2:], THREAD_FIELDS)
        nums = found.uids if cmd.uid else sel.seqs_of(found.uids)
        text = await asyncio.to_thread(_thread_text, found, nums, algorithm)
        if key is not None:
            s.mail.keep_derived(sel.mailbox.id, key, text)
    s.untagged(b"THREAD " + text if text else b"THREAD")
    return None
