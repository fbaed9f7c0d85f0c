"""The IMAP listeners: port ``imap.port`` (STARTTLS) and ``imap.tls_port`` (implicit TLS).

Each accepted connection gets a ``Session``; the server keeps the count of
sessions per user for ``imap.max_sessions_per_user`` and closes every session
on stop. Connections are admitted through ``core.limits`` (#15.9): at most
``imap.max_per_ip`` not logged in from one address, and when
``imap.max_unauthenticated`` are waiting to log in the oldest of them is closed
for a new one, so idle strangers cannot keep the owner's clients out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import TYPE_CHECKING

from core import net, tls
from core.limits import Budget, ConnectionLimits
from core.mail.cache import BytesCache
from protocols.imap import commands
from protocols.imap.session import Session

if TYPE_CHECKING:
    from core.service import Service

log = logging.getLogger("twin.imap")
HEADER_FIELDS_BYTES = 4 * 1024 * 1024  # about 7,000 messages' listing fields, all told
FieldsKey = tuple[str, int]  # (fetch.fields_view, uid)


class ImapServer:
    def __init__(self, service: Service) -> None:
        self.service = service
        conf = service.config
        try:
            self.tls_context: ssl.SSLContext | None = tls.server_context(service.data_dir)
        except (OSError, ssl.SSLError) as exc:
            log.warning("IMAP without TLS: cannot load the certificate: %s", exc)
            self.tls_context = None
        self.max_sessions = conf.int("imap.max_sessions_per_user")
        self.max_line = conf.int("imap.max_line")
        self.max_pending = conf.int("imap.max_pending_changes")
        total = conf.int("imap.max_connections")
        self.limits = ConnectionLimits(Budget(
            "IMAP", total=total, per_ip=conf.int("imap.max_per_ip"),
            unauthenticated=min(total, conf.int("imap.max_unauthenticated"))))
        self.by_user: dict[str, set[Session]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.writers: set[asyncio.StreamWriter] = set()
        self.servers: list[asyncio.Server] = []
        self.info: list[net.ListenerInfo] = []
        # FETCH's HEADER.FIELDS[.NOT] results by mailbox id, uidvalidity, text, fields
        # and uid: never stale, for the reason ``core.mail.cache.MetaCache`` gives
        self.header_fields: BytesCache[FieldsKey] = BytesCache(
            max_bytes=HEADER_FIELDS_BYTES, max_item=4096)
        # the command table, imported now: loaded by the first session instead, it
        # was 10-40 ms of that client's LOGIN (more where no bytecode is cached)
        self.commands = commands.load()

    async def start(self) -> None:
        conf = self.service.config
        host = conf.str("listen.host")
        plain = net.bind(host, conf.int("imap.port"), "the IMAP listener", "imap.port")
        self.servers.append(await asyncio.start_server(
            lambda r, w: self._accept(r, w, tls=False), sock=plain, limit=self.max_line + 64))
        self.info.append(net.ListenerInfo("imap", host, plain.getsockname()[1], "starttls"))
        if self.tls_context is not None:
            secure = net.bind(host, conf.int("imap.tls_port"), "the IMAPS listener",
                              "imap.tls_port")
            self.servers.append(await asyncio.start_server(
                lambda r, w: self._accept(r, w, tls=True), sock=secure, ssl=self.tls_context,
                limit=self.max_line + 64, ssl_handshake_timeout=30))
            self.info.append(net.ListenerInfo("imaps", host, secure.getsockname()[1],
                                              "implicit"))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                      tls: bool) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        slot = self.limits.admit(str(peer[0]) if peer else "?", lambda: _evict(writer))
        if slot is None:
            writer.write(b"* BYE too many connections, try again later\r\n")
            writer.close()
            return
        self.tasks.add(task)
        self.writers.add(writer)
        session = Session(self, reader, writer, tls=tls, slot=slot)
        try:
            await session.run()
        except asyncio.CancelledError:
            pass  # stopping: the connection is closed below
        finally:
            slot.release()
            self.tasks.discard(task)
            self.writers.discard(writer)
            if session.login is not None:
                self.by_user.get(session.login, set()).discard(session)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    def add_session(self, login: str, session: Session) -> bool:
        sessions = self.by_user.setdefault(login, set())
        if len(sessions) >= self.max_sessions:
            log.warning("refused IMAP session for %s: %d open", login, len(sessions))
            return False
        sessions.add(session)
        return True

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for writer in list(self.writers):
            writer.close()  # sessions see end of stream and finish on their own
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=3)
        for task in list(self.tasks):
            task.cancel()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)


def _evict(writer: asyncio.StreamWriter) -> None:
    """Close a connection not logged in to make room (the session sees end of stream)."""
    if not writer.is_closing():
        writer.write(b"* BYE too many connections, closing the oldest not logged in\r\n")
        writer.close()
