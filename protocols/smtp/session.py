"""aiosmtpd's SMTP protocol, adapted to the twin.

Three changes, each because the stock class cannot do it:

- AUTH PLAIN and LOGIN check app passwords *asynchronously* (Argon2 runs in a
  thread and failures are throttled per login and address); aiosmtpd's
  ``authenticator`` hook is synchronous and would block the loop.
- Implicit TLS (port 465) counts as TLS: aiosmtpd only knows STARTTLS.
- Its built-in replies get RFC 3463 enhanced status codes (``errors.enhance``).
"""

from __future__ import annotations

import binascii
import logging
from base64 import b64decode
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP, AuthResult

from protocols.smtp.errors import enhance

if TYPE_CHECKING:
    from core.service import Service

log = logging.getLogger("twin.smtp")
MAX_AUTH_LINE = 4096


@dataclass(frozen=True)
class Login:
    """What a session knows after AUTH: the login, never the password."""

    login: str


class TwinSMTP(SMTP):
    def __init__(self, handler: Any, *, service: Service, implicit_tls: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.service = service
        self.implicit_tls = implicit_tls

    @property
    def tls_active(self) -> bool:
        return self.implicit_tls or self._tls_protocol is not None

    @property
    def peer_ip(self) -> str:
        peer = self.session.peer if self.session is not None else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"

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
