"""aiosmtpd's SMTP protocol, adapted to the twin.

Three changes, each because the stock class cannot do it:

- AUTH PLAIN and LOGIN check app passwords *asynchronously* (Argon2 runs in a
  thread and failures are throttled per login and address); aiosmtpd's
  ``authenticator`` hook is synchronous and would block the loop.
- Implicit TLS (port 465) counts as TLS: aiosmtpd only knows STARTTLS.
- Its built-in replies get RFC 3463 enhanced status codes (``errors.enhance``).
- ``_getaddr`` is aiosmtpd's own minus a ``typing.Protocol`` class it builds
  on every MAIL and RCPT (about 3% of the twin's CPU per message under load).
- Sessions are counted (``Gate``): past ``smtp.max_sessions`` a new connection
  gets 421 and is closed, so memory (up to a message per session) is bounded.
"""

from __future__ import annotations

import binascii
import logging
from base64 import b64decode
from dataclasses import dataclass
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP, AuthResult

from protocols.smtp.errors import enhance

if TYPE_CHECKING:
    from core.service import Service

log = logging.getLogger("twin.smtp")
MAX_AUTH_LINE = 4096


class Gate:
    """How many SMTP sessions are open, against a maximum (all listeners share one)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.open = limit, 0

    def enter(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def leave(self) -> None:
        self.open -= 1


@dataclass(frozen=True)
class Login:
    """What a session knows after AUTH: the login, never the password."""

    login: str


class TwinSMTP(SMTP):
    def __init__(self, handler: Any, *, service: Service, gate: Gate,
                 implicit_tls: bool = False, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.service = service
        self.implicit_tls = implicit_tls
        self.gate = gate
        self._admitted = False

    # RFC 5321 §3.8: a server that cannot serve may answer 421 and close at once
    def connection_made(self, transport: Any) -> None:
        if not self.gate.enter():
            log.warning("SMTP session refused: %d sessions open (smtp.max_sessions)",
                        self.gate.open)
            transport.write(b"421 4.3.2 Too many connections; try again later\r\n")
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self.gate.leave()
        super().connection_lost(error)

    @property
    def tls_active(self) -> bool:
        return self.implicit_tls or self._tls_protocol is not None

    @property
    def peer_ip(self) -> str:
        peer = self.session.peer if self.session is not None else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"

    # RFC 5321 §4.1.2 (Path, Mailbox): same parsing and limits as aiosmtpd's _getaddr
    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        if not arg:
            return "", ""
        try:
            parse = get_angle_addr if arg.lstrip().startswith("<") else get_addr_spec
            address, rest = parse(arg)
        except HeaderParseError:
            return None, None
        addr = str(address.addr_spec)
        localpart = addr.rpartition("@")[0]
        if self.local_part_limit and len(localpart) > self.local_part_limit:
            return None, None
        return addr, str(rest)

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = enhance(status)
        await super().push(status)

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
        login = raw_login.decode("utf-8", "replace").strip().lower()[:254]
        password = raw_password.decode("utf-8", "replace")
        throttle, peer = self.service.throttle, self.peer_ip
        await throttle.before_attempt(login, peer)
        ok = await self.service.users.authenticate(login, password)
        throttle.record(login, peer, ok)
        if not ok:
            log.info("SMTP AUTH failed for %s from %s", login, peer)
            return AuthResult(success=False, handled=False)
        log.info("SMTP AUTH ok for %s from %s", login, peer)
        return AuthResult(success=True, auth_data=Login(login))
