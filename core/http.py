"""The HTTPS listener: one uvicorn server, one Starlette app, several mounts.

Core serves the peer API under ``/twin/v1/``; protocol packages add their own
routes (WebDAV under ``/dav/``, Thunderbird autoconfig) through the
``twin.http`` entry point group, so core never imports a protocol. Each entry
point names a function ``routes(service) -> list[starlette.routing.BaseRoute]``.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import ssl
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import BaseRoute, Route
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from core import logsafe, net, tls
from core.errors import ConfigError
from core.limits import Budget, ConnectionLimits, Slot

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from core.service import Service

log = logging.getLogger("twin.http")


class HttpToolsKeepingFragments(HttpToolsProtocol):
    """uvicorn's httptools protocol, except that a ``#fragment`` stays in the path.

    A fragment never belongs in a request target (RFC 9110 section 7.1); h11
    keeps it in the path, httptools silently drops it, so ``DELETE /dav/a/#x``
    would delete ``/dav/a/``. Escaped as ``%23`` it names no resource and the
    request fails safely (litmus basic: delete_fragment).
    """

    def on_url(self, url: bytes) -> None:
        super().on_url(url.replace(b"#", b"%23"))


class Proxies:
    """The reverse proxies whose ``X-Forwarded-For``/``-Proto`` are believed
    (``http.trusted_proxies``: addresses or networks). Nobody by default: a
    header any client can send must not choose the address limits count."""

    def __init__(self, entries: list[str]) -> None:
        self.entries = [str(e) for e in entries]
        try:
            self._networks = [ipaddress.ip_network(e, strict=False) for e in self.entries]
        except ValueError as exc:
            raise ConfigError(f"'http.trusted_proxies': {exc}") from None

    def trusts(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self._networks)


class GuardedHttpProtocol(HttpToolsKeepingFragments):
    """One HTTPS connection, admitted by a per-address budget and given a
    deadline to finish each request's headers.

    uvicorn counts idle connections against ``limit_concurrency`` and never
    times out a connection that has not sent a complete request head, so one
    address holding a few hundred connections open (or trickling a header a
    byte at a time, "slowloris") would make everyone else's requests 503.
    Here an address may hold ``http.max_connections_per_ip`` connections, and
    a request head must arrive within ``http.header_timeout`` seconds of the
    connection or of its first byte; the keep-alive timeout covers the idle
    time between requests.
    """

    def __init__(self, *args: Any, limits: ConnectionLimits, proxy_limits: ConnectionLimits,
                 proxies: Proxies, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits, self._header_timeout = limits, header_timeout
        self._proxy_limits, self._proxies = proxy_limits, proxies
        self._slot: Slot | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ip = str(self.client[0]) if self.client else "?"
        # a trusted reverse proxy carries many clients: only the total binds it
        limits = self._proxy_limits if self._proxies.trusts(ip) else self._limits
        self._slot = limits.admit(ip, transport.close)
        if self._slot is None:
            transport.abort()
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._slot is not None:
            self._slot.release()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self._header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            ip = self.client[0] if self.client else "?"
            log.info("HTTPS connection from %s closed: no complete request head in %g s",
                     ip, self._header_timeout)
            self.transport.close()


def plugin_routes(service: Service) -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    for ep in entry_points(group="twin.http"):
        routes.extend(ep.load()(service))
    return routes


def build_app(service: Service) -> Starlette:
    async def health(request: Request) -> JSONResponse:
        # storage from the cached health (storage.health): answered without asking
        # any backend, so a hung one cannot make `twin status` hang
        store = service.store
        storage = store.monitor.summary().to_json() if store is not None else None
        return JSONResponse({"name": service.config.name, "ok": True,
                             "public_key": service.identity.public_key.hex(),
                             "storage": storage})

    routes: list[BaseRoute] = [Route("/twin/v1/health", health)]
    routes += service.routes()
    routes += plugin_routes(service)
    middleware = [Middleware(PerAddress, limit=service.config.int("http.max_per_ip"))]
    if service.config.bool("log.http_requests"):
        middleware.insert(0, Middleware(AccessLog))  # outermost: the 503s above count too
    return Starlette(routes=routes, middleware=middleware)


class AccessLog:
    """ASGI: one line per request, as a web server's access log has it.

    ``http: GET /dav/notes.txt 200 1234B 5ms client=192.0.2.1``: the path
    without its query (a query may carry what is not the log's to keep), cut
    at 200 characters; bodies never. The status and bytes are what went out;
    a request the client abandoned shows status 0."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = asyncio.get_running_loop().time()
        status, sent = 0, 0

        async def counted(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            ms = (asyncio.get_running_loop().time() - started) * 1000
            client = (scope.get("client") or ("?", 0))[0]
            log.info("http: %s %s %d %dB %.0fms client=%s", scope.get("method", "?"),
                     str(scope.get("path", ""))[:200], status, sent, ms, client)


class PerAddress:
    """ASGI: at most ``limit`` requests in progress per client address (503 beyond).

    uvicorn's ``limit_concurrency`` bounds all clients together, so one address
    could take every slot (#15.9); this keeps the others served.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit
        self.busy: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ip = str((scope.get("client") or ("?", 0))[0])
        n = self.busy.get(ip, 0)
        if n >= self.limit:
            log.warning("HTTPS request from %s refused: %d in progress from that address", ip, n)
            response = PlainTextResponse("too many requests in progress from your address\n",
                                         503, headers={"retry-after": "1"})
            await response(scope, receive, send)
            return
        self.busy[ip] = n + 1
        try:
            await self.app(scope, receive, send)
        finally:
            left = self.busy[ip] - 1
            if left:
                self.busy[ip] = left
            else:
                del self.busy[ip]


class HttpListener:
    """uvicorn driven by hand, so the twin (not uvicorn) owns the signals."""

    def __init__(self, service: Service) -> None:
        conf = service.config
        host, port = conf.str("listen.host"), conf.int("http.port")
        self._sock = net.bind(host, port, "the HTTPS listener", "http.port")
        self.port = self._sock.getsockname()[1]
        # per address, every connection counts (HTTP has no connection-level login)
        total = conf.int("http.max_connections")
        limits = ConnectionLimits(Budget("https", total=total,
                                         per_ip=conf.int("http.max_connections_per_ip"),
                                         unauthenticated=total, evict=False))
        proxy_limits = ConnectionLimits(Budget("https via proxy", total=total, per_ip=total,
                                               unauthenticated=total, evict=False))
        proxies = Proxies(conf.list("http.trusted_proxies"))
        protocol = functools.partial(GuardedHttpProtocol, limits=limits,
                                     proxy_limits=proxy_limits, proxies=proxies,
                                     header_timeout=conf.float("http.header_timeout"))
        self._config = uvicorn.Config(
            build_app(service),
            ssl_certfile=str(conf.data_dir / tls.CERT),
            ssl_keyfile=str(conf.data_dir / tls.KEY),
            log_level="warning",
            access_log=False,
            lifespan="off",
            http=protocol,  # type: ignore[arg-type]  # uvicorn calls it as a class
            timeout_graceful_shutdown=3,
            h11_max_incomplete_event_size=64 * 1024,
            server_header=False,
            # X-Forwarded-For/-Proto only from http.trusted_proxies (uvicorn's own
            # default believes 127.0.0.1, which would let a local client choose its address)
            proxy_headers=bool(proxies.entries),
            forwarded_allow_ips=proxies.entries or None,
            # past it uvicorn answers 503 instead of running the request (#15.9)
            limit_concurrency=conf.int("http.max_connections"),
        )
        logsafe.install(logging.getLogger("uvicorn"))  # its own handlers: one line each too
        self._server = uvicorn.Server(self._config)
        self._task: asyncio.Task[Any] | None = None
        self.info = [net.ListenerInfo("https", host, self.port, "implicit")]

    async def start(self) -> None:
        self._config.load()
        # RFC 8996 / RFC 9325 §3.1.1: no TLS below 1.2, as the IMAP and SMTP
        # listeners (core.tls); uvicorn has no setting for a minimum version
        assert self._config.ssl is not None
        self._config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        tls.serving(self._config.ssl)  # SIGHUP loads a new certificate into it
        self._server.lifespan = self._config.lifespan_class(self._config)
        await self._server.startup(sockets=[self._sock])
        self._task = asyncio.create_task(self._server.main_loop(), name="https")

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
            await self._server.shutdown(sockets=[self._sock])
        self._sock.close()
