"""The durable legacy outbound queue.

``enqueue`` DKIM-signs the message, puts the signed bytes into the dispersed
store and records one row per recipient in twin.db (synchronous FULL) before
it returns, so the SMTP 250 that follows is backed by disk. The worker
(``run``, one background task) picks due recipients, tries them through
``transport.send``, and reschedules temporary failures along
``smtp.retry_schedule`` (the last step repeats) until ``smtp.give_up_after``;
permanent failures and expired ones become one RFC 3464 bounce in the
sender's Inbox. The stored copy is deleted when its last recipient is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.db import transaction
from core.errors import Invalid, NotFound, Unavailable
from core.outbound import transport
from core.outbound.bounce import Failure, make_dsn
from core.outbound.dkim import DkimKey
from core.outbound.dnsq import OutboundDns
from core.outbound.mtasts import MtaSts
from storage import ObjectNotFound, ObjectRef, Store

if TYPE_CHECKING:
    from core.config import Config
    from core.db import Database
    from core.mail import MailStore
    from core.users import Users

log = logging.getLogger("twin.outbound")
MIGRATIONS = [
    """
    CREATE TABLE outbound_messages (
        id         INTEGER PRIMARY KEY,
        mail_from  TEXT NOT NULL,
        ref        TEXT NOT NULL,
        size       INTEGER NOT NULL,
        created    REAL NOT NULL
    );
    CREATE TABLE outbound_rcpts (
        msg_id        INTEGER NOT NULL REFERENCES outbound_messages(id) ON DELETE CASCADE,
        rcpt          TEXT NOT NULL,
        attempts      INTEGER NOT NULL DEFAULT 0,
        next_attempt  REAL NOT NULL,
        last_error    TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (msg_id, rcpt)
    );
    CREATE INDEX outbound_due ON outbound_rcpts(next_attempt);
    """,
]
MAX_SLEEP = 10.0  # the CLI's `queue flush` is noticed within this many seconds
BATCH = 200


@dataclass(frozen=True)
class QueueEntry:
    id: int
    mail_from: str
    rcpt: str
    size: int
    created: float
    attempts: int
    next_attempt: float
    last_error: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def delay_after(schedule: Sequence[float], attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed try; the last step repeats."""
    return float(schedule[min(attempts, len(schedule)) - 1]) if attempts else 0.0


