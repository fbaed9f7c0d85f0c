"""NOTIFY (RFC 5465): unsolicited news of other mailboxes, and of the selected one.

``NOTIFY SET [STATUS] (filter events)...`` replaces what a session is told
(``NOTIFY NONE`` turns it off). For mailboxes other than the selected one,
message events (MessageNew, MessageExpunge, FlagChange) become ``STATUS``
responses (§5.1-5.3); mailbox events (MailboxName, SubscriptionChange) become
``LIST`` responses (§5.4, §5.5). For the selected mailbox (filter SELECTED or
SELECTED-DELAYED) the usual EXISTS / FETCH / EXPUNGE go out as soon as they
happen, with the FETCH attributes MessageNew asked for (§5.2).

How: the mail store calls ``Notifier.observe`` for every committed change of
any mailbox (``MailStore.observers``); a change of a watched mailbox marks it
dirty and wakes the session, which reads the mailbox's STATUS once per batch
of changes (coalesced, so a burst of deliveries costs one STATUS). Mailbox
names and subscriptions change through IMAP commands, which hand the LIST
lines to the user's other sessions (``mailbox_event``). The session sends
all that between commands (``read_command`` waits on the client *and* the
notifier), while idling, and before each tagged response.

Bounded: at most ``MAX_GROUPS`` event groups and ``MAX_NAMES`` mailbox names
per command; the watched set is the user's own mailboxes; queued LIST lines
are capped, and past the cap the session is told ``NOTIFICATIONOVERFLOW``
and notifications stop (§5.8).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.mail import DELIM, Change, Mailbox
from protocols.imap import render
from protocols.imap.commands import AUTH, SELECTED, args, command, updates
from protocols.imap.errors import Bad, No
from protocols.imap.parser import Atom, Command, Token

if TYPE_CHECKING:
    from protocols.imap.session import Session

MAX_GROUPS = 64
MAX_NAMES = 1000
MAX_PENDING = 1000
MESSAGE_EVENTS = ("MessageNew", "MessageExpunge", "FlagChange")
MAILBOX_EVENTS = ("MailboxName", "SubscriptionChange")
EVENTS = {e.upper(): e for e in (*MESSAGE_EVENTS, *MAILBOX_EVENTS)}
UNSUPPORTED = {"ANNOTATIONCHANGE", "MAILBOXMETADATACHANGE", "SERVERMETADATACHANGE"}
FILTERS = {"SELECTED", "SELECTED-DELAYED", "INBOXES", "PERSONAL", "SUBSCRIBED", "SUBTREE",
           "MAILBOXES"}
KIND_EVENT = {"exists": "MessageNew", "expunge": "MessageExpunge", "flags": "FlagChange"}


@dataclass(frozen=True)
class Group:
    """One ``(filter events)`` of NOTIFY SET."""

    filter: str
    names: tuple[str, ...]
    events: frozenset[str]
    fetch: Token | None = None  # MessageNew's FETCH attributes (selected filters only)

    def covers(self, name: str, subscribed: set[str]) -> bool:
        if self.filter == "PERSONAL":
            return True
        if self.filter == "INBOXES":  # the one mailbox new mail is delivered to
            return name == "INBOX"
        if self.filter == "SUBSCRIBED":
            return name in subscribed
        if self.filter == "MAILBOXES":
            return name in self.names
        if self.filter == "SUBTREE":
            return any(name == n or name.startswith(n + DELIM) for n in self.names)
        return False


def _status_items(events: set[str] | frozenset[str]) -> list[str]:
    """§5.1-5.3: what a STATUS for these events reports, in a fixed order."""
    items = []
    if events & {"MessageNew", "MessageExpunge"}:
        items.append("MESSAGES")
    if "MessageNew" in events:
        items.append("UIDNEXT")
    if events & {"MessageNew", "FlagChange"}:
        items.append("UIDVALIDITY")
    if "FlagChange" in events:
        items.append("HIGHESTMODSEQ")
    return items


@dataclass(eq=False)
class Notifier:
    session: Session
    groups: list[Group]
    watched: dict[int, tuple[Mailbox, frozenset[str]]] = field(default_factory=dict)
    dirty: dict[int, set[str]] = field(default_factory=dict)
    pending: list[bytes] = field(default_factory=list)
    stale: bool = False  # mailbox names changed: look the watched set up again
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def selected_group(self) -> Group | None:
        for g in self.groups:
            if g.filter in ("SELECTED", "SELECTED-DELAYED") and g.events:
                return g
        return None

    def observe(self, mailbox_id: int, change: Change) -> None:
        """Called by the mail store for every committed change (on the loop, no I/O)."""
        if mailbox_id in self.watched:
            event = KIND_EVENT.get(change.kind)
            if event is not None and event in self.watched[mailbox_id][1]:
                self.dirty.setdefault(mailbox_id, set()).add(event)
                self.wake.set()

    def queue(self, line: bytes) -> None:
        """A whole untagged line to send (``* LIST ...``)."""
        self.pending.append(line)
        self.wake.set()

    async def resolve(self) -> None:
        """The user's mailboxes that message events are asked for, and which events."""
        s = self.session
        boxes = await s.mail.mailboxes(s.user)
        subs = await s.mail.subscriptions.names(s.user)
        watched = {}
        for mb in boxes:
            events: set[str] = set()
            for g in self.groups:
                if g.covers(mb.name, subs):
                    events |= g.events & set(MESSAGE_EVENTS)
            if events:
                watched[mb.id] = (mb, frozenset(events))
        self.watched = watched
        self.stale = False

    def wants(self, name: str, event: str, subscribed: set[str]) -> bool:
        return any(event in g.events and g.covers(name, subscribed) for g in self.groups)


