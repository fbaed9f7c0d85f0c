"""CONTEXT=SEARCH / CONTEXT=SORT updates (RFC 5267 §4.2, §4.3): ``RETURN (UPDATE)``
and CANCELUPDATE.

A SEARCH with ``RETURN (UPDATE)`` leaves an ``Update`` on the selected
mailbox: its program and its current result (uids). After each command, and
while idling, the session calls ``refresh``; if the mailbox changed since the
result was taken (its highest modseq, size or last uid moved), the program
runs again -- off the loop and bounded like any SEARCH (``run_search``) --
over the changed messages only when its meaning cannot move with the mailbox
(no sequence numbers, ``*``, ``$`` or WITHIN), else over all. The difference
goes out as ``* ESEARCH (TAG "t") REMOVEFROM (0 set) ADDTO (0 set)``
(position 0: a SEARCH result has no order). Messages about to be expunged
leave the result *before* their EXPUNGE (``before_expunge``), while their
sequence numbers still mean them (§4.3).

A SORT with ``RETURN (UPDATE)`` keeps its result in sort order and is
sorted whole again when the mailbox changed; its REMOVEFROM / ADDTO carry
``position number`` pairs (§4.3) instead of position 0.

At most ``MAX_UPDATES`` per session (``MAX_SORTED`` of them SORTs); beyond
that, and for PARTIAL with UPDATE, the command still answers and an
untagged ``NO [NOUPDATE "tag"]`` says no updates will follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.mail import Change
from protocols.imap import render
from protocols.imap.commands import SELECTED, args, command
from protocols.imap.commands.search import Compiler, run_search
from protocols.imap.commands.sort import SortKey, sorted_matches
from protocols.imap.errors import Bad, ImapError
from protocols.imap.parser import Token
from protocols.imap.returns import Return
from protocols.imap.selected import compress

if TYPE_CHECKING:
    from protocols.imap.parser import Command
    from protocols.imap.selected import Selected
    from protocols.imap.session import Session

MAX_UPDATES = 16
MAX_SORTED = 4  # a SORT context is sorted whole again on each change: fewer of them


@dataclass
class Update:
    tag: str
    uid: bool
    tokens: list[Token]
    stable: bool
    result: set[int]
    mark: tuple[int, int, int]
    seen_modseq: int
    last_uid: int
    keys: list[SortKey] | None = None  # a SORT context (§4.3: positions matter)
    order: list[int] | None = None  # its result in sort order


def _mark(sel: Selected) -> tuple[int, int, int]:
    return sel.highestmodseq, len(sel.uids), sel.uids[-1] if sel.uids else 0


def _head(tag: str, uid: bool) -> bytes:
    return b"ESEARCH (TAG " + render.string(tag) + b")" + (b" UID" if uid else b"")


def _refuse(s: Session, tag: str, why: str) -> bool:
    s.untagged(b"NO [NOUPDATE " + render.string(tag) + b"] " + why.encode())
    return False


def may_add(s: Session, tag: str, ret: Return, *, sort: bool = False) -> bool:
    """Can this SEARCH / SORT leave an update context? If not, say so (and answer
    the command anyway)."""
    sel = s.need_selected()
    if ret.partial is not None:
        return _refuse(s, tag, "no updates for a PARTIAL result")
    others = [u for u in sel.updates if u.tag != tag]
    if len(others) >= MAX_UPDATES:
        return _refuse(s, tag, f"at most {MAX_UPDATES} results are kept up to date")
    if sort and len([u for u in others if u.keys is not None]) >= MAX_SORTED:
        return _refuse(s, tag, f"at most {MAX_SORTED} SORT results are kept up to date")
    return True


def add_sorted(s: Session, sel: Selected, tag: str, uid: bool, tokens: list[Token],
               keys: list[SortKey], order: list[int]) -> None:
    """A SORT context: its result is kept in sort order, so changes carry positions."""
    sel.updates[:] = [u for u in sel.updates if u.tag != tag]
    sel.updates.append(Update(tag, uid, tokens, False, set(order), _mark(sel),
                              sel.highestmodseq, sel.uids[-1] if sel.uids else 0,
                              keys, list(order)))


def _pairs(sel: Selected, upd: Update, pairs: list[tuple[int, int]]) -> bytes:
    """``position number`` pairs (§4.3 ``context-position SP sequence-set``)."""
    return b" ".join(b"%d %d" % (pos, u if upd.uid else sel.seq_of(u)) for pos, u in pairs)


def _removals(order: list[int], leaving: set[int]) -> list[tuple[int, int]]:
    """Each leaving uid with its position in the list as the removals before it left it."""
    out, kept = [], 0
    for u in order:
        if u in leaving:
            out.append((kept + 1, u))
        else:
            kept += 1
    return out


def add(s: Session, sel: Selected, tag: str, uid: bool, tokens: list[Token],
        uids: list[int]) -> None:
    compiler = Compiler(s, sel)
    compiler.program(tokens)  # already run once: it compiles
    sel.updates[:] = [u for u in sel.updates if u.tag != tag]
    sel.updates.append(Update(tag, uid, tokens, compiler.stable, set(uids), _mark(sel),
                              sel.highestmodseq, sel.uids[-1] if sel.uids else 0))


def _nums(sel: Selected, upd: Update, uids: list[int]) -> bytes:
    return compress(uids if upd.uid else sel.seqs_of(uids)).encode()


def before_expunge(sel: Selected, changes: list[Change]) -> list[bytes]:
    """REMOVEFROM for result members whose EXPUNGE is about to be sent (§4.3)."""
    gone = set(sel.held)
    for c in changes:
        if c.kind == "expunge":
            gone.update(c.uids)
    out = []
    for upd in sel.updates:
        leaving = sorted(u for u in upd.result & gone if sel.pos(u) >= 0)
        if not leaving:
            continue
        upd.result.difference_update(leaving)
        if upd.order is not None:
            pairs = _removals(upd.order, set(leaving))
            upd.order = [u for u in upd.order if u in upd.result]
            out.append(b"* " + _head(upd.tag, upd.uid) + b" REMOVEFROM ("
                       + _pairs(sel, upd, pairs) + b")")
        else:
            out.append(b"* " + _head(upd.tag, upd.uid) + b" REMOVEFROM (0 "
                       + _nums(sel, upd, leaving) + b")")
    return out


async def _sorted(s: Session, sel: Selected, upd: Update) -> list[int]:
    assert upd.keys is not None
    return await sorted_matches(s, sel, upd.tokens, upd.keys)


async def _evaluate(s: Session, sel: Selected, upd: Update) -> set[int]:
    if not upd.stable:
        return set((await run_search(s, sel, upd.tokens))[0])
    changed = {u for u, m in zip(sel.uids, sel.modseq_list, strict=True)
               if m > upd.seen_modseq or u > upd.last_uid}
    keep = {u for u in upd.result if u not in changed and sel.pos(u) >= 0}
    if not changed:
        return keep
    return keep | set((await run_search(s, sel, upd.tokens, only=changed))[0])


async def refresh(s: Session) -> None:
    """Send what changed in each kept-up-to-date result since it was last sent."""
    sel = s.selected
    if sel is None or not sel.updates or s.closing:
        return
    mark = _mark(sel)
    for upd in list(sel.updates):
        if upd.mark == mark:
            continue
        try:
            if upd.order is not None:
                await _refresh_sorted(s, sel, upd, mark)
                continue
            now = await _evaluate(s, sel, upd)
        except ImapError as exc:  # too costly now (NO [LIMIT]): stop keeping it
            sel.updates.remove(upd)
            _refuse(s, upd.tag, f"updates stopped: {exc.text}")
            continue
        removed, added = sorted(upd.result - now), sorted(now - upd.result)
        upd.result, upd.mark = now, mark
        upd.seen_modseq, upd.last_uid = sel.highestmodseq, mark[2]
        if not removed and not added:
            continue
        line = b"* " + _head(upd.tag, upd.uid)
        if removed:
            line += b" REMOVEFROM (0 " + _nums(sel, upd, removed) + b")"
        if added:
            line += b" ADDTO (0 " + _nums(sel, upd, added) + b")"
        s.line(line)


async def _refresh_sorted(s: Session, sel: Selected, upd: Update,
                          mark: tuple[int, int, int]) -> None:
    """§4.3 for SORT: removals with their positions, then additions with theirs.

    Sort keys (dates, addresses, subject, size) never change for a message, so
    the messages that stay keep their order: removing, then inserting at the
    new positions in ascending order, turns the client's list into the new one.
    """
    assert upd.order is not None
    new = await _sorted(s, sel, upd)
    now = set(new)
    removed = _removals(upd.order, upd.result - now)
    added = [(i + 1, u) for i, u in enumerate(new) if u not in upd.result]
    upd.order, upd.result, upd.mark = new, now, mark
    upd.seen_modseq, upd.last_uid = sel.highestmodseq, mark[2]
    if not removed and not added:
        return
    line = b"* " + _head(upd.tag, upd.uid)
    if removed:
        line += b" REMOVEFROM (" + _pairs(sel, upd, removed) + b")"
    if added:
        line += b" ADDTO (" + _pairs(sel, upd, added) + b")"
    s.line(line)


# RFC 5267 §4.3 CANCELUPDATE
@command("CANCELUPDATE", SELECTED)
async def cancelupdate(s: Session, cmd: Command) -> str | None:
    sel = s.need_selected()
    args.count(cmd.args, 1, MAX_UPDATES)
    tags = {args.astring(t) for t in cmd.args}
    known = {u.tag for u in sel.updates}
    if tags - known:
        raise Bad("no search is kept up to date under that tag")
    sel.updates[:] = [u for u in sel.updates if u.tag not in tags]
    return None
