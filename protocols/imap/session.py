"""One IMAP connection: state, dispatch, untagged updates, output batching.

The session reads a command (``parser.CommandReader``), checks it against the
command table for its state (RFC 3501 §3), runs the handler, catches the one
error type at this edge (``ImapError``, or a core error mapped through
``errors.TABLE``), sends the pending untagged updates the rules allow, and
answers with the tagged status. Output is collected in a buffer and written in
batches, so a FETCH of 100,000 flags is a few large writes, not 100,000 small ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from core.errors import TwinError
from core.limits import Slot
from core.mail import MailAccess
from core.net import is_loopback
from protocols.imap import commands
from protocols.imap.commands import AUTH, NOT_AUTH, SELECTED, notify, updates
from protocols.imap.errors import Bad, ImapError, No, from_core
from protocols.imap.parser import Command, CommandReader, FatalParseError, ParseError
from protocols.imap.selected import Selected

if TYPE_CHECKING:
    from protocols.imap.server import ImapServer

log = logging.getLogger("twin.imap")
FLUSH_AT = 256 * 1024
# RFC 3501 §7.4.1: no EXPUNGE while the client may hold sequence numbers in flight
NO_EXPUNGE_AFTER = frozenset({"FETCH", "STORE", "SEARCH"})


def plaintext_auth_allowed(peer: str, *, tls: bool, configured: bool) -> bool:
    """May a password cross this connection? (RFC 3501 §6.2.3, RFC 8314 §3)

    Only under TLS, from a loopback *peer* address (the client's, not the
    listener's: a listener on 0.0.0.0 still refuses remote clients), or when
    ``listen.plaintext_auth`` says the operator accepts the risk.
    """
    return tls or is_loopback(peer) or configured


class Session:
    def __init__(self, server: ImapServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, *, tls: bool, slot: Slot | None = None) -> None:
        self.server = server
        self.slot = slot
        self.service = server.service
        self.mail: MailAccess = server.service.mail  # the contract, nothing more
        self.reader = reader
        self.writer = writer
        self.tls = tls
        peer = writer.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else "?"
        self.state = NOT_AUTH
        self.login: str | None = None
        self.selected: Selected | None = None
        self.enabled: set[str] = set()
        self.notify: notify.Notifier | None = None  # RFC 5465 NOTIFY SET
        self.out = bytearray()
        self.flushes = 0  # writes so far: a handler can tell whether its output left yet
        self.closing = False
        self.commands = server.commands
        conf = self.service.config
        self.max_literal = conf.int("imap.max_literal")
        self.autologout = conf.int("imap.autologout")
        self.login_timeout = conf.int("imap.login_timeout")
        self.idle_timeout = conf.int("imap.idle_timeout")
        # before login: 64 KiB per command and no APPEND streaming (#15: literals
        # were not counted, and a LOGIN of 64 KiB literals grew the twin by 1 GB)
        self.cmd_reader = CommandReader(
            reader, self.send_now, max_line=conf.int("imap.max_line"),
            max_literal=self.max_literal,
            max_command=conf.int("imap.max_command_unauthenticated"), stream_append=False)

    # -- capabilities

    @property
    def plaintext_ok(self) -> bool:
        return plaintext_auth_allowed(self.peer, tls=self.tls,
                                      configured=self.service.config.bool("listen.plaintext_auth"))

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE",
                "NAMESPACE"]
        if self.state == NOT_AUTH:
            if not self.tls and self.server.tls_context is not None:
                caps.append("STARTTLS")
            caps.append("AUTH=PLAIN" if self.plaintext_ok else "LOGINDISABLED")
            return caps
        caps += ["UIDPLUS", "MOVE", "UNSELECT", "CHILDREN", "SPECIAL-USE", "CREATE-SPECIAL-USE",
                 "LIST-EXTENDED", "LIST-STATUS", "CONDSTORE", "QRESYNC", "UTF8=ACCEPT",
                 f"APPENDLIMIT={self.max_literal}", "STATUS=SIZE", "ESEARCH", "SEARCHRES",
                 "MULTIAPPEND", "SORT", "SORT=DISPLAY", "THREAD=ORDEREDSUBJECT",
                 "THREAD=REFERENCES", "ESORT", "WITHIN",
                 "BINARY", "CATENATE", "CONTEXT=SEARCH", "CONTEXT=SORT",
                 "PREVIEW", "NOTIFY"]
        if self.mail.quota_bytes:  # RFC 9208 §3.1: a QUOTA answer names a resource
            caps += ["QUOTA", "QUOTA=RES-STORAGE"]
        return caps

    @property
    def condstore(self) -> bool:
        return "CONDSTORE" in self.enabled

    def enable_condstore(self) -> None:
        """A CONDSTORE-enabling command (RFC 7162 §3.1): the first one in a selected
        mailbox also reports its HIGHESTMODSEQ, which the client has not seen yet."""
        if "CONDSTORE" in self.enabled:
            return
        self.enabled.add("CONDSTORE")
        if self.selected is not None:
            self.untagged(b"OK [HIGHESTMODSEQ %d] highest" % self.selected.highestmodseq)

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self.enabled

    @property
    def utf8(self) -> bool:
        """UTF-8 mailbox names and strings: UTF8=ACCEPT, or IMAP4rev2 (RFC 9051 §5.1)."""
        return "UTF8=ACCEPT" in self.enabled or "IMAP4rev2" in self.enabled

    # -- output

    def line(self, data: bytes) -> None:
        self.out += data + b"\r\n"

    def untagged(self, data: bytes | str) -> None:
        self.line(b"* " + (data.encode() if isinstance(data, str) else data))

    async def flush(self) -> None:
        if self.out:
            data, self.out = bytes(self.out), bytearray()
            self.writer.write(data)
            self.flushes += 1
        await self.writer.drain()

    async def maybe_flush(self) -> None:
        if len(self.out) >= FLUSH_AT:
            await self.flush()

    async def send_now(self, data: bytes) -> None:
        self.out += data
        await self.flush()
        if data.startswith(b"+"):
            self._quickack()

    def _quickack(self) -> None:
        """After a continuation, ACK the literal at once.

        Clients write a literal and its closing CRLF separately; with Nagle on
        their side and delayed ACK on ours, the CRLF would wait ~40 ms.
        """
        sock = self.writer.get_extra_info("socket")
        if sock is not None and hasattr(socket, "TCP_QUICKACK"):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    async def stream(self, chunks: AsyncIterator[bytes]) -> None:
        """Write a large literal's bytes straight through, never whole in memory."""
        await self.flush()
        self.flushes += 1
        async for chunk in chunks:
            self.writer.write(chunk)
            await self.writer.drain()

    # -- the loop

    async def run(self) -> None:
        self.untagged("OK [CAPABILITY " + " ".join(self.capabilities()) + "] twin IMAP ready")
        await self.flush()
        try:
            while not self.closing:
                try:
                    # RFC 3501 §5.4 asks 30 minutes of a logged-in session only; before
                    # login a silent connection holds a slot for imap.login_timeout
                    wait = self.autologout if self.login else self.login_timeout
                    cmd = await notify.read_command(self, wait)
                except TimeoutError:
                    self.untagged("BYE autologout: idle for too long")
                    break
                except FatalParseError as exc:
                    self.untagged(f"BYE {exc.text}")
                    break
                except ParseError as exc:
                    self.line(f"{exc.tag} BAD {exc.text}".encode())
                    await self.flush()
                    continue
                await self.dispatch(cmd)
                await self.flush()
        except FatalParseError as exc:
            self.untagged(f"BYE {exc.text}")
        except (EOFError, ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: nobody is left to answer; cleanup follows
        except ssl.SSLError as exc:
            log.info("TLS error from %s: %s", self.peer, exc)
        finally:
            notify.stop(self)
            self.close_selected()
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.flush()

    async def dispatch(self, cmd: Command) -> None:
        spec = self.commands.get(cmd.name)
        try:
            if spec is None or (cmd.uid and not spec.uid):
                raise Bad(f"unknown command {cmd.name[:30]}")
            if self.state not in spec.states:
                raise Bad(f"{cmd.name} is not allowed in the {self.state} state")
            text = await spec.handler(self, cmd)
            if text == commands.ANSWERED:
                return
            self.sync(expunge_ok=cmd.uid or cmd.name not in NO_EXPUNGE_AFTER)
            await updates.refresh(self)
            await notify.push(self)
            if self.closing and cmd.name == "LOGOUT":
                self.line(f"{cmd.tag} OK LOGOUT completed".encode())
                return
            text = text or ("UID " if cmd.uid else "") + cmd.name + " completed"
            self.line(f"{cmd.tag} OK {text}".encode("utf-8", "surrogateescape"))
        except ImapError as exc:
            await self._fail(cmd, exc)
        except TwinError as exc:
            await self._fail(cmd, from_core(exc))
        except ParseError as exc:
            await self._fail(cmd, Bad(exc.text))
        except (EOFError, ConnectionError, FatalParseError, asyncio.IncompleteReadError):
            raise
        except Exception:
            log.exception("IMAP %s failed for %s", cmd.name, self.login or self.peer)
            await self._fail(cmd, No("internal error", "SERVERBUG"))

    async def _fail(self, cmd: Command, exc: ImapError) -> None:
        m = cmd.message
        if m is not None and not m.finished and (m.started or not m.sync):
            if m.size > self.max_literal and not m.started:
                raise FatalParseError("literal too large")
            await m.discard()  # the client sends it anyway: skip it to stay in step
            await self.cmd_reader.skip_rest()
        if exc.status == "NO":
            self.sync(expunge_ok=cmd.uid or cmd.name not in NO_EXPUNGE_AFTER)
        code = f"[{exc.code}] " if exc.code else ""
        self.line(f"{cmd.tag} {exc.status} {code}{exc.text}".encode("utf-8", "replace"))

    # -- mailbox state

    def sync(self, *, expunge_ok: bool) -> None:
        """Send the untagged updates pending for the selected mailbox."""
        sel = self.selected
        if sel is None or self.closing:  # after BYE only the tagged answer may follow
            return
        if sel.watch.overflowed:  # fell too far behind: diff against the mailbox as it is
            changes = sel.resync(self.mail.current(sel.watch))
        else:
            changes = sel.watch.take()
        if changes or (expunge_ok and sel.held):
            if sel.updates and expunge_ok:  # RFC 5267 §4.3: REMOVEFROM before EXPUNGE
                for data in updates.before_expunge(sel, changes):
                    self.line(data)
            for data in sel.apply(changes, expunge_ok=expunge_ok, condstore=self.condstore,
                                  qresync=self.qresync):
                self.line(data)
        if sel.gone:
            self.untagged("BYE the selected mailbox was deleted")
            self.closing = True

    def close_selected(self) -> None:
        if self.selected is not None:
            self.mail.close(self.selected.watch)
            self.selected = None
            if self.state == SELECTED:
                self.state = AUTH

    def need_selected(self) -> Selected:
        if self.selected is None:
            raise Bad("no mailbox selected")
        return self.selected

    def need_writable(self) -> Selected:
        sel = self.need_selected()
        if sel.read_only:
            raise No("mailbox is read-only (EXAMINE)", "READ-ONLY")
        return sel

    @property
    def user(self) -> str:
        assert self.login is not None
        return self.login

    async def logged_in(self, login: str) -> None:
        """Become authenticated (RFC 3501 §6.2), within the per-user session limit."""
        if not self.server.add_session(login, self):
            raise No("too many sessions for this user", "LIMIT")
        self.login = login
        self.state = AUTH
        self.cmd_reader.max_command = self.service.config.int("imap.max_command")
        self.cmd_reader.stream_append = True
        if self.slot is not None:
            self.slot.authenticated()
        await self.mail.ensure_user(login)
        await self.mail.subscriptions.seed(login)  # before a CREATE could add to the old column
        log.info("IMAP login %s from %s", login, self.peer)


__all__ = ["AUTH", "NOT_AUTH", "SELECTED", "Session"]
