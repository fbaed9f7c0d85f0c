"""Authenticated state: mailboxes and APPEND (RFC 3501 §6.3 and extensions)."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from core.errors import NotFound
from core.mail import DELIM, Mailbox, check_name, parse_flags
from protocols.imap import binary, catenate, render, rev2
from protocols.imap.commands import AUTH, SELECTED, args, command, notify
from protocols.imap.errors import Bad, ImapError, No
from protocols.imap.parser import Atom, Token
from protocols.imap.selected import SYSTEM_FLAGS, Selected, compress

if TYPE_CHECKING:
    from protocols.imap.parser import Command
    from protocols.imap.session import Session

STATUS_ITEMS = {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ",
                "SIZE", "APPENDLIMIT", "DELETED"}


# RFC 3501 §6.3.1 SELECT, §6.3.2 EXAMINE; RFC 7162 §3.1.8 CONDSTORE, §3.2.5 QRESYNC
@command("SELECT", AUTH, SELECTED)
async def select(s: Session, cmd: Command) -> str | None:
    return await _open(s, cmd, read_only=False)


@command("EXAMINE", AUTH, SELECTED)
async def examine(s: Session, cmd: Command) -> str | None:
    return await _open(s, cmd, read_only=True)


async def _open(s: Session, cmd: Command, *, read_only: bool) -> str | None:
    args.count(cmd.args, 1, 2)
    name = args.mailbox(s, cmd.args[0])
    qresync: list[Token] | None = None
    if len(cmd.args) == 2:
        params = args.plist(cmd.args[1])
        i = 0
        while i < len(params):
            p = args.atom(params[i]).upper()
            if p == "CONDSTORE":
                s.enabled.add("CONDSTORE")
            elif p == "QRESYNC" and i + 1 < len(params):
                if not s.qresync:
                    raise Bad("QRESYNC must be enabled first (ENABLE QRESYNC)")
                qresync = args.plist(params[i + 1])
                i += 1
            else:
                raise Bad(f"unknown SELECT parameter {p[:30]}")
            i += 1
    # open the new one before closing the old, so that re-selecting the same
    # mailbox keeps its shared index loaded (RFC 3501 §6.3.1: a failed SELECT
    # still leaves the session unselected, hence the close in both cases)
    try:
        snap, watch = await s.mail.open(s.user, name, read_only=read_only,
                                        max_pending=s.server.max_pending)
    finally:
        if s.selected is not None:
            s.close_selected()
            if s.condstore or rev2.enabled(s):
                s.untagged("OK [CLOSED] previous mailbox closed")
    sel = Selected(snap, watch, read_only)
    rev2.on_select(s, sel, name)
    flags = render.flags([*SYSTEM_FLAGS, *sorted(snap.keywords)])
    s.untagged(b"FLAGS " + flags)
    if read_only:
        s.untagged(b"OK [PERMANENTFLAGS ()] read-only")
    else:
        s.untagged(b"OK [PERMANENTFLAGS " + flags[:-1] + b" \\*)] flags permitted")
    s.untagged(b"%d EXISTS" % len(sel.uids))
    if not rev2.enabled(s):
        s.untagged(b"%d RECENT" % len(sel.recent))
    first_unseen = snap.first_unseen()
    if first_unseen:
        s.untagged(b"OK [UNSEEN %d] first unseen" % first_unseen)
    s.untagged(b"OK [UIDVALIDITY %d] uids valid" % snap.mailbox.uidvalidity)
    s.untagged(b"OK [UIDNEXT %d] predicted next uid" % snap.mailbox.uidnext)
    s.untagged(b"OK [HIGHESTMODSEQ %d] highest" % snap.mailbox.modseq)
    s.selected = sel
    s.state = SELECTED
    if qresync is not None:
        await _qresync(s, sel, qresync)
    return f"[{'READ-ONLY' if read_only else 'READ-WRITE'}] {cmd.name} completed"


async def _qresync(s: Session, sel: Selected, params: list[Token]) -> None:
    """RFC 7162 §3.2.5: report what changed since the client's last known modseq."""
    if len(params) < 2:
        raise Bad("QRESYNC needs uidvalidity and modseq")
    validity = args.number(params[0])
    since = args.number(params[1], bits=63)
    if validity != sel.mailbox.uidvalidity:
        return
    known: set[int] | None = None
    if len(params) >= 3 and isinstance(params[2], Atom):
        known = set(_uid_set(args.atom(params[2])))
    gone = await s.mail.vanished(sel.mailbox.id, since)
    if known is not None:
        gone = [u for u in gone if u in known]
    if gone:
        s.untagged(b"VANISHED (EARLIER) " + compress(gone).encode())
    changed = [u for u, m in zip(sel.uids, sel.modseq_list, strict=True) if m > since]
    for uid in changed:
        s.line(sel.fetch_flags(uid, True, with_uid=True))
        await s.maybe_flush()


