"""IDLE (RFC 2177): push untagged updates as they happen until the client says DONE."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from protocols.imap.commands import AUTH, SELECTED, args, command, notify, updates
from protocols.imap.errors import Bad

if TYPE_CHECKING:
    from protocols.imap.parser import Command
    from protocols.imap.session import Session

log = logging.getLogger("twin.imap")


# RFC 2177 §3 IDLE
@command("IDLE", AUTH, SELECTED)
async def idle(s: Session, cmd: Command) -> str | None:
    args.count(cmd.args, 0, 0)
    s.sync(expunge_ok=True)  # what arrived before IDLE goes out at once
    s.line(b"+ idling")
    await s.flush()
    done = asyncio.ensure_future(s.cmd_reader.line())
    deadline = asyncio.get_running_loop().time() + s.idle_timeout
    try:
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                s.untagged("BYE IDLE lasted too long")
                s.closing = True
                return "IDLE terminated"
            sel = s.selected
            waiters: set[asyncio.Future[object]] = {done}  # type: ignore[arg-type]
            news = None
            if s.notify is not None:
                news = asyncio.ensure_future(s.notify.wake.wait())
                waiters.add(news)  # type: ignore[arg-type]
            wake = None
            if sel is not None:
                wake = asyncio.ensure_future(sel.watch.wake.wait())
                waiters.add(wake)  # type: ignore[arg-type]
            finished, _ = await asyncio.wait(waiters, timeout=remaining,
                                             return_when=asyncio.FIRST_COMPLETED)
            for waker in (wake, news):
                if waker is not None and not waker.done():
                    waker.cancel()
            if sel is not None:
                told = sel.told_exists
                s.sync(expunge_ok=True)
                if sel.told_exists != told and log.isEnabledFor(logging.DEBUG):
                    # the last hop of a delivery's trace (SMTP id -> journal -> uid -> here)
                    log.debug("imap idle: pushed %d EXISTS to %s in %s (last uid %d)",
                              sel.told_exists, s.login, sel.mailbox.name,
                              sel.uids[sel.told_exists - 1] if sel.told_exists else 0)
                await updates.refresh(s)  # RFC 5267 §4.2: updates while idling too
            await notify.push(s)  # RFC 5465: and news of other mailboxes
            await s.flush()
            if done in finished:
                line = done.result()
                if line.rstrip(b"\r\n").upper() != b"DONE":
                    raise Bad("expected DONE")
                return None
            if s.closing:
                return None
    finally:
        if not done.done():
            done.cancel()
        # retrieve the outcome (EOFError when the client went away while idling),
        # or asyncio logs "Task exception was never retrieved"
        with contextlib.suppress(BaseException):
            await done
