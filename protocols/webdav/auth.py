"""wsgidav domain controller that checks the twin's own logins (Basic over TLS).

Each attempt goes through ``Users.authenticate`` (Argon2id, cached briefly)
and the shared ``Throttle``, so WebDAV, SMTP and IMAP slow a guesser down
together. Digest is not offered: it needs the clear password (or an MD5 of
it) on the server, and the twin stores only Argon2id hashes.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from wsgidav.dc.base_dc import BaseDomainController

from core.users import Throttled, normalize_login

if TYPE_CHECKING:
    from core.service import Service
    from protocols.webdav.bridge import Bridge

log = logging.getLogger("twin.webdav.auth")
REALM = "twin"
T = TypeVar("T")


class TwinDomainController(BaseDomainController):  # type: ignore[misc]
    """Configured with ``config["twin"] = {"service": ..., "bridge": ...}``."""

    def __init__(self, wsgidav_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, config)
        self.service: Service = config["twin"]["service"]
        self.bridge: Bridge = config["twin"]["bridge"]

    def get_domain_realm(self, path_info: str, environ: dict[str, Any]) -> str:
        return REALM

    def require_authentication(self, realm: str, environ: dict[str, Any]) -> bool:
        return True

    def supports_http_digest_auth(self) -> bool:
        return False

    def basic_auth_user(self, realm: str, user_name: str, password: str,
                        environ: dict[str, Any]) -> bool:
        peer = environ.get("REMOTE_ADDR", "?")
        ok = self.bridge.call(check_login(self.service, user_name, password, peer))
        if ok:
            environ["twin.login"] = normalize_login(user_name)
        return ok


async def check_login(service: Service, login: str, password: str, peer: str) -> bool:
    """The one WebDAV login check (wsgidav's and the fast GET and PUT paths'), throttled.

    A throttled attempt is refused without a check (Basic auth has no way to
    say "later": the client sees 401 and may ask again).
    """
    ok, _ = await check_login_with(service, login, password, peer, None)
    return ok


async def check_login_with(service: Service, login: str, password: str, peer: str,
                           also: Callable[[sqlite3.Connection], T] | None
                           ) -> tuple[bool, T | None]:
    """``check_login``, with ``also(conn)`` read in the same database call as the
    login's hashes (``Users.login_with``); its result is None when throttled."""
    try:
        user, extra = await service.users.login_with(login, password, peer, also)
        ok = user is not None
    except Throttled:
        ok, extra = False, None
    if not ok:
        log.info("WebDAV login refused for %s from %s", login[:254], peer)
    return ok, extra