def _uid_set(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise Bad("invalid uid set")
        a, b = int(lo), int(hi or lo)
        if abs(b - a) > 1_000_000:
            raise Bad("uid range too large")
        out.extend(range(min(a, b), max(a, b) + 1))
    return out


# RFC 3501 §6.3.3 CREATE; RFC 6154 §3 CREATE-SPECIAL-USE
@command("CREATE", AUTH, SELECTED)
async def create(s: Session, cmd: Command) -> str | None:
    args.count(cmd.args, 1, 2)
    name = args.mailbox(s, cmd.args[0])
    special = None
    if len(cmd.args) == 2:
        opts = args.plist(cmd.args[1])
        if len(opts) != 2 or args.atom(opts[0]).upper() != "USE":
            raise Bad("expected (USE (\\Attr))")
        uses = [args.atom(u) for u in args.plist(opts[1])]
        if len(uses) > 1:
            raise No("one special use per mailbox", "USEATTR")
        special = uses[0].capitalize() if uses else None
        if special and not special.startswith("\\"):
            raise No("unknown special use", "USEATTR")
        if special:
            special = "\\" + special[1:].capitalize()
    if name == "INBOX":
        raise No("INBOX exists", "ALREADYEXISTS")
    await s.mail.create_mailbox(s.user, name, special)
    await notify.mailbox_event(s, "MailboxName", name)  # RFC 5465 §5.4
    return None


# RFC 3501 §6.3.4 DELETE
@command("DELETE", AUTH, SELECTED)
async def delete(s: Session, cmd: Command) -> str | None:
    args.count(cmd.args, 1, 1)
    name = args.mailbox(s, cmd.args[0])
    await s.mail.delete_mailbox(s.user, name)
    await notify.mailbox_event(s, "MailboxName", name, gone=True)  # RFC 5465 §5.4
    return None


# RFC 3501 §6.3.5 RENAME
@command("RENAME", AUTH, SELECTED)
async def rename(s: Session, cmd: Command) -> str | None:
    args.count(cmd.args, 2, 2)
    old, new = args.mailbox(s, cmd.args[0]), args.mailbox(s, cmd.args[1])
    await s.mail.rename_mailbox(s.user, old, new)
    await notify.mailbox_event(s, "MailboxName", new, old=old)  # RFC 5465 §5.4
    return None


# RFC 3501 §6.3.6 SUBSCRIBE, §6.3.7 UNSUBSCRIBE: names, whether or not a mailbox exists
@command("SUBSCRIBE", AUTH, SELECTED)
async def subscribe(s: Session, cmd: Command) -> str | None:
    args.count(cmd.args, 1, 1)
    name = check_name(args.mailbox(s, cmd.args[0]))
    await s.mail.subscriptions.change(s.user, name, True)
    await notify.mailbox_event(s, "SubscriptionChange", name, subscribed=True)  # §5.5
    return None


@command("UNSUBSCRIBE", AUTH, SELECTED)
async def unsubscribe(s: Session, cmd: Command) -> str | None:
    args.count(cmd.args, 1, 1)
    name = check_name(args.mailbox(s, cmd.args[0]))
    await s.mail.subscriptions.change(s.user, name, False)
    await notify.mailbox_event(s, "SubscriptionChange", name, subscribed=False)  # §5.5
    return None


def _pattern(s: Session, ref: str, pattern: str) -> re.Pattern[str]:
    try:
        ref = args.mailbox(s, Atom(ref)) if ref else ""
        pattern = args.mailbox(s, Atom(pattern)) if pattern not in ("*", "%") else pattern
    except ImapError as exc:
        if exc.status != "NO":
            raise
        return re.compile(r"(?!)")  # not modified UTF-7: no mailbox has that name
    full = ref + pattern
    if len(full) > 1000 or full.count("*") + full.count("%") > 20:
        raise Bad("pattern too complex")
    regex = "".join(".*" if c == "*" else f"[^{re.escape(DELIM)}]*" if c == "%"
                    else re.escape(c) for c in full)
    if full.upper().startswith("INBOX"):
        regex = "(?i:INBOX)" + regex[len(re.escape("INBOX")):] if full[:5].isalpha() else regex
    return re.compile(regex + r"\Z")


def _attrs(name: str, mb: Mailbox | None, names: set[str]) -> list[str]:
    if mb is None:
        return ["\\NonExistent"]
    attrs = ["\\HasChildren" if any(n.startswith(name + DELIM) for n in names)
             else "\\HasNoChildren"]
    if mb.special:
        attrs.append(mb.special)
    return attrs


def _ancestors(name: str) -> list[str]:
    parts = name.split(DELIM)
    return [DELIM.join(parts[:i]) for i in range(1, len(parts))]


LIST_SELECT = {"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"}
LIST_RETURN = {"SUBSCRIBED", "CHILDREN", "STATUS", "SPECIAL-USE"}


# RFC 3501 §6.3.8 LIST; RFC 5258 LIST-EXTENDED; RFC 5819 LIST-STATUS; RFC 6154 SPECIAL-USE
@command("LIST", AUTH, SELECTED)
async def list_(s: Session, cmd: Command) -> str | None:
    a = list(cmd.args)
    selection: set[str] = set()
    if a and isinstance(a[0], list):
        selection = {args.atom(x).upper() for x in args.plist(a.pop(0))}
    if len(a) < 2:
        raise Bad("LIST needs a reference and a pattern")
    ref = args.astring(a[0])
    patterns = ([args.astring(p) for p in a[1]] if isinstance(a[1], list)
                else [args.astring(a[1])])
    returns: set[str] = set()
    status_items: list[str] = []
    rest = a[2:]
    if rest:
        if len(rest) != 2 or args.atom(rest[0]).upper() != "RETURN":
            raise Bad("expected RETURN (options)")
        opts = args.plist(rest[1])
        i = 0
        while i < len(opts):
            opt = args.atom(opts[i]).upper()
            if opt not in LIST_RETURN:
                raise Bad(f"unknown LIST return option {opt[:30]}")
            if opt == "STATUS":
                if i + 1 >= len(opts):
                    raise Bad("RETURN STATUS needs items")
                status_items = [args.atom(x).upper() for x in args.plist(opts[i + 1])]
                i += 1
            returns.add(opt)
            i += 1
    # RFC 5258 §3.1: RECURSIVEMATCH alone (or with only REMOTE) is an error
    if selection - LIST_SELECT or (
            "RECURSIVEMATCH" in selection and not selection - {"RECURSIVEMATCH", "REMOTE"}):
        raise Bad("invalid LIST selection options")
    if patterns == [""]:
        # RFC 3501 §6.3.8: the empty pattern asks for the delimiter and root
        s.untagged(b'LIST (\\Noselect) "' + DELIM.encode() + b'" ""')
        return None
    boxes = await s.mail.mailboxes(s.user)
    by_name = {b.name: b for b in boxes}
    names = set(by_name)
    matchers = [_pattern(s, ref, p) for p in patterns]

    def matches(name: str) -> bool:
        return any(m.match(name) for m in matchers)

    subs: set[str] = set()
    if "SUBSCRIBED" in selection or "SUBSCRIBED" in returns:
        subs = await s.mail.subscriptions.names(s.user)
    childinfo: set[str] = set()
    if "SUBSCRIBED" in selection:
        candidates = set(subs)
        if "RECURSIVEMATCH" in selection:  # §3.5: parents of matches outside the pattern
            for sub in subs:
                if not matches(sub):
                    childinfo.update(p for p in _ancestors(sub) if p not in subs)
            candidates |= childinfo
    else:
        candidates = names
    for name in sorted(candidates):
        if not matches(name):
            continue
        mb = by_name.get(name)
        if "SPECIAL-USE" in selection and (mb is None or not mb.special):
            continue
        attrs = _attrs(name, mb, names)
        if name in subs:
            attrs.append("\\Subscribed")
        line = (b"LIST (" + " ".join(attrs).encode() + b') "' + DELIM.encode() + b'" '
                + render.astring(args.mailbox_out(s, name), utf8=s.utf8))
        if name in childinfo:
            line += b' ("CHILDINFO" ("SUBSCRIBED"))'
        s.untagged(line)
        if status_items and mb is not None:
            await _status_line(s, mb, status_items)
    return None


# RFC 3501 §6.3.9 LSUB: a parent reached by "%" but not subscribed itself is \Noselect
@command("LSUB", AUTH, SELECTED)
async def lsub(s: Session, cmd: Command) -> str | None:
    args.count(cmd.args, 2, 2)
    ref, pattern = args.astring(cmd.args[0]), args.astring(cmd.args[1])
    if pattern == "":
        s.untagged(b'LSUB (\\Noselect) "' + DELIM.encode() + b'" ""')
        return None
    matcher = _pattern(s, ref, pattern)
    subs = await s.mail.subscriptions.names(s.user)
    shown: dict[str, bool] = {}
    for name in subs:
        if matcher.match(name):
            shown[name] = True
        else:
            for parent in _ancestors(name):
                if parent not in subs and matcher.match(parent):
                    shown.setdefault(parent, False)
    for name in sorted(shown):
        s.untagged(b"LSUB (" + (b"" if shown[name] else b"\\Noselect") + b') "'
                   + DELIM.encode() + b'" '
                   + render.astring(args.mailbox_out(s, name), utf8=s.utf8))
    return None


async def _status_line(s: Session, mb: Mailbox, items: list[str]) -> None:
    for item in items:
        if item not in STATUS_ITEMS:
            raise Bad(f"unknown STATUS item {item[:30]}")
    st = await s.mail.status(mb.id)
    values = {"MESSAGES": st.messages, "RECENT": st.recent, "UIDNEXT": st.uidnext,
              "UIDVALIDITY": st.uidvalidity, "UNSEEN": st.unseen,
              "HIGHESTMODSEQ": st.highestmodseq, "SIZE": st.size,
              "APPENDLIMIT": s.max_literal, "DELETED": st.deleted}
    body = " ".join(f"{i} {values[i]}" for i in items)
    s.untagged(b"STATUS " + render.astring(args.mailbox_out(s, mb.name), utf8=s.utf8)
               + b" (" + body.encode() + b")")


# RFC 3501 §6.3.10 STATUS
@command("STATUS", AUTH, SELECTED)
async def status(s: Session, cmd: Command) -> str | None:
    args.count(cmd.args, 2, 2)
    mb = await s.mail.mailbox(s.user, args.mailbox(s, cmd.args[0]))
    items = [args.atom(x).upper() for x in args.plist(cmd.args[1])]
    if not items:
        raise Bad("STATUS needs items")
    await _status_line(s, mb, items)
    return None


# RFC 2342 §5 NAMESPACE
@command("NAMESPACE", AUTH, SELECTED)
async def namespace(s: Session, cmd: Command) -> str | None:
    args.count(cmd.args, 0, 0)
    s.untagged(b'NAMESPACE (("" "' + DELIM.encode() + b'")) NIL NIL')
    return None


# RFC 9208 §4.2 GETQUOTA, §4.3 GETQUOTAROOT, §4.4 SETQUOTA
@command("GETQUOTAROOT", AUTH, SELECTED)
async def getquotaroot(s: Session, cmd: Command) -> str | None:
    args.count(cmd.args, 1, 1)
    mb = await s.mail.mailbox(s.user, args.mailbox(s, cmd.args[0]))
    root = b' ""' if s.mail.quota_bytes else b""
    s.untagged(b"QUOTAROOT " + render.astring(args.mailbox_out(s, mb.name), utf8=s.utf8)
               + root)
    await _quota(s)
    return None


@command("GETQUOTA", AUTH, SELECTED)
async def getquota(s: Session, cmd: Command) -> str | None:
    args.count(cmd.args, 1, 1)
    if args.astring(cmd.args[0]) != "" or not s.mail.quota_bytes:
        raise No("no such quota root", "NONEXISTENT")
    await _quota(s)
    return None


async def _quota(s: Session) -> None:
    """RFC 9208 §5.1: a QUOTA response lists at least one resource.

    Without a limit there is no quota root at all (QUOTA is not advertised and
    GETQUOTAROOT names none), never an empty list: Thunderbird treats ``()``
    as a syntax error and drops the connection.
    """
    used, limit = await s.mail.quota(s.user)
    if limit:
        s.untagged(f'QUOTA "" (STORAGE {(used + 1023) // 1024} {limit // 1024})')


@command("SETQUOTA", AUTH, SELECTED)
async def setquota(s: Session, cmd: Command) -> str | None:
    raise No("quotas are set in the twin's configuration (mail.quota)", "NOPERM")


def parse_date(text: str) -> float:
    """RFC 3501 date-time ``"17-Jul-1996 02:44:25 -0700"`` as a timestamp."""
    try:
        return dt.datetime.strptime(text.strip(), "%d-%b-%Y %H:%M:%S %z").timestamp()
    except ValueError:
        raise Bad(f"invalid date-time {text[:40]!r}") from None


def _append_options(a: list[Token], utf8: bool) -> tuple[list[str], float | None]:
    """The optional flag list and date-time before one message literal."""
    if a and isinstance(a[-1], Atom) and a[-1].upper() == "UTF8" and utf8:
        a = a[:-1]
    flags: list[str] = []
    date: float | None = None
    if a and isinstance(a[0], list):
        flags = [args.atom(f) for f in args.plist(a.pop(0))]
    if a:
        date = parse_date(args.astring(a.pop(0)))
    if a:
        raise Bad("unexpected APPEND arguments")
    parse_flags(flags)
    return flags, date


# RFC 3501 §6.3.11 APPEND; RFC 3502 MULTIAPPEND; RFC 4315 APPENDUID; RFC 7889 APPENDLIMIT;
# RFC 6855 §4 UTF8; RFC 4469 §5 CATENATE
@command("APPEND", AUTH, SELECTED)
async def append(s: Session, cmd: Command) -> str | None:
    """One message or several (MULTIAPPEND), all or none.

    Each message is streamed into the store as it arrives; if a later one
    fails, the ones already stored are expunged again before the NO, so the
    command appends nothing (RFC 3502 §6.3.11). From the first CATENATE on,
    the parser has read the rest of the command whole (``cmd.message`` is
    None) and its messages are built from the tokens (``catenate``).
    """
    a: list[Token] | None = list(cmd.args)
    assert a is not None
    if not a or (len(a) == 1 and isinstance(a[0], Atom) and a[0].upper() == "UTF8"):
        raise Bad("APPEND needs a mailbox")
    name = args.mailbox(s, a.pop(0))
    if cmd.message is None and not a:
        raise Bad("APPEND needs a message literal")
    done: list[int] = []
    validity = 0
    try:
        while a is not None:
            if cmd.message is None:  # RFC 4469: CATENATE (and what follows it), read whole
                if not done:
                    await _need_mailbox(s, name)  # TRYCREATE before any URL is looked at
                while a:
                    validity, uid = await _append_buffered(s, name, catenate.take(a))
                    done.append(uid)
                break
            literal8 = cmd.message.utf8 and not (
                a and isinstance(a[-1], Atom) and a[-1].upper() == "UTF8")
            flags, date = _append_options(a, cmd.message.utf8)
            if cmd.message.size > s.max_literal:
                raise No(f"message larger than the APPENDLIMIT of {s.max_literal} bytes",
                         "TOOBIG")
            chunks = cmd.message.chunks()
            if literal8:  # RFC 3516 §4.3: binary parts are stored base64-encoded
                whole = b"".join([c async for c in chunks])
                chunks = _one_chunk(await asyncio.to_thread(binary.to_7bit, whole))
            validity, uid = await _store(s, name, chunks, flags, date)
            done.append(uid)
            a = await s.cmd_reader.next_message(cmd)
    except BaseException:
        if done:
            await _unappend(s, name, done)
        raise
    return f"[APPENDUID {validity} {compress(done)}] APPEND completed"


async def _store(s: Session, name: str, chunks: AsyncIterator[bytes], flags: list[str],
                 date: float | None) -> tuple[int, int]:
    try:  # append looks the mailbox up before it reads a byte of the message
        return await s.mail.append(s.user, name, chunks, flags=flags, internal_date=date,
                                   max_size=s.max_literal)
    except NotFound as exc:
        raise No(f"no mailbox {name}", "TRYCREATE") from exc


async def _need_mailbox(s: Session, name: str) -> None:
    try:
        await s.mail.mailbox(s.user, name)
    except NotFound as exc:
        raise No(f"no mailbox {name}", "TRYCREATE") from exc


async def _append_buffered(s: Session, name: str, msg: catenate.Buffered) -> tuple[int, int]:
    """One message read whole: built from CATENATE parts, or a plain literal."""
    flags, date = _append_options(list(msg.options), False)
    if msg.parts is not None:
        data = await catenate.build(s, msg.parts, s.max_literal)
    else:
        assert msg.literal is not None
        data = msg.literal.raw()
        if len(data) > s.max_literal:
            raise No(f"message larger than the APPENDLIMIT of {s.max_literal} bytes", "TOOBIG")
    return await _store(s, name, _one_chunk(data), flags, date)


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _unappend(s: Session, name: str, uids: list[int]) -> None:
    mb = await s.mail.mailbox(s.user, name)
    await s.mail.set_flags(mb.id, uids, "+", ["\\Deleted"])
    await s.mail.expunge(mb.id, uids)
