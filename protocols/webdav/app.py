"""The wsgidav application, its guards, and the Starlette routes that mount it.

Why uvicorn + a2wsgi and not cheroot: measured by ``bench/webdav.py``, with the
figures and the decision in ``protocols/webdav/__init__.py``; in short neither
is clearly faster once plain GETs skip wsgidav, the dispersed store bounds
throughput, and one listener keeps one TLS certificate, one port and one process.

Guards in front of wsgidav (wsgidav itself refuses cross-host Destination
headers with 502 and parses XML with defusedxml, since lxml is not installed,
so entity bombs raise instead of expanding):

- the raw request path and Destination must be valid UTF-8 once
  percent-decoded (uvicorn would otherwise turn bad bytes into U+FFFD), hold
  no control character (a trailing ``%0A`` slipped past Starlette's mount
  pattern, whose ``$`` matches before a final newline, and reached wsgidav
  with a broken SCRIPT_NAME: 500) and no ``%2F``: a name cannot contain a
  ``/``, and decoding it would turn one segment into two (``a%2Fb`` would
  name ``/a/b``), so it is refused (400) rather than guessed at;
- ``/dav`` itself (no trailing slash) is answered as ``/dav/`` for every
  method, not redirected: gvfs strips the slash from ``davs://host/dav/``,
  sends ``OPTIONS /dav`` and gives up on a 301 (issue 20);
- the app's own ``Date`` header is dropped: uvicorn adds one to every answer
  (RFC 9110 section 6.6.1 asks for one), and wsgidav and the fast paths sent
  a second;
- request bodies of every method but PUT are XML and limited to
  ``webdav.max_xml_body`` bytes, chunked or not (413 otherwise).

Behind the guard, ``fastget.FastGet`` serves plain whole-file GETs,
``fastput.FastPut`` plain PUTs and ``fastmkcol.FastMkcol`` MKCOLs of existing
folders of the owner's tree on the loop (the owner's login only); every
other request reaches wsgidav, where ``roles.RoleGate`` limits a login other
than the owner's to what it was granted.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes, urlsplit

from a2wsgi import WSGIMiddleware
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import BaseRoute, Mount, Route
from wsgidav.dir_browser import WsgiDavDirBrowser
from wsgidav.error_printer import ErrorPrinter
from wsgidav.http_authenticator import HTTPAuthenticator
from wsgidav.mw.cors import Cors
from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from core.files import PathLocks
from protocols.webdav.auth import TwinDomainController
from protocols.webdav.bridge import Bridge
from protocols.webdav.fastget import FastGet
from protocols.webdav.fastmkcol import FastMkcol
from protocols.webdav.fastput import FastPut
from protocols.webdav.provider import SHARED, TwinProvider
from protocols.webdav.resources import FOUND_EXISTING
from protocols.webdav.roles import RoleGate
from protocols.webdav.storage_adapters import SqliteLockStorage, TreePropertyManager

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from core.service import Service

log = logging.getLogger("twin.webdav")
MOUNT = "/dav"
WSGI_WORKERS = 16


def wsgidav_config(service: Service, bridge: Bridge) -> dict[str, Any]:
    conf = service.config
    return {
        "provider_mapping": {"/": TwinProvider(service, bridge)},
        "mount_path": MOUNT,
        # wsgidav's default stack with RoleGate right after authentication (#15.8)
        "middleware_stack": [Cors, ErrorPrinter, HTTPAuthenticator, RoleGate,
                             WsgiDavDirBrowser, RequestResolver],
        "http_authenticator": {
            "domain_controller": TwinDomainController,
            "accept_basic": True,
            "accept_digest": False,
            "default_to_digest": False,
            "trusted_auth_header": None,
        },
        "lock_storage": SqliteLockStorage(PathLocks(service.db)),
        "property_manager": TreePropertyManager(service.files, bridge),
        "block_size": conf.int("webdav.block_size"),
        "dir_browser": {"enable": False},
        "verbose": 1,
        "logging": {"enable": False},
        "suppress_version_info": True,
        "hotfixes": {"re_encode_path_info": True, "unquote_path_info": False},
        "twin": {"service": service, "bridge": bridge},
    }


class BodyLimit:
    """WSGI: cap XML bodies (everything but PUT), including chunked ones."""

    def __init__(self, app: Callable[..., Iterable[bytes]], limit: int) -> None:
        self.app, self.limit = app, limit

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] != "PUT":
            length = environ.get("CONTENT_LENGTH") or ""
            if not length and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
                body = environ["wsgi.input"].read(self.limit + 1)
                if len(body) > self.limit:
                    return _too_large(start_response, self.limit)
                environ["wsgi.input"] = io.BytesIO(body)
                environ["CONTENT_LENGTH"] = str(len(body))
            elif length.isdigit() and int(length) > self.limit:
                return _too_large(start_response, self.limit)
        return self.app(environ, start_response)


class PutStatus:
    """WSGI: 204, not wsgidav's 201, for a PUT whose new file a concurrent PUT made first.

    wsgidav decides 201 when it finds no resource, before the body; by the time
    ``TreeFolder.create_empty_resource`` runs another PUT may have created the
    file, and RFC 9110 section 9.3.4 gives 201 only to the one that created it.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] != "PUT":
            return self.app(environ, start_response)
        replaced = False

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal replaced
            if status.startswith("201") and environ.get(FOUND_EXISTING):
                replaced = True
                status = "204 No Content"
                headers = [(k, v) for k, v in headers
                           if k.lower() not in ("content-type", "content-length")]
                headers.append(("Content-Length", "0"))
            return start_response(status, headers, exc_info)

        return _unless(self.app(environ, start), lambda: replaced)


