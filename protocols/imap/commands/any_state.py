"""Commands valid in any state, and ENABLE / ID (RFC 3501 §6.1, RFC 5161, RFC 2971)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocols.imap import render
from protocols.imap.commands import ANY, AUTH, SELECTED, args, command

if TYPE_CHECKING:
    from protocols.imap.parser import Command
    from protocols.imap.session import Session

ENABLEABLE = {"CONDSTORE", "QRESYNC", "UTF8=ACCEPT", "IMAP4REV2"}
CANONICAL = {"IMAP4REV2": "IMAP4rev2"}


# RFC 3501 §6.1.1 CAPABILITY
@command("CAPABILITY", *ANY)
async def capability(s: Session, cmd: Command) -> str | None:
    args.count(cmd.args, 0, 0)
    s.untagged("CAPABILITY " + " ".join(s.capabilities()))
    return None


# RFC 3501 §6.1.2 NOOP (also the poll for untagged updates, §6.4.1 CHECK likewise)
@command("NOOP", *ANY)
async def noop(s: Session, cmd: Command) -> str | None:
    return None


# RFC 3501 §6.1.3 LOGOUT
@command("LOGOUT", *ANY)
async def logout(s: Session, cmd: Command) -> str | None:
    s.sync(expunge_ok=True)  # pending updates go before BYE: nothing may follow it
    s.untagged("BYE logging out")
    s.closing = True
    return None


# RFC 2971 §3.1 ID
@command("ID", *ANY)
async def ident(s: Session, cmd: Command) -> str | None:
    args.count(cmd.args, 1, 1)
    s.untagged(b"ID (" + render.string("name") + b" " + render.string("twin") + b" "
               + render.string("vendor") + b" " + render.string("twin") + b")")
    return None


# RFC 5161 §3.1 ENABLE (RFC 7162 §3.2.3: QRESYNC implies CONDSTORE)
@command("ENABLE", AUTH, SELECTED)
async def enable(s: Session, cmd: Command) -> str | None:
    args.count(cmd.args, 1)
    done = []
    for tok in cmd.args:
        name = args.atom(tok).upper()
        name = CANONICAL.get(name, name)
        if name.upper() in ENABLEABLE and name not in s.enabled:
            s.enabled.add(name)
            done.append(name)
            if name == "QRESYNC" and "CONDSTORE" not in s.enabled:
                s.enabled.add("CONDSTORE")
                done.append("CONDSTORE")
    s.untagged("ENABLED" + "".join(" " + d for d in done))
    return None