def _parse_names(tok: Token) -> tuple[str, ...]:
    raw = tok if isinstance(tok, list) else [tok]
    if not raw or len(raw) > MAX_NAMES:
        raise Bad(f"one to {MAX_NAMES} mailbox names")
    return tuple(args.astring(t) for t in raw)


def parse_group(s: Session, tok: Token) -> Group:
    """§8 ``event-group = "(" filter-mailboxes SP events ")"``."""
    g = args.plist(tok)
    if not g:
        raise Bad("empty event group")
    kind = args.atom(g[0]).upper()
    if kind not in FILTERS:
        raise Bad(f"unknown NOTIFY filter {kind[:30]}")
    rest = g[1:]
    names: tuple[str, ...] = ()
    if kind in ("SUBTREE", "MAILBOXES"):
        if not rest:
            raise Bad(f"{kind} needs mailbox names")
        raw = _parse_names(rest.pop(0))
        names = tuple(args.mailbox(s, Atom(n)) if n.upper() != "INBOX" else "INBOX"
                      for n in raw)
    if len(rest) != 1:
        raise Bad("an event group is a filter and its events")
    if isinstance(rest[0], Atom) and rest[0].upper() == "NONE":
        return Group(kind, names, frozenset())
    raw_events = args.plist(rest[0])
    events: set[str] = set()
    fetch: Token | None = None
    bad: list[str] = []
    i = 0
    while i < len(raw_events):
        name = args.atom(raw_events[i]).upper()
        if name in UNSUPPORTED:
            bad.append(name)
        elif name not in EVENTS:
            raise Bad(f"unknown NOTIFY event {name[:30]}")
        else:
            events.add(EVENTS[name])
        if name == "MESSAGENEW" and i + 1 < len(raw_events) and isinstance(raw_events[i + 1],
                                                                            list):
            if kind not in ("SELECTED", "SELECTED-DELAYED"):
                raise Bad("FETCH attributes only for the selected mailbox")
            fetch = raw_events[i + 1]
            i += 1
        i += 1
    if bad or not events:
        supported = " ".join([*MESSAGE_EVENTS, *MAILBOX_EVENTS])
        raise No("unsupported NOTIFY event", f"BADEVENT ({supported})")
    return Group(kind, names, frozenset(events), fetch)


def stop(s: Session) -> None:
    n = s.notify
    if n is not None:
        s.mail.observers.discard(n.observe)
        s.notify = None


# RFC 5465 §3 NOTIFY
@command("NOTIFY", AUTH, SELECTED)
async def notify(s: Session, cmd: Command) -> str | None:
    args.count(cmd.args, 1)
    verb = args.atom(cmd.args[0]).upper()
    if verb == "NONE":  # §3.2
        args.count(cmd.args, 1, 1)
        stop(s)
        return None
    if verb != "SET":
        raise Bad("NOTIFY SET or NOTIFY NONE")
    rest = cmd.args[1:]
    with_status = bool(rest) and isinstance(rest[0], Atom) and rest[0].upper() == "STATUS"
    if with_status:
        rest = rest[1:]
    if not rest or len(rest) > MAX_GROUPS:
        raise Bad(f"one to {MAX_GROUPS} event groups")
    groups = [parse_group(s, g) for g in rest]
    fetch = next((g.fetch for g in groups if g.fetch is not None), None)
    if fetch is not None:  # checked now, not when the first message arrives
        from protocols.imap.commands.fetch import parse_items
        parse_items([fetch])
    stop(s)
    n = Notifier(s, groups)
    await n.resolve()
    s.notify = n
    s.mail.observers.add(n.observe)
    if with_status:  # §3.1: the state the client starts from
        from protocols.imap.commands.mailbox import _status_line
        sel_id = s.selected.mailbox.id if s.selected is not None else None
        for mb_id, (mb, events) in n.watched.items():
            if mb_id != sel_id:
                await _status_line(s, mb, _status_items(events))
    return None


