"""aiosmtpd's SMTP protocol, adapted to the twin.

Four changes, each because the stock class cannot do it:

- AUTH PLAIN and LOGIN check app passwords *asynchronously* (Argon2 runs in a
  thread and failures are throttled per login and address); aiosmtpd's
  ``authenticator`` hook is synchronous and would block the loop.
- Implicit TLS (port 465) counts as TLS: aiosmtpd only knows STARTTLS.
- Its built-in replies get RFC 3463 enhanced status codes (``errors.enhance``).
- Sessions are counted (``core.limits``): past a listener group's caps a new
  connection gets 421 and is closed, so memory (up to a message per session) is
  bounded; a submission session that has not logged in may be closed (421) to
  make room for a new one, and idles at most ``smtp.login_timeout`` before AUTH.

And five for speed, each measured with ``bench/smtp.py`` (the stock class
spends most of a small message's CPU on them, and the twin must keep up with a
bare aiosmtpd sink while also storing every message):

- DATA is read in chunks (``StreamReader.readuntil`` on ``".\r\n"``, searched
  in C) instead of one awaited ``readuntil`` per line: a 4 KiB message is a
  handful of awaits instead of fifty-odd; dot-unstuffing is one ``replace``.
- ``_getaddr`` takes a plain ``<local@domain>`` with a regular expression and
  leaves everything else (quoted local parts, comments, UTF-8, domain
  literals) to the RFC 5322 parser, whose result is the same but costs ~25x;
  it also skips the ``typing.Protocol`` class aiosmtpd's builds on every MAIL
  and RCPT (about 3% of the twin's CPU per message under load).
- The idle timer is re-armed lazily: a command only moves a deadline instead
  of cancelling and scheduling a timer each time.
- STARTTLS upgrades with ``loop.start_tls`` (uvloop's TLS, in C) instead of
  aiosmtpd's hand-built ``asyncio.sslproto.SSLProtocol`` (pure Python, about
  15 % of a submitting twin's CPU in ``bench/messaging.py``), keeping RFC
  3207's rules (``smtp_STARTTLS``).
- ``dir()`` of a session lists only its ``smtp_*`` and ``auth_*`` methods:
  aiosmtpd's ``__init__`` finds the commands with ``inspect.getmembers(self)``,
  which evaluates every attribute and property (~140 us of a connection's
  ~200 us set-up); the list is the same, computed once per class.
"""

from __future__ import annotations

import asyncio
import binascii
import functools
import logging
import re
from base64 import b64decode
from dataclasses import dataclass
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import TYPE_CHECKING, Any, cast

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, TLSSetupException, syntax

from core.errors import ErrorCode
from core.limits import ConnectionLimits, Slot
from core.users import Throttled, normalize_login
from protocols.smtp.errors import TABLE, enhance

if TYPE_CHECKING:
    from core.service import Service

log = logging.getLogger("twin.smtp")
MAX_AUTH_LINE = 4096
DATA_LINE_LIMIT = 1001  # aiosmtpd's, CRLF included (RFC 5321 §4.5.3.1.6 says 1000)
READER_LIMIT = 64 * 1024  # StreamReader buffer: commands are still checked at 512
END_OF_DATA = b"\r\n.\r\n"
TLS_INFO = ("sslcontext", "peercert", "cipher", "compression", "ssl_object")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_PATH = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>")


@dataclass(frozen=True)
class Login:
    """What a session knows after AUTH: the login, never the password."""

    login: str


