"""Who may do what over WebDAV: the owner everything, another login only what it was granted.

Why: every login of the twin used to own the whole tree, so a mail user added
with ``twin mail users add`` could read and delete the owner's files (#15.8).
Now the owner's login (role ``owner``, made by ``twin init``) is
``Principal.OWNER``; any other login is ``Principal.local(login)`` and reaches
the owner's files only through ``user:LOGIN`` grants, checked by the same
``Access`` helper as twins.

``RoleGate`` sits in wsgidav's middleware stack right after authentication,
so it sees the login of every request wsgidav serves, and answers before any
resource is resolved. The rules for a plain login (RFC 4918 method by method):

- GET, HEAD: the read right on the path;
- PROPFIND, OPTIONS: the read right, or (so a client can walk down to what was
  shared) a read grant somewhere below the path; the root always answers, and
  listings show only what the login may read or walk through (``visible``);
- PUT, MKCOL, PROPPATCH, LOCK, UNLOCK: the write right on the path;
- DELETE: the write right on the path as a file or as something below a
  granted folder (a grantee of ``/docs/`` may empty it, not remove ``/docs``);
- COPY: read on the source and write on the Destination; MOVE: write on both
  (the source, as for DELETE);
- ``/shared/`` (what other twins share with the owner): never.

A read of a path the login may not read answers 404 (whether it exists is
not told); a write it may not do 403, whether the path exists or not. The
fast GET and PUT paths serve the owner only; a plain login's requests all
come through here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from wsgidav.mw.base_mw import BaseMiddleware

from core.acl import Principal, as_dir
from core.errors import Invalid
from core.files import join, split

if TYPE_CHECKING:
    from core.acl import Access
    from core.service import Service
    from protocols.webdav.bridge import Bridge

log = logging.getLogger("twin.webdav")
READS = frozenset({"GET", "HEAD"})
WALKS = frozenset({"PROPFIND", "OPTIONS"})
WRITES = frozenset({"PUT", "DELETE", "MKCOL", "PROPPATCH", "LOCK", "UNLOCK"})
MOUNT = "/dav"
SHARED = "shared"
NOBODY = Principal.local("")  # no login can be empty: holds no grant


def principal_of(service: Service, environ: dict[str, Any]) -> Principal | None:
    """The principal of an authenticated wsgidav request (None: not authenticated)."""
    login = environ.get("twin.login")
    return service.principal(login) if isinstance(login, str) else None


async def holds(access: Access, who: Principal, path: str, right: str) -> bool:
    """``right`` on the file ``path`` or, when it is a folder, on ``path/``."""
    return (await access.allowed(who, path, right)
            or (path != "/" and await access.allowed(who, as_dir(path), right)))


async def visible(access: Access, who: Principal, path: str) -> bool:
    """May ``who`` see ``path`` in a listing: it reads it, or something below it."""
    return await holds(access, who, path, "read") or await access.reaches_below(who, path)


async def refusal(access: Access, who: Principal, method: str, path: str,
                  destination: str | None) -> int | None:
    """The status refusing ``method`` on ``path`` to ``who``, or None when allowed."""
    if who.is_owner:
        return None
    try:
        parts = split(path)
    except Invalid:
        return 400
    if parts and parts[0] == SHARED:
        return 403  # other twins' shares with the owner are the owner's alone
    path = join(parts)
    if method in READS:
        return None if not parts or await holds(access, who, path, "read") else 404
    if method in WALKS:
        return None if not parts or await visible(access, who, path) else 404
    if method in ("COPY", "MOVE"):
        dest = dest_path(destination)
        if dest is None:
            return 403
        source = (holds(access, who, path, "read") if method == "COPY"
                  else access.allowed(who, path, "write"))  # MOVE: not a grant's own folder
        if not parts or not await source:
            return 404 if not await visible(access, who, path) else 403
        if await refusal(access, who, "PUT", dest, None) is not None:
            return 403
        return None
    if method in WRITES:
        if method == "DELETE":  # below a write grant; the granted folder itself stays
            return None if parts and await access.allowed(who, path, "write") else 403
        return None if parts and await holds(access, who, path, "write") else 403
    return 403  # a method this gate does not know: only the owner


def dest_path(destination: str | None) -> str | None:
    """The tree path of a Destination header, as wsgidav reads it (unquote, then parse)."""
    if not destination:
        return None
    path = urlparse(unquote(destination), allow_fragments=False).path
    if path != MOUNT and not path.startswith(MOUNT + "/"):
        return None
    return path[len(MOUNT):] or "/"


class RoleGate(BaseMiddleware):  # type: ignore[misc]
    """wsgidav middleware: refuse what a plain login may not do (see the module doc)."""

    def __init__(self, wsgidav_app: Any, next_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, next_app, config)
        self.service: Service = config["twin"]["service"]
        self.bridge: Bridge = config["twin"]["bridge"]

    def is_disabled(self) -> bool:
        return False

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        who = principal_of(self.service, environ)
        if who is None:  # wsgidav let an anonymous request through: only OPTIONS may pass
            status = None if method == "OPTIONS" else 401
        elif who.is_owner:
            status = None  # no hop to the loop: the owner's requests cost nothing here
        else:
            status = self.bridge.call(refusal(
                self.service.access, who, method, environ.get("PATH_INFO") or "/",
                environ.get("HTTP_DESTINATION")))
        if status is None:
            return self.next_app(environ, start_response)  # type: ignore[no-any-return]
        log.info("WebDAV %s %r refused to %s (%d)", method[:20],
                 (environ.get("PATH_INFO") or "/")[:200], who, status)
        body = b"Forbidden.\n" if status != 404 else b"Not found.\n"
        reason = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
                  404: "Not Found"}[status]
        start_response(f"{status} {reason}", [("Content-Type", "text/plain"),
                                              ("Content-Length", str(len(body)))])
        return [body]
