"""Learning from the owner: mail moved into Junk is spam, mail moved out is ham.

``Learner.copied`` is a ``MailStore.copy_hooks`` entry: the mail store calls
it after every committed COPY or MOVE (IMAP, RFC 3501 §6.4.7 / RFC 6851, or
any other client of the store), with the special uses (RFC 6154) of both
mailboxes. Into ``\\Junk`` from elsewhere -> spam; from ``\\Junk`` into any
mailbox but ``\\Trash`` (deleting spam is not calling it ham) -> ham.

Each lesson teaches rspamd (``/learnspam`` / ``/learnham`` on its
controller, when one is configured) and the built-in per-sender reputation
(``core.spam.reputation``). It runs in the background: the IMAP command has
already been answered, a slow or down rspamd never delays or fails it, and a
failure is one log line. Bounded: ``MAX_PER_COPY`` messages per command,
``MAX_PENDING`` lessons waiting (more are dropped with a log line),
``concurrency`` at once.
"""

from __future__ import annotations

import asyncio
import logging

from core.errors import Invalid
from core.mail import Copied, MailStore
from core.mail.junk import USE as JUNK_USE
from core.routing import from_addresses
from core.spam.reputation import JUNK, TRUSTED, Reputation
from core.spam.rspamd import Rspamd, RspamdError

log = logging.getLogger("twin.spam")
TRASH_USE = "\\Trash"
MAX_PER_COPY = 100
MAX_PENDING = 1000


def lesson(copied: Copied) -> bool | None:
    """True: spam; False: ham; None: nothing to learn from this copy."""
    into, out_of = copied.dest_special == JUNK_USE, copied.source_special == JUNK_USE
    if into and not out_of:
        return True
    if out_of and not into and copied.dest_special != TRASH_USE:
        return False
    return None


class Learner:
    def __init__(self, store: MailStore, reputation: Reputation, rspamd: Rspamd | None,
                 concurrency: int = 2) -> None:
        self.store, self.reputation, self.rspamd = store, reputation, rspamd
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    def copied(self, copied: Copied) -> None:
        spam = lesson(copied)
        if spam is None:
            return
        refs = copied.refs[:MAX_PER_COPY]
        if len(copied.refs) > MAX_PER_COPY:
            log.info("spam: learning from %d of the %d messages %s moved", MAX_PER_COPY,
                     len(copied.refs), copied.login)
        for ref in refs:
            if len(self._tasks) >= MAX_PENDING:
                log.warning("spam: %d lessons already waiting; not learning from the rest",
                            MAX_PENDING)
                return
            task = asyncio.get_running_loop().create_task(self._learn(copied.login, ref, spam))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _learn(self, login: str, ref: str, spam: bool) -> None:
        what = "spam" if spam else "ham"
        async with self._slots:
            try:
                message = await self.store.read_bytes(ref)
            except Exception as exc:
                log.warning("spam: cannot read a message %s moved, not learning it: %s",
                            login, exc)
                return
            try:
                senders = from_addresses(message)
            except Invalid:
                senders = []
            for sender in senders:
                await self.reputation.judge(sender, JUNK if spam else TRUSTED)
            result = "reputation only"
            if self.rspamd is not None and self.rspamd.controller_url:
                try:
                    result = "rspamd " + await self.rspamd.learn(message, spam)
                except RspamdError as exc:
                    log.warning("spam: rspamd did not learn a message %s marked as %s: %s",
                                login, what, exc)
                    return
            log.info("spam: %s marked a message from %s as %s (%s)", login,
                     ",".join(senders[:3]) or "-", what, result)

    async def drain(self) -> None:
        """Wait for the lessons under way (tests wait for them before asking rspamd)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
