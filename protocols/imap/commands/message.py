"""Selected state: CHECK, CLOSE, UNSELECT, EXPUNGE, STORE, COPY, MOVE."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.errors import NotFound
from protocols.imap.commands import SELECTED, args, command
from protocols.imap.errors import Bad, No
from protocols.imap.selected import compress

if TYPE_CHECKING:
    from protocols.imap.parser import Command
    from protocols.imap.session import Session


# RFC 3501 §6.4.1 CHECK (every write is already durable: nothing to do)
@command("CHECK", SELECTED)
async def check(s: Session, cmd: Command) -> str | None:
    args.count(cmd.args, 0, 0)
    return None


# RFC 3501 §6.4.2 CLOSE: expunge silently, then deselect
@command("CLOSE", SELECTED)
async def close(s: Session, cmd: Command) -> str | None:
    args.count(cmd.args, 0, 0)
    sel = s.need_selected()
    if not sel.read_only:
        await s.mail.expunge(sel.mailbox.id)
    s.close_selected()
    return None


# RFC 3691 UNSELECT
@command("UNSELECT", SELECTED)
async def unselect(s: Session, cmd: Command) -> str | None:
    args.count(cmd.args, 0, 0)
    s.close_selected()
    return None


# RFC 3501 §6.4.3 EXPUNGE; RFC 4315 §2.1 UID EXPUNGE
@command("EXPUNGE", SELECTED, uid=True)
async def expunge(s: Session, cmd: Command) -> str | None:
    sel = s.need_writable()
    if cmd.uid:
        args.count(cmd.args, 1, 1)
        uids = sel.parse_set(args.atom(cmd.args[0]), uid=True)
        await s.mail.expunge(sel.mailbox.id, uids)
    else:
        args.count(cmd.args, 0, 0)
        await s.mail.expunge(sel.mailbox.id)
    return None


# RFC 3501 §6.4.6 STORE; RFC 7162 §3.1.3 UNCHANGEDSINCE
@command("STORE", SELECTED, uid=True)
async def store(s: Session, cmd: Command) -> str | None:
    sel = s.need_writable()
    a = list(cmd.args)
    if len(a) < 3:
        raise Bad("STORE needs a set, an item and flags")
    uids = sel.parse_set(args.atom(a[0]), uid=cmd.uid)
    unchanged_since = None
    if isinstance(a[1], list):
        mods = args.plist(a.pop(1))
        if len(mods) != 2 or args.atom(mods[0]).upper() != "UNCHANGEDSINCE":
            raise Bad("unknown STORE modifier")
        unchanged_since = args.number(mods[1], bits=63)
        s.enable_condstore()
    item = args.atom(a[1]).upper()
    op = item[0] if item[0] in "+-" else "="
    base = item.lstrip("+-")
    if base not in ("FLAGS", "FLAGS.SILENT"):
        raise Bad(f"unknown STORE item {item[:30]}")
    silent = base.endswith(".SILENT")
    values = a[2:]
    if len(values) == 1 and isinstance(values[0], list):
        values = values[0]
    flags = [args.atom(v) for v in values]
    changed, failed = await s.mail.set_flags(sel.mailbox.id, uids, op, flags, unchanged_since)
    for uid, now, modseq in changed:
        if uid in sel.flags:
            sel.flags[uid] = now
            sel.modseqs[uid] = modseq
            sel.highestmodseq = max(sel.highestmodseq, modseq)
    for _uid, now, _ in changed:
        for data in sel.announce(now):  # new keywords before the FETCH that uses them
            s.line(data)
    changed_uids = {c[0] for c in changed}
    failed_set = set(failed)
    for uid in uids:
        if uid not in sel.flags or uid in failed_set:
            continue
        # RFC 7162 §3.1.3: with UNCHANGEDSINCE, .SILENT still reports MODSEQ of changes
        if not silent or (unchanged_since is not None and uid in changed_uids):
            s.line(sel.fetch_flags(uid, s.condstore, with_uid=cmd.uid))
            await s.maybe_flush()
    if failed:
        nums = failed if cmd.uid else [sel.seq_of(u) for u in failed]
        return f"[MODIFIED {compress(sorted(nums))}] conditional STORE failed"
    return None


# RFC 3501 §6.4.7 COPY; RFC 4315 COPYUID; RFC 6851 MOVE
@command("COPY", SELECTED, uid=True)
async def copy(s: Session, cmd: Command) -> str | None:
    return await _copy(s, cmd, move=False)


@command("MOVE", SELECTED, uid=True)
async def move(s: Session, cmd: Command) -> str | None:
    s.need_writable()
    return await _copy(s, cmd, move=True)


async def _copy(s: Session, cmd: Command, *, move: bool) -> str | None:
    sel = s.need_selected()
    args.count(cmd.args, 2, 2)
    uids = sel.parse_set(args.atom(cmd.args[0]), uid=cmd.uid)
    dest = args.mailbox(s, cmd.args[1])
    # TRYCREATE (RFC 3501 §6.4.7) only says the destination does not exist;
    # anything else (over quota, a store down) is answered by errors.TABLE
    try:
        await s.mail.mailbox(s.user, dest)
        validity, src, new = await s.mail.copy(sel.mailbox.id, uids, s.user, dest, move=move)
    except NotFound as exc:  # the destination is missing (or was deleted meanwhile)
        raise No(f"no mailbox {dest}", "TRYCREATE") from exc
    if not src:
        return None if cmd.uid else f"{cmd.name} completed (no messages)"
    code = f"COPYUID {validity} {compress(src)} {compress(new)}"
    if move:
        s.untagged(f"OK [{code}] moved")  # RFC 6851 §4.3: before the EXPUNGEs
        return None
    return f"[{code}] {cmd.name} completed"
