"""Not-authenticated state: STARTTLS, AUTHENTICATE, LOGIN (RFC 3501 §6.2).

Passwords are checked by ``service.users.authenticate`` (Argon2 off the loop),
failures are throttled per login and per address by ``Users.login``, and neither
is allowed without TLS except on loopback or with ``listen.plaintext_auth``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import TYPE_CHECKING

from core.users import Throttled
from protocols.imap.commands import ANSWERED, NOT_AUTH, args, command
from protocols.imap.errors import Bad, No, from_core

if TYPE_CHECKING:
    from protocols.imap.parser import Command
    from protocols.imap.session import Session

log = logging.getLogger("twin.imap")


# RFC 3501 §6.2.1 STARTTLS
@command("STARTTLS", NOT_AUTH)
async def starttls(s: Session, cmd: Command) -> str | None:
    args.count(cmd.args, 0, 0)
    ctx = s.server.tls_context
    if s.tls or ctx is None:
        raise Bad("TLS is already active" if s.tls else "TLS is not available")
    if s.reader._buffer:  # type: ignore[attr-defined]
        raise Bad("data after STARTTLS before the handshake (command injection?)")
    s.line(f"{cmd.tag} OK begin TLS negotiation now".encode())
    await s.flush()
    await s.writer.start_tls(ctx, ssl_handshake_timeout=30)
    s.tls = True
    return ANSWERED


async def _check(s: Session, login: str, password: str) -> None:
    if not s.plaintext_ok:
        raise No("use STARTTLS or port imaps before logging in", "PRIVACYREQUIRED")
    try:
        user = await s.service.users.login(login, password, s.peer)
    except Throttled as exc:  # told at once, not left hanging: the THROTTLED row
        raise from_core(exc) from None
    if user is None:
        log.info("IMAP login failed for %s from %s", login[:80], s.peer)
        raise No("invalid credentials", "AUTHENTICATIONFAILED")
    await s.logged_in(user)


# RFC 3501 §6.2.3 LOGIN
@command("LOGIN", NOT_AUTH)
async def login(s: Session, cmd: Command) -> str | None:
    args.count(cmd.args, 2, 2)
    await _check(s, args.astring(cmd.args[0]), args.astring(cmd.args[1]))
    return "[CAPABILITY " + " ".join(s.capabilities()) + "] LOGIN completed"


# RFC 3501 §6.2.2 AUTHENTICATE, RFC 4959 SASL-IR, RFC 4616 PLAIN
@command("AUTHENTICATE", NOT_AUTH)
async def authenticate(s: Session, cmd: Command) -> str | None:
    args.count(cmd.args, 1, 2)
    if args.atom(cmd.args[0]).upper() != "PLAIN":
        raise No("only AUTHENTICATE PLAIN is supported", "CANNOT")
    if not s.plaintext_ok:
        raise No("use STARTTLS or port imaps before logging in", "PRIVACYREQUIRED")
    if len(cmd.args) == 2:
        response = args.astring(cmd.args[1])
        if response == "=":
            response = ""
    else:
        await s.send_now(b"+ \r\n")
        try:  # not logged in: the response has imap.login_timeout to come
            line = await asyncio.wait_for(s.cmd_reader.line(), s.login_timeout)
        except TimeoutError:
            raise Bad("no AUTHENTICATE response in time") from None
        response = line.rstrip(b"\r\n").decode("ascii", "replace")
        if response == "*":
            raise Bad("authentication cancelled")
    try:
        decoded = base64.b64decode(response, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Bad("invalid base64 in AUTHENTICATE") from None
    parts = decoded.split("\0")
    if len(parts) != 3:
        raise Bad("invalid PLAIN response")
    authz, authc, password = parts
    if authz and authz.lower() != authc.lower():
        raise No("cannot act as another user", "AUTHORIZATIONFAILED")
    await _check(s, authc, password)
    return "[CAPABILITY " + " ".join(s.capabilities()) + "] AUTHENTICATE completed"