def _unless(body: Iterable[bytes], dropped: Callable[[], bool]) -> Iterator[bytes]:
    """``body``, or nothing once ``dropped()`` (a 204 carries no content); closed either way."""
    try:
        for chunk in body:
            if not dropped():
                yield chunk
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def _too_large(start_response: Callable[..., Any], limit: int) -> list[bytes]:
    body = f"request body over {limit} bytes\n".encode()
    start_response("413 Content Too Large", [("Content-Type", "text/plain"),
                                             ("Content-Length", str(len(body)))])
    return [body]


_ENCODED_SLASH = re.compile(rb"%2f", re.IGNORECASE)
# C0, DEL and C1: Unicode's control characters (category Cc)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def path_refusal(raw: bytes) -> str | None:
    """Why a raw (still percent-encoded) request path is refused, or None if it is not."""
    try:
        path = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return "request path is not valid UTF-8"
    if _ENCODED_SLASH.search(raw):
        return "an encoded slash (%2F) in a name is not allowed"
    if _CONTROL.search(path):
        return "control character in the request path"
    return None


class PathGuard:
    """ASGI: refuse request targets and Destinations ``path_refusal`` refuses (400)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path") or scope["path"].encode()
            dest = dict(scope["headers"]).get(b"destination", b"")
            why = path_refusal(raw) or path_refusal(urlsplit(dest).path)
            if why is None and _CONTROL.search(scope["path"]):
                why = "control character in the request path"
            if why is not None:
                response = PlainTextResponse(why + "\n", 400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class OneDate:
    """ASGI: drop the app's ``Date`` header; uvicorn adds the one an answer carries."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def without_date(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [(k, v) for k, v in message.get("headers", ())
                                      if k.lower() != b"date"]
            await send(message)

        await self.app(scope, receive, without_date)


class DavMount(Mount):
    """Starlette's Mount, matching a path with a newline too (then ``PathGuard`` says 400).

    Its pattern ``^/dav/(?P<path>.*)$`` skips a path with an inner newline (a
    bare 404) and matches ``/dav/x\\n`` with the newline cut off the remainder,
    which broke wsgidav's SCRIPT_NAME (500)."""

    def __init__(self, path: str, app: ASGIApp) -> None:
        super().__init__(path, app=app)
        self.path_regex = re.compile(self.path_regex.pattern.removesuffix("$") + r"\Z",
                                     re.DOTALL)


class DavRoot:
    """ASGI: ``/dav`` (no slash) served as ``/dav/``, whatever the method (see the top)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") or scope["path"].encode()
        await self.app({**scope, "path": scope["path"] + "/", "raw_path": raw + b"/",
                        "root_path": scope.get("root_path", "") + MOUNT}, receive, send)


def routes(service: Service) -> list[BaseRoute]:
    """Entry point ``twin.http``: WebDAV under /dav/ and the well-known redirects."""
    bridge = Bridge(asyncio.get_running_loop())
    dav = WsgiDAVApp(wsgidav_config(service, bridge))
    limit = service.config.int("webdav.max_xml_body")
    wsgi = WSGIMiddleware(BodyLimit(PutStatus(dav), limit), workers=WSGI_WORKERS)  # type: ignore[arg-type]

    async def well_known(request: Request) -> RedirectResponse:
        # RFC 6764 section 5 style discovery; clients follow it to the DAV root
        return RedirectResponse(MOUNT + "/", status_code=301)

    app = OneDate(PathGuard(FastGet(FastPut(FastMkcol(
        wsgi, service, SHARED),  # type: ignore[arg-type]
        service, SHARED, dav.lock_manager), service, SHARED)))
    return [
        Route("/.well-known/webdav", well_known,
              methods=["GET", "HEAD", "PROPFIND", "OPTIONS"]),
        # an ASGI app as endpoint: every method, no redirect (gvfs, see the top)
        Route(MOUNT, DavRoot(app)),
        DavMount(MOUNT, app),
    ]
