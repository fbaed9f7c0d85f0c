"""The live side of the mail store: what sessions see of committed changes.

A mailbox some session has open has one shared in-memory index
(``core.mail.index``), loaded from SQLite by the first ``open`` and kept
exact by ``publish``, which every commit that changes a mailbox calls once
it is durable: the change is folded into the index, queued on the bounded
``Watch`` of every session on the mailbox, and handed to every observer
(IMAP NOTIFY hears of any mailbox). ``announce`` is ``publish`` for rows just
inserted (``core.mail.messages.insert_rows``), caching their metadata for the
FETCH that follows. An index outlives its last session for a while
(``close``, ``IDLE_KEEP``, ``IDLE_INDEX_MESSAGES``).

All of it runs on the event loop; ``MailStore`` holds one ``Live``
(``MailStore.live``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from core.db import Database
from core.errors import Unavailable
from core.mail import indexfile
from core.mail.cache import Fixed, MetaCache
from core.mail.index import MailboxIndex, Snapshot
from core.mail.messages import load_index
from core.mail.model import Change, Mailbox, Row, Watch

log = logging.getLogger("twin.mail")

# Indexes of mailboxes no session has open, kept for the next session (Live.close):
# at most this many messages in all (about 80 bytes each: 16 MiB), each for IDLE_KEEP s.
IDLE_INDEX_MESSAGES = 200_000
IDLE_KEEP = 600.0


class Live:
    """The shared indexes of open (and recently closed) mailboxes, and publishing."""

    def __init__(self, db: Database, metas: MetaCache) -> None:
        self.db = db  # index loads run on the writer's thread: one consistent read
        self.metas = metas  # FETCH's cached metadata (``MailStore.meta``)
        self.indexes: dict[int, MailboxIndex] = {}
        # indexes nobody has open, oldest first: mailbox id -> (messages, closed at)
        self.idle: OrderedDict[int, tuple[int, float]] = OrderedDict()
        self.idle_messages = 0
        # called with every committed change of any mailbox (IMAP NOTIFY, RFC 5465)
        self.observers: set[Callable[[int, Change], None]] = set()
        self._saving: set[asyncio.Task[bool]] = set()  # ``keep`` after a load

    async def index(self, mailbox_id: int) -> MailboxIndex:
        """The loaded shared index of a mailbox, loading it if nobody has it open."""
        self.trim_idle()
        while True:
            idx = self.indexes.get(mailbox_id)
            if idx is not None:
                assert idx.ready is not None
                if idx.ready.done() and idx.ready.exception() is None:
                    self.unidle(mailbox_id)
                    return idx
                with contextlib.suppress(Exception):
                    await asyncio.shield(idx.ready)
                continue  # loaded, or the load failed and was dropped: look again
            idx = self.indexes[mailbox_id] = MailboxIndex(mailbox_id)
            idx.ready = asyncio.get_running_loop().create_future()
            try:
                loaded = await self.db.run(load_index, mailbox_id)
                idx.fill(loaded)
            except BaseException as exc:
                if self.indexes.get(mailbox_id) is idx:
                    del self.indexes[mailbox_id]
                idx.ready.set_exception(exc if isinstance(exc, Exception)
                                        else Unavailable("mailbox load cancelled"))
                idx.ready.exception()  # retrieved: waiters look again
                raise
            idx.ready.set_result(None)
            if not loaded.from_disk and len(loaded.uids) >= indexfile.MIN_MESSAGES:
                self._saving.add(asyncio.create_task(self.keep(idx)))  # for the next start
                self._saving = {t for t in self._saving if not t.done()}
            return idx

    async def keep(self, idx: MailboxIndex) -> bool:
        """Keep a packed copy of a loaded index on disk (``core.mail.indexfile``).

        The columns are taken here, on the loop, so they are one state of the
        index (shared: its next change copies them first); packed on a worker
        thread (~60 ms for 100,000 messages that neither the loop nor the
        database's writer need wait), then checked against the rows and written
        on the writer. Whether it was kept (not when the index is not the
        database's state at that moment, e.g. a commit not yet published to
        it). A failure is logged: it costs the next start one slow load,
        nothing else."""
        columns = indexfile.Columns(idx.uidvalidity, idx.uidnext, idx.modseq, *idx.share())
        try:
            packed = await asyncio.to_thread(indexfile.pack, columns)
            return packed is not None and await self.db.run(indexfile.save, idx.mailbox_id,
                                                            packed)
        except Exception as exc:
            log.warning("could not keep the index of mailbox %d on disk: %s",
                        idx.mailbox_id, exc)
            return False

    async def keep_all(self) -> None:
        """At a clean stop: keep every loaded index of ``MIN_MESSAGES`` or more."""
        for mailbox_id in self.large():
            if (idx := self.indexes.get(mailbox_id)) is not None:
                await self.keep(idx)

    async def warm(self) -> int:
        """Just after a start: load the indexes kept on disk that are exact for their
        mailbox, INBOXes first, as idle indexes within ``IDLE_INDEX_MESSAGES``;
        how many were loaded.

        Why: building a 100,000-message index from its kept copy still costs
        12-18 ms (a Python object per uid, modseq and flag slot), which the
        first SELECT after a restart waited for while Dovecot answers it in
        about 5 ms from its memory-mapped index. Loaded here, while the first
        client is still logging in, that SELECT finds it ready. Like InnoDB's
        buffer pool dump at shutdown and load at startup: what was in use
        before the stop (``keep_all``) is what is warmed. Unused, the indexes
        are dropped after ``IDLE_KEEP`` like any other idle index."""
        started, loaded, messages = time.monotonic(), 0, 0
        for mailbox_id in await self.db.run(indexfile.usable):
            if mailbox_id in self.indexes:
                continue
            try:
                idx = await self.index(mailbox_id)
            except Exception as exc:  # deleted meanwhile; the session that opens it will see
                log.debug("warming the index of mailbox %d: %s", mailbox_id, exc)
                continue
            if self.idle_messages + len(idx.uids) > IDLE_INDEX_MESSAGES:
                # over the budget: this one and the rest wait for their sessions. Safe
                # to drop: this task loaded it (it was not in ``indexes``) and has not
                # yielded since, so no session holds it yet, and a session waiting on
                # that load looks the mailbox up again when it wakes (``index``)
                del self.indexes[mailbox_id]
                break
            self.idle[mailbox_id] = (len(idx.uids), time.monotonic())
            self.idle_messages += len(idx.uids)
            loaded, messages = loaded + 1, messages + len(idx.uids)
        if loaded:
            log.info("warmed %d mailbox indexes (%d messages) in %.0f ms", loaded, messages,
                     1000 * (time.monotonic() - started))
        return loaded

    def large(self) -> list[int]:
        """The loaded mailboxes of ``indexfile.MIN_MESSAGES`` or more (kept at a stop)."""
        return [i.mailbox_id for i in self.indexes.values()
                if not i.loading and len(i.uids) >= indexfile.MIN_MESSAGES]

    def close(self, watch: Watch) -> None:
        """End a subscription. The mailbox's index outlives its last watch for a while.

        Why: a mail client opens a new session for each check, and loading a
        100,000-message index costs ~0.2 s where copying it costs milliseconds
        (Dovecot keeps its index on disk for the same reason). A kept index
        stays exact because every commit reaches it through ``publish`` whether
        anyone watches or not. Bounded: ``IDLE_INDEX_MESSAGES`` messages in all,
        each dropped ``IDLE_KEEP`` s after its last session closed (counted
        at that moment; looked at whenever a mailbox is opened or closed).
        """
        idx = self.indexes.get(watch.mailbox_id)
        if idx is None:
            return
        idx.watches.discard(watch)
        if not idx.watches and not idx.loading:
            self.unidle(watch.mailbox_id)
            self.idle[watch.mailbox_id] = (len(idx.uids), time.monotonic())
            self.idle_messages += len(idx.uids)
            self.trim_idle()

    def unidle(self, mailbox_id: int) -> None:
        kept = self.idle.pop(mailbox_id, None)
        if kept is not None:
            self.idle_messages -= kept[0]

    def trim_idle(self) -> None:
        """Drop kept indexes past their time or beyond the budget, oldest first."""
        now = time.monotonic()
        while self.idle:
            mailbox_id, (_, closed) = next(iter(self.idle.items()))
            if self.idle_messages <= IDLE_INDEX_MESSAGES and now - closed < IDLE_KEEP:
                return
            self.unidle(mailbox_id)
            idx = self.indexes.get(mailbox_id)
            if idx is not None and not idx.watches:
                del self.indexes[mailbox_id]

    def current(self, watch: Watch) -> Snapshot | None:
        """For a watch that overflowed: the mailbox as it is now (None once deleted).

        Clears the overflow: changes published after this call queue again.
        """
        watch.pending = []
        watch.overflowed = False
        watch.wake.clear()
        idx = self.indexes.get(watch.mailbox_id)
        if idx is None or watch not in idx.watches:
            return None
        dummy = Mailbox(watch.mailbox_id, "", "", 0, 0, 0, None, False)
        return idx.view(dummy, claim_recent=False)

    def publish(self, mailbox_id: int, change: Change) -> None:
        """Fold a committed change into the shared index and queue it for every watch."""
        for observe in list(self.observers):  # IMAP NOTIFY: news of any mailbox
            observe(mailbox_id, change)
        idx = self.indexes.get(mailbox_id)
        if idx is None:
            return  # nobody has the mailbox open
        if change.kind == "expunge":  # free the entries (never served again anyway)
            for uid in change.uids:
                self.metas.drop((mailbox_id, idx.uidvalidity, uid))
        if change.kind == "deleted":
            del self.indexes[mailbox_id]
            self.unidle(mailbox_id)
        else:
            idx.apply(change)
        claimed = change.kind != "exists"
        for watch in idx.watches:
            if not claimed and watch.claims_recent:
                watch.recent.update(change.uids)
                idx.recent_uid = max(idx.recent_uid, *change.uids)
                claimed = True
            watch.push(change)

    def announce(self, target: int, uidvalidity: int, uid: int, modseq: int,
                  rows: Sequence[Row]) -> None:
        """Tell live sessions of rows ``insert_rows`` added (uids and modseqs from
        ``uid`` and ``modseq`` on), and cache their metadata if one has the mailbox open."""
        idx = self.indexes.get(target)
        if idx is None:  # nobody has it open: nobody to FETCH soon
            if rows:  # but IMAP NOTIFY may watch it (RFC 5465 MessageNew)
                news = Change("exists", tuple(range(uid, uid + len(rows))), modseq=modseq)
                for observe in list(self.observers):
                    observe(target, news)
            return
        if not idx.watches:  # kept for the next session: kept exact, nothing cached
            for k, row in enumerate(rows):
                self.publish(target, Change("exists", (uid + k,), row.flags, modseq + k))
            return
        for k, (ref, header, structure, size, date, flags) in enumerate(rows):
            self.metas.put((target, uidvalidity, uid + k),
                           Fixed(ref, size, date, header, json.loads(structure)), len(structure))
            self.publish(target, Change("exists", (uid + k,), flags, modseq + k))


def exists_changes(uids: Sequence[int], flags: Sequence[frozenset[str]], modseq: int
                   ) -> list[Change]:
    """``exists`` changes for new uids (ascending), one per run of equal flags, in order."""
    out: list[Change] = []
    start = 0
    for i in range(1, len(uids) + 1):
        if i == len(uids) or flags[i] != flags[start]:
            out.append(Change("exists", tuple(uids[start:i]), flags[start], modseq))
            start = i
    return out