class TwinSMTP(SMTP):
    # aiosmtpd sizes its StreamReader with this, and a reader's limit is also its
    # pause threshold: at the stock 1001 bytes every message paused and resumed
    # the socket (two epoll calls). Command lines are still checked at 512 octets
    # and DATA lines at DATA_LINE_LIMIT, so no input limit is loosened.
    line_length_limit = READER_LIMIT

    def __init__(self, handler: Any, *, service: Service, gate: ConnectionLimits,
                 implicit_tls: bool = False, login_timeout: float = 0.0,
                 **kwargs: Any) -> None:
        self._deadline = 0.0
        self._armed = False
        self._login_timeout = login_timeout  # 0: no shorter time-out before AUTH
        super().__init__(handler, **kwargs)
        self.service = service
        self.implicit_tls = implicit_tls
        self.gate = gate
        self._slot: Slot | None = None

    @classmethod
    @functools.cache
    def _command_names(cls) -> list[str]:
        return [name for name in dir(cls) if name.startswith(("smtp_", "auth_"))]

    def __dir__(self) -> list[str]:
        return self._command_names()

    # RFC 5321 §3.8: a server that cannot serve may answer 421 and close at once
    def connection_made(self, transport: Any) -> None:
        # Once per connection: STARTTLS (below) swaps the transport itself and
        # does not call this again, so the connection keeps its one slot (#23.1).
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        slot = self.gate.admit(ip, self._evicted)
        if slot is None:
            transport.write(b"421 4.3.2 Too many connections; try again later\r\n")
            transport.close()
            return
        self._slot = slot
        super().connection_made(transport)

    def _evicted(self) -> None:
        """Closed to make room for a new connection (``core.limits``); never once logged in."""
        if self.transport is not None and not self.transport.is_closing():
            self._writer.write(b"421 4.3.2 Too many connections; closing this one\r\n")
            self.transport.close()

    def connection_lost(self, error: Exception | None) -> None:
        if self._slot is None:
            return
        self._slot.release()
        super().connection_lost(error)

    # RFC 3207 (STARTTLS), with the event loop's TLS
    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        """Upgrade with ``loop.start_tls``: uvloop's TLS is C, aiosmtpd's is not.

        aiosmtpd builds an ``asyncio.sslproto.SSLProtocol`` by hand (pure
        Python: about 15 % of a submitting twin's CPU went to it) and then calls
        ``connection_made`` again; here the loop wraps the transport and the
        session starts over in ``_tls_started``, with the same RFC 3207 rules:

        - §5: whatever the client sent after STARTTLS, in the same packet or
          before the handshake, is not executed. What was read is dropped
          here, and reading stops until the TLS layer is in place (what the
          kernel holds by then is taken for TLS, and fails the handshake).
        - §4.2: after the handshake the state is reset as if the connection
          had just opened (a new session: no EHLO, no AUTH), but it is the
          same connection and keeps its one slot.

        The handshake is bounded by the idle time-out as before (the timer
        closes the connection; uvloop's own 60 s bound applies too). A failed
        handshake raises aiosmtpd's ``TLSSetupException``, whose handling in
        ``_handle_client`` closes the connection and releases the slot.
        """
        if arg:
            await self.push("501 Syntax: STARTTLS")
            return
        if not self.tls_context:
            await self.push("454 TLS not available")
            return
        raw = cast(asyncio.Transport, self.transport)
        raw.pause_reading()
        reader = self._reader
        reader._buffer.clear()  # type: ignore[attr-defined]  # injected plaintext
        reader._paused = False  # type: ignore[attr-defined]  # start_tls resumes reading
        await self.push("220 Ready to start TLS")
        try:
            tls = await self.loop.start_tls(raw, self, self.tls_context, server_side=True)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise TLSSetupException() from error
        if tls is None or tls.is_closing():
            # closed mid-handshake (the idle timer, an eviction): uvloop wakes
            # start_tls without an error, and the session must end here, not
            # live on with a dead transport
            raise TLSSetupException()
        self._tls_started(tls)

    def _tls_started(self, tls: asyncio.Transport) -> None:
        """What aiosmtpd's ``connection_made`` does on its second call, for ``tls``."""
        # aiosmtpd reads _tls_protocol only as "TLS is on" (EHLO's STARTTLS and
        # AUTH lines, AUTH's and require_starttls's checks)
        self._tls_protocol = tls  # type: ignore[assignment]
        self.transport = self._transport = tls  # ours and StreamReaderProtocol's
        self._over_ssl = True
        self._reader._transport = tls  # type: ignore[attr-defined]
        self._writer._transport = tls  # type: ignore[attr-defined]
        self._set_rset_state()  # type: ignore[no-untyped-call]
        self.session = self._create_session()
        self.session.peer = tls.get_extra_info("peername")
        # RFC 3207 §4.1: what the handler may check (aiosmtpd's SSLProtocol._extra)
        self.session.ssl = {name: tls.get_extra_info(name) for name in TLS_INFO}
        hook = self._handle_hooks.get("STARTTLS")
        self._tls_handshake_okay = hook is None or hook(self, self.session, self.envelope)
        self._reset_timeout()

    @property
    def tls_active(self) -> bool:
        return self.implicit_tls or self._tls_protocol is not None

    @property
    def peer_ip(self) -> str:
        peer = self.session.peer if self.session is not None else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"

    def _reset_timeout(self, duration: float | None = None) -> None:
        """Move the idle deadline; the one armed timer checks it when it fires.

        Before AUTH on submission the deadline is ``smtp.login_timeout``: an idle
        session that has not logged in holds a slot only briefly (#15.9).
        """
        timeout = duration or self._timeout_duration
        if self._login_timeout:
            timeout = min(timeout, self._login_timeout)
        self._deadline = self.loop.time() + timeout
        if not self._armed:
            self._armed = True
            self._timeout_handle = self.loop.call_at(self._deadline, self._timeout_cb)

    def _timeout_cb(self) -> None:
        self._armed = False
        if self.loop.time() < self._deadline:
            self._armed = True
            self._timeout_handle = self.loop.call_at(self._deadline, self._timeout_cb)
            return
        if self.transport is not None and not self.transport.is_closing():
            # RFC 5321 §4.5.3.2: the server may give up; 421 tells the client why
            self._writer.write(b"421 4.4.2 Idle too long, closing connection\r\n")
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    # RFC 5321 §4.1.2 (Path, Mailbox): same parsing and limits as aiosmtpd's _getaddr
    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        if not arg:
            return "", ""
        simple = _SIMPLE_PATH.match(arg)
        if simple is not None:
            rest = arg[simple.end():]
            if (not rest or rest[0] in " \t") and "(" not in rest:
                addr = simple.group(1)
                if self.local_part_limit and len(addr.rpartition("@")[0]) > \
                        self.local_part_limit:
                    return None, None
                return addr, rest.strip(" \t")
        try:
            parse = get_angle_addr if arg.lstrip().startswith("<") else get_addr_spec
            address, rest = parse(arg)
            addr = str(address.addr_spec)
        except (HeaderParseError, IndexError, ValueError, TypeError):
            # the stdlib parser raises IndexError on ``a@`` and ``""@``: a syntax error
            # like any other, not a 500 with a traceback
            return None, None
        localpart = addr.rpartition("@")[0]
        if self.local_part_limit and len(localpart) > self.local_part_limit:
            return None, None
        return addr, str(rest)

    # RFC 5321 §3.5.3, §4.1.1.6 (VRFY); aiosmtpd answers an unparsable address with 502
    @syntax("VRFY <address>")
    async def smtp_VRFY(self, arg: str) -> None:
        if await self.check_auth_needed("VRFY"):
            return
        if arg and self._getaddr(arg)[0] is None:
            await self.push("501 5.1.3 Bad address syntax")
            return
        await super().smtp_VRFY(arg)

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = enhance(status)
        await super().push(status)

    # RFC 5321 §4.1.1.4 (DATA), §4.5.2 (transparency), §4.5.3.1.6 (line length)
    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        content, problem = await self._read_data()
        if content is None:
            if problem:
                await self.push(problem)
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(self) -> tuple[bytes | None, str | None]:
        """The message up to CRLF.CRLF, unstuffed; or (None, reply) when it is refused.

        Over the size limit the bytes read are dropped (memory stays bounded)
        and reading goes on to the end of the data, so the reply comes in step.
        A virtual CRLF in front makes an empty message end like any other.
        """
        reader, limit = self._reader, self.data_size_limit
        buf = bytearray(b"\r\n")
        size, too_much = 0, False
        while True:
            try:
                chunk = await reader.readuntil(b".\r\n")
            except asyncio.LimitOverrunError as exc:
                chunk = await reader.read(exc.consumed)
            except (asyncio.IncompleteReadError, ConnectionError):
                log.info("%r connection lost during DATA", self.session and self.session.peer)
                self._writer.close()
                return None, None
            size += len(chunk)
            buf += chunk
            if buf.endswith(END_OF_DATA):
                break
            if limit and size > limit + 3:
                too_much = True
                del buf[:-len(END_OF_DATA)]  # enough to see an end that straddles reads
        if too_much or (limit and size - 3 > limit):
            return None, "552 Error: Too much mail data"
        del buf[-3:]
        if _has_long_line(buf):
            return None, "500 Line too long (see RFC5321 4.5.3.1.6)"
        return bytes(buf).replace(b"\r\n.", b"\r\n")[2:], None

    # RFC 4954 §4 (AUTH) with RFC 4616 (PLAIN)
    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await self.challenge_auth("")
            if not isinstance(blob, bytes):
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = b64decode(args[1][:MAX_AUTH_LINE].encode(), validate=True)
            except (binascii.Error, ValueError):
                await self.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            await self.push("501 5.5.2 Cannot split the PLAIN response")
            return AuthResult(success=False, handled=True)
        authz, login, password = parts
        if authz and authz != login:  # no acting on behalf of another user
            return AuthResult(success=False, handled=False)
        return await self._check(login, password)

    # RFC 4954 §4; the LOGIN mechanism of draft-murchison-sasl-login
    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await self.challenge_auth(self.AuthLoginUsernameChallenge)
            if not isinstance(login, bytes):
                return AuthResult(success=False, handled=True)
        else:
            try:
                login = b64decode(args[1][:MAX_AUTH_LINE].encode(), validate=True)
            except (binascii.Error, ValueError):
                await self.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
        password = await self.challenge_auth(self.AuthLoginPasswordChallenge)
        if not isinstance(password, bytes):
            return AuthResult(success=False, handled=True)
        return await self._check(login, password)

    async def _check(self, raw_login: bytes, raw_password: bytes) -> AuthResult:
        login = normalize_login(raw_login.decode("utf-8", "replace"))
        password = raw_password.decode("utf-8", "replace")
        peer = self.peer_ip
        # busy, not idle: the check (Argon2, a throttle's delay) may outlast login_timeout
        self._deadline = self.loop.time() + self._timeout_duration
        try:
            ok = await self.service.users.login(login, password, peer) is not None
        except Throttled as exc:  # RFC 4954 §6: 454 temporary failure, and why
            code, status = TABLE[ErrorCode.THROTTLED]
            await self.push(f"{code} {status} Too many failed logins; try again in "
                            f"{exc.retry_after} seconds")
            return AuthResult(success=False, handled=True)
        if not ok:
            log.info("SMTP AUTH failed for %s from %s", login, peer)
            return AuthResult(success=False, handled=False)
        log.debug("SMTP AUTH ok for %s from %s", login, peer)
        if self._slot is not None:
            self._slot.authenticated()  # out of the budgets for sessions not logged in
        self._login_timeout = 0.0
        self._reset_timeout()  # from now on the usual smtp.timeout
        return AuthResult(success=True, auth_data=Login(login))


def _has_long_line(buf: bytearray) -> bool:
    """Whether DATA_LINE_LIMIT bytes in a row hold no LF (a CR counts as content).

    Each step jumps to the last LF of the next window, so a message costs
    about len/DATA_LINE_LIMIT C-speed searches (a regex was 40 us per 4 KiB).
    """
    pos, end = 0, len(buf)
    while end - pos >= DATA_LINE_LIMIT:
        lf = buf.rfind(b"\n", pos, pos + DATA_LINE_LIMIT)
        if lf < 0:
            return True
        pos = lf + 1
    return False
