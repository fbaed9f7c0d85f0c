"""The wsgidav application, its guards, and the Starlette routes that mount it.

Why uvicorn + a2wsgi and not cheroot: measured by ``bench/webdav.py``, with the
figures and the decision in ``protocols/webdav/__init__.py``; in short neither
is clearly faster once plain GETs skip wsgidav, the dispersed store bounds
throughput, and one listener keeps one TLS certificate, one port and one process.

Guards in front of wsgidav (wsgidav itself refuses cross-host Destination
headers with 502 and parses XML with defusedxml, since lxml is not installed,
so entity bombs raise instead of expanding):

- the raw request path and Destination must be valid UTF-8 once
  percent-decoded (uvicorn would otherwise turn bad bytes into U+FFFD);
- request bodies of every method but PUT are XML and limited to
  ``webdav.max_xml_body`` bytes, chunked or not (413 otherwise).

Behind the guard, ``fastget.FastGet`` serves plain whole-file GETs and
``fastput.FastPut`` plain PUTs of the owner's tree on the loop (the owner's
login only); every other request reaches wsgidav, where ``roles.RoleGate``
limits a login other than the owner's to what it was granted.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable, Iterable
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
from protocols.webdav.fastput import FastPut
from protocols.webdav.provider import SHARED, TwinProvider
from protocols.webdav.roles import RoleGate
from protocols.webdav.storage_adapters import SqliteLockStorage, TreePropertyManager

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import ASGIApp, Receive, Scope, Send

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


def _too_large(start_response: Callable[..., Any], limit: int) -> list[bytes]:
    body = f"request body over {limit} bytes\n".encode()
    start_response("413 Content Too Large", [("Content-Type", "text/plain"),
                                             ("Content-Length", str(len(body)))])
    return [body]


def _valid_utf8(raw: bytes) -> bool:
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class PathGuard:
    """ASGI: refuse request targets and Destinations that are not UTF-8."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path") or scope["path"].encode()
            dest = dict(scope["headers"]).get(b"destination", b"")
            if not _valid_utf8(raw) or not _valid_utf8(urlsplit(dest).path):
                response = PlainTextResponse("request path is not valid UTF-8\n", 400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def routes(service: Service) -> list[BaseRoute]:
    """Entry point ``twin.http``: WebDAV under /dav/ and the well-known redirects."""
    bridge = Bridge(asyncio.get_running_loop())
    dav = WsgiDAVApp(wsgidav_config(service, bridge))
    limit = service.config.int("webdav.max_xml_body")
    wsgi = WSGIMiddleware(BodyLimit(dav, limit), workers=WSGI_WORKERS)  # type: ignore[arg-type]

    async def well_known(request: Request) -> RedirectResponse:
        # RFC 6764 section 5 style discovery; clients follow it to the DAV root
        return RedirectResponse(MOUNT + "/", status_code=301)

    async def dav_root(request: Request) -> RedirectResponse:
        return RedirectResponse(MOUNT + "/", status_code=301)

    return [
        Route("/.well-known/webdav", well_known,
              methods=["GET", "HEAD", "PROPFIND", "OPTIONS"]),
        Route(MOUNT, dav_root, methods=["GET", "HEAD", "PROPFIND", "OPTIONS"]),
        Mount(MOUNT, app=PathGuard(FastGet(FastPut(
            wsgi, service, SHARED, dav.lock_manager),  # type: ignore[arg-type]
            service, SHARED))),
    ]