class OutboundQueue:
    def __init__(self, *, config: Config, db: Database, store: Callable[[], Store],
                 users: Users, mail: MailStore) -> None:
        """``store`` gives the open dispersed store (it opens after the parts are
        made) or raises ``Unavailable``; ``users`` and ``mail`` take the bounces."""
        conf = config
        self.domain = config.domain
        self.db = db
        self.store = store
        self.users = users
        self.mail = mail
        self.db.migrate("outbound", MIGRATIONS)
        self.dkim = DkimKey(conf.data_dir, conf.domain, conf.str("smtp.dkim_selector"))
        self.relay = transport.Relay.parse(
            conf.str("smtp.smarthost"), tls=conf.str("smtp.smarthost_tls"),
            user=conf.str("smtp.smarthost_user"), password=conf.str("smtp.smarthost_password"),
            verify=conf.bool("smtp.smarthost_verify"), mx_port=conf.int("smtp.mx_port"),
            helo=conf.str("smtp.hostname") or conf.domain, timeout=conf.float("smtp.dns_timeout")
            * 12)
        self.schedule = [float(s) for s in conf.list("smtp.retry_schedule")]
        self.give_up_after = float(conf.int("smtp.give_up_after"))
        self._wake = asyncio.Event()
        self._busy: set[int] = set()
        self._slots = asyncio.Semaphore(conf.int("smtp.queue_concurrency"))
        self.dns = OutboundDns(conf.float("smtp.dns_timeout"), conf.str("smtp.nameserver"))
        self.resolve_mx: transport.MxResolver = self.dns.mx  # tests inject their own
        verify = transport.verify_context(conf.str("smtp.outbound_ca_file"))
        self.mtasts = MtaSts(self.db, self.dns, verify) if conf.bool("smtp.mta_sts") else None
        self.policies = transport.TlsPolicies(self.dns, self.mtasts, verify,
                                              dane=conf.bool("smtp.dane"))

    # -- the producer side

    async def enqueue(self, mail_from: str, rcpts: Sequence[str], message: bytes) -> int:
        """Sign and store durably; returns the queue id. Raises Unavailable if storage is down."""
        if not rcpts:
            raise Invalid("no recipients")
        store = self.store()
        try:
            signed = await asyncio.to_thread(self.dkim.sign, message)
        except Exception as exc:  # e.g. no From field: a retry cannot help (5xx)
            # not only DKIMException: dkimpy raises IndexError on some malformed
            # header blocks, which became a 451 and a retry for ever
            raise Invalid(f"cannot sign the message: {type(exc).__name__}: {exc}") from exc
        try:
            ref = await store.put(signed)
        except Exception as exc:
            raise Unavailable(f"cannot spool the message: {exc}") from exc
        now = time.time()

        def insert(c: sqlite3.Connection) -> int:
            with transaction(c):
                cur = c.execute("INSERT INTO outbound_messages (mail_from, ref, size, created) "
                                "VALUES (?, ?, ?, ?)", (mail_from, str(ref), len(signed), now))
                msg_id = int(cur.lastrowid or 0)
                c.executemany("INSERT OR IGNORE INTO outbound_rcpts (msg_id, rcpt, next_attempt)"
                              " VALUES (?, ?, ?)", [(msg_id, r, now) for r in rcpts])
            return msg_id

        msg_id = await self.db.run(insert)
        log.debug("queued message %d from %s for %d legacy recipient(s), %d bytes",
                 msg_id, mail_from or "<>", len(rcpts), len(signed))
        self._wake.set()
        return msg_id

    # -- administration (CLI)

    def entries(self) -> list[QueueEntry]:
        rows = self.db.run_sync(lambda c: c.execute(
            "SELECT m.id, m.mail_from, r.rcpt, m.size, m.created, r.attempts, r.next_attempt, "
            "r.last_error FROM outbound_rcpts r JOIN outbound_messages m ON m.id = r.msg_id "
            "ORDER BY m.id, r.rcpt").fetchall())
        return [QueueEntry(*row) for row in rows]

    def flush(self) -> int:
        """Make every waiting recipient due now; returns how many."""
        return int(self.db.run_sync(lambda c: c.execute(
            "UPDATE outbound_rcpts SET next_attempt = 0").rowcount))

    def drop(self, msg_id: int) -> None:
        """Forget a queued message without a bounce (its stored copy goes on the next run)."""
        def delete(c: sqlite3.Connection) -> int:
            with transaction(c):
                c.execute("DELETE FROM outbound_rcpts WHERE msg_id = ?", (msg_id,))
                return int(c.execute("UPDATE outbound_messages SET created = 0 WHERE id = ?",
                                     (msg_id,)).rowcount)
        if not self.db.run_sync(delete):
            raise NotFound(f"no queued message {msg_id}")

    # -- the worker

    async def run(self) -> None:
        """Deliver due recipients for ever (a ``service.spawn`` job)."""
        log.info("legacy queue running (%s)", f"smarthost {self.relay.host}:{self.relay.port}"
                 if self.relay.host else "direct to MX hosts")
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                self._wake.clear()
                await self._collect_orphans()
                due = await self._due()
                for msg_id, (mail_from, ref, created, rcpts) in due.items():
                    if msg_id in self._busy:
                        continue
                    self._busy.add(msg_id)
                    task = asyncio.create_task(self._attempt(msg_id, mail_from, ref, created,
                                                             rcpts))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                wait = await self._next_due_in()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=min(wait, MAX_SLEEP))
        finally:
            for task in tasks:
                task.cancel()

    async def _due(self) -> dict[int, tuple[str, str, float, list[str]]]:
        now = time.time()
        rows = await self.db.run(lambda c: c.execute(
            "SELECT m.id, m.mail_from, m.ref, m.created, r.rcpt FROM outbound_rcpts r "
            "JOIN outbound_messages m ON m.id = r.msg_id WHERE r.next_attempt <= ? "
            "ORDER BY r.next_attempt LIMIT ?", (now, BATCH)).fetchall())
        out: dict[int, tuple[str, str, float, list[str]]] = {}
        for msg_id, mail_from, ref, created, rcpt in rows:
            out.setdefault(msg_id, (mail_from, ref, created, []))[3].append(rcpt)
        return out

    async def _next_due_in(self) -> float:
        row = await self.db.run(lambda c: c.execute(
            "SELECT MIN(next_attempt) FROM outbound_rcpts").fetchone())
        if not row or row[0] is None:
            return MAX_SLEEP
        return max(0.05, float(row[0]) - time.time())

    async def _attempt(self, msg_id: int, mail_from: str, ref: str, created: float,
                       rcpts: list[str]) -> None:
        message = b""
        try:
            async with self._slots:
                message = await self._read(ref)
                verdicts = await transport.send(self.relay, mail_from, rcpts, message,
                                                self.resolve_mx, self.policies)
                await self._settle(msg_id, mail_from, message, created, verdicts)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Retried like a deferral, on the schedule and only until give_up_after,
            # then bounced: an error that recurs for this message must not keep it
            # (and a traceback every few minutes) in the queue for ever.
            log.exception("queued message %d: attempt failed unexpectedly", msg_id)
            failed = transport.Verdict(False, False, "4.3.0",
                                       f"internal error: {type(exc).__name__}: {exc}"[:400])
            try:
                await self._settle(msg_id, mail_from, message or b"\r\n", created,
                                   dict.fromkeys(rcpts, failed))
            except Exception:
                log.exception("queued message %d: cannot record the failed attempt", msg_id)
        finally:
            self._busy.discard(msg_id)

    async def _read(self, ref: str) -> bytes:
        store = self.store()
        chunks = [chunk async for chunk in store.get(ObjectRef.parse(ref))]
        return b"".join(chunks)

    async def _settle(self, msg_id: int, mail_from: str, message: bytes, created: float,
                      verdicts: dict[str, transport.Verdict]) -> None:
        now = time.time()
        expired = now - created >= self.give_up_after
        done: list[str] = []
        failures: list[Failure] = []
        retry: list[tuple[str, str]] = []
        for rcpt, verdict in verdicts.items():
            if verdict.ok:
                done.append(rcpt)
                log.debug("queued message %d delivered to %s", msg_id, rcpt)
            elif verdict.permanent or expired:
                status = verdict.status if verdict.permanent else "4.4.7"
                failures.append(Failure(rcpt, status, verdict.detail))
                done.append(rcpt)
                log.warning("queued message %d to %s failed for good: %s", msg_id, rcpt,
                            verdict.detail)
            else:
                retry.append((rcpt, verdict.detail))
                log.info("queued message %d to %s deferred: %s", msg_id, rcpt, verdict.detail)
        if failures:
            await self.bounce(mail_from, message, failures)

        def record(c: sqlite3.Connection) -> None:
            with transaction(c):
                c.executemany("DELETE FROM outbound_rcpts WHERE msg_id = ? AND rcpt = ?",
                              [(msg_id, r) for r in done])
                for rcpt, detail in retry:
                    attempts = c.execute(
                        "SELECT attempts FROM outbound_rcpts WHERE msg_id = ? AND rcpt = ?",
                        (msg_id, rcpt)).fetchone()[0] + 1
                    c.execute("UPDATE outbound_rcpts SET attempts = ?, next_attempt = ?, "
                              "last_error = ? WHERE msg_id = ? AND rcpt = ?",
                              (attempts, now + delay_after(self.schedule, attempts),
                               detail[:500], msg_id, rcpt))
        await self.db.run(record)
        await self._collect_orphans()

    async def _collect_orphans(self) -> None:
        """Delete stored copies whose recipients are all done."""
        rows = await self.db.run(lambda c: c.execute(
            "SELECT id, ref FROM outbound_messages m WHERE NOT EXISTS "
            "(SELECT 1 FROM outbound_rcpts r WHERE r.msg_id = m.id)").fetchall())
        for msg_id, ref in rows:
            if msg_id in self._busy:
                continue
            try:
                await self.store().delete(ObjectRef.parse(ref))
            except ObjectNotFound:
                pass  # already gone is fine
            except Exception as exc:  # anything else is retried later
                log.warning("queued message %d: cannot delete its copy: %s", msg_id, exc)
                continue
            await self.db.run(lambda c, i=msg_id: c.execute(
                "DELETE FROM outbound_messages WHERE id = ?", (i,)))

    async def bounce(self, mail_from: str, message: bytes, failures: Sequence[Failure]) -> None:
        """Put an RFC 3464 report into the sender's Inbox (never bounce a bounce)."""
        if not mail_from:
            log.warning("not bouncing a bounce: %d recipient(s) lost", len(failures))
            return
        owner = await asyncio.to_thread(self.users.owner_of, mail_from)
        if owner is None:
            log.warning("cannot bounce to %s: not a local user", mail_from)
            return
        dsn = make_dsn(self.domain, mail_from, message, failures)
        await self.mail.deliver(owner, dsn)
        log.info("bounce for %d recipient(s) delivered to %s", len(failures), owner)