async def push(s: Session) -> None:
    """Send what the notifier holds: LIST lines, then STATUS of changed mailboxes,
    then the selected mailbox's own updates when SELECTED asked for them."""
    n = s.notify
    if n is None or s.closing:
        return
    n.wake.clear()
    if len(n.pending) > MAX_PENDING:
        stop(s)
        s.untagged("OK [NOTIFICATIONOVERFLOW] too many notifications: NOTIFY is off")
        return
    lines, n.pending = n.pending, []
    for line in lines:
        s.out += line + b"\r\n"
    if n.stale:
        await n.resolve()
    dirty, n.dirty = n.dirty, {}
    sel = s.selected
    from protocols.imap.commands.mailbox import _status_line
    for mb_id, events in dirty.items():
        if sel is not None and sel.mailbox.id == mb_id:
            continue
        entry = n.watched.get(mb_id)
        if entry is not None:
            with contextlib.suppress(Exception):  # deleted meanwhile: MailboxName says so
                await _status_line(s, entry[0], _status_items(events))
    group = n.selected_group
    if sel is not None and group is not None:
        last = sel.uids[-1] if sel.uids else 0
        s.sync(expunge_ok=group.filter == "SELECTED")
        await updates.refresh(s)
        fresh = [u for u in sel.uids[-MAX_NAMES:] if u > last]
        if fresh and group.fetch is not None and "MessageNew" in group.events:
            from protocols.imap.commands.fetch import fetch
            with contextlib.suppress(Exception):
                await fetch(s, Command("*", "FETCH", [Atom(f"{fresh[0]}:{fresh[-1]}"),
                                                       group.fetch], uid=True))


async def read_command(s: Session, wait: float) -> Command:
    """The next command, sending notifications while waiting for it (§1)."""
    n = s.notify
    if n is None:
        return await asyncio.wait_for(s.cmd_reader.read(), wait)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    task = asyncio.ensure_future(s.cmd_reader.read())
    try:
        while True:
            n = s.notify
            wakers: set[asyncio.Future[Any]] = set()
            if n is not None:
                wakers.add(asyncio.ensure_future(n.wake.wait()))
                if s.selected is not None and n.selected_group is not None:
                    wakers.add(asyncio.ensure_future(s.selected.watch.wake.wait()))
            done, _ = await asyncio.wait({task, *wakers}, timeout=deadline - loop.time(),
                                         return_when=asyncio.FIRST_COMPLETED)
            for w in wakers:
                w.cancel()
            if task in done:
                return task.result()
            if not done:
                raise TimeoutError
            await push(s)
            await s.flush()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def _list_line(o: Session, name: str, attrs: str, extra: bytes = b"") -> bytes:
    return (b"* LIST (" + attrs.encode() + b') "' + DELIM.encode() + b'" '
            + render.astring(args.mailbox_out(o, name), utf8=o.utf8) + extra)


async def mailbox_event(s: Session, event: str, name: str, *, old: str | None = None,
                        gone: bool = False, subscribed: bool | None = None) -> None:
    """Tell the user's other sessions that asked for it (§5.4 MailboxName, §5.5
    SubscriptionChange): a LIST of the name as it is now."""
    others = [o for o in s.server.by_user.get(s.user, set())
              if o is not s and o.notify is not None]
    if not others:
        return
    subs = await s.mail.subscriptions.names(s.user)
    for o in others:
        n = o.notify
        if n is None or not (n.wants(name, event, subs) or (old and n.wants(old, event, subs))):
            if event == "MailboxName" and n is not None:
                n.stale = True
            continue
        attrs = "\\NonExistent" if gone else ""
        if subscribed if subscribed is not None else name in subs:
            attrs = (attrs + " \\Subscribed").strip()
        extra = b""
        if old is not None:
            extra = b' ("OLDNAME" (' + render.astring(args.mailbox_out(o, old),
                                                      utf8=o.utf8) + b"))"
        n.queue(_list_line(o, name, attrs, extra))
        if event == "MailboxName":
            n.stale = True
