"""The owner's storage API: ``twin storage …`` while the twin runs.

The dispersed store belongs to one process (``open_store`` locks its local
backends and a second opener gets ``storage.StoreInUse``), so while ``twin
serve`` runs the storage CLI cannot open it. Instead it asks the running twin
to do the work, over these routes on the twin's HTTPS listener, all under
``/twin/v1/local/storage/``:

=======  =========================  ==============================================
PUT      ``objects``                body streamed into ``store.put`` -> ``{"ref"}``
GET      ``objects``                NDJSON, one ``ObjectInfo`` per line
GET      ``objects/{ref}``          the bytes, streamed; ``Range: bytes=a-b`` -> 206
DELETE   ``objects/{ref}``          -> ``{"deleted": ref}``
GET      ``status``                 -> ``StoreStatus.to_json()``
POST     ``verify?sample=F&clean=1`` -> ``VerifyReport`` as JSON
POST     ``repair``                 -> ``RepairReport`` as JSON
POST     ``backup``                 -> ``{"name"}`` (twin.db, then the catalogue)
GET      ``backends``               -> ``[BackendRow]`` (``core.backends``)
POST     ``backends?force=1``       JSON backend spec -> ``BackendRow``; in twin.toml too
POST     ``backends/{name}/drain``  NDJSON ``DrainProgress`` lines, the last one final
DELETE   ``backends/{name}``        -> ``{"removed": name}``; out of twin.toml too
=======  =========================  ==============================================

Owner only, like every route of ``core.owner``: the whole mount is behind
``core.owner.token.OwnerOnly`` (403 ``{"code", "message"}`` before the body is
read or the store is touched). Other errors are JSON ``{"code", "message"}`` too, mapped in one
table (``_failure``).

The JSON shapes are defined here once (``StoreStatus``, ``health_json``,
``verify_from_json``; objects and repair reports are their dataclasses as
dicts) and the CLI prints them in both modes, so its output cannot drift
between "twin running" and "twin stopped".
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import Receive, Scope, Send

from core import backends, domains
from core.backup import backup_all
from core.errors import TwinError
from core.foreign import storage_error
from core.owner.token import OwnerOnly
from core.peer.errors import http_status
from storage import (
    BackendHealth,
    RepairReport,
    ShareProblem,
    StorageError,
    Store,
    VerifyReport,
)

if TYPE_CHECKING:
    from core.service import Service

log = logging.getLogger("twin.owner")
LOCAL_STORAGE = "/twin/v1/local/storage"
NDJSON = "application/x-ndjson"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_LIST_BATCH = 64 * 1024  # bytes of NDJSON per write: one send per object would dominate


# -- the JSON shapes, shared with the CLI (core/cli/storage.py)

def health_json(h: BackendHealth) -> dict[str, Any]:
    """One backend as ``twin storage status --json`` has always printed it."""
    return {"name": h.name, "kind": h.kind, "location": h.location,
            "health": {"reachable": h.reachable, "free_bytes": h.free_bytes,
                       "errors": h.errors, "detail": h.detail, "writable": h.writable,
                       "flags": h.flags}}


def health_from_json(d: dict[str, Any]) -> BackendHealth:
    return BackendHealth(d["name"], d["kind"], d["location"], **d["health"])


@dataclass(frozen=True)
class StoreStatus:
    """The store's layout and each backend's health: what ``twin storage status`` shows."""

    k: int
    n: int
    segment_size: int
    backends: list[BackendHealth]
    domains: dict[str, str] = field(default_factory=dict)  # backend name -> core.domains

    @classmethod
    async def of(cls, store: Store) -> StoreStatus:
        where = await asyncio.to_thread(
            lambda: {b.name: domains.of_backend(b) for b in store.backends})
        return cls(store.k, store.n, store.segment_size, await store.health(), where)

    def to_json(self) -> dict[str, Any]:
        return {"k": self.k, "n": self.n, "segment_size": self.segment_size,
                "backends": [health_json(h) for h in self.backends], "domains": self.domains}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StoreStatus:
        return cls(d["k"], d["n"], d["segment_size"],
                   [health_from_json(h) for h in d["backends"]], dict(d.get("domains") or {}))


def verify_from_json(d: dict[str, Any]) -> VerifyReport:
    """The inverse of ``asdict(report)``, so the CLI judges health with ``report.healthy``."""
    return VerifyReport(**{**d, "problems": [ShareProblem(**p) for p in d["problems"]]})


def repair_from_json(d: dict[str, Any]) -> RepairReport:
    return RepairReport(**d)


# -- byte ranges

class RangeNotSatisfiable(Exception):
    """A well-formed range that starts at or past the end of the object (416)."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (end exclusive) for one ``bytes=a-b``, ``a-`` or ``-n`` range.

    None means "send it all": no header, or one this API does not serve (several
    ranges, another unit, a malformed one), which RFC 9110 lets a server ignore.
    Raises ``RangeNotSatisfiable`` when the range lies wholly past the end.
    """
    m = _RANGE.fullmatch(header.strip()) if header else None
    if m is None or m.group(1) == m.group(2) == "":
        return None
    first, last = m.group(1), m.group(2)
    if first == "":  # suffix: the last n bytes
        if int(last) == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(size - int(last), 0), size
    start = int(first)
    if last != "" and int(last) < start:
        return None  # a-b with b < a is invalid, hence ignored
    if start >= size:
        raise RangeNotSatisfiable
    return start, size if last == "" else min(int(last) + 1, size)


# -- the routes

def _json(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def _failure(exc: Exception) -> JSONResponse:
    """What the CLI is told: the store's errors in core's terms (``core.foreign``),
    then core's through the peer table (``core.peer.errors``)."""
    if isinstance(exc, StorageError):
        exc = storage_error(exc)  # the store's own message: the CLI prints it as it is
    if isinstance(exc, TwinError):
        return _json({"code": exc.code, "message": str(exc)}, http_status(exc))
    if isinstance(exc, ValueError):
        return _json({"code": "invalid", "message": str(exc)}, 400)
    log.error("local storage request failed", exc_info=exc)
    return _json({"code": "internal", "message": f"internal error: {exc}"}, 500)


Handler = Callable[[Request, Store], Awaitable[Response]]


def routes(service: Service) -> list[BaseRoute]:
    """One mount under ``LOCAL_STORAGE``, every route behind ``OwnerOnly``."""

    def handle(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return await fn(request, service.need_store())
            except ClientDisconnect:
                return Response(status_code=400)
            except Exception as exc:
                return _failure(exc)
        return endpoint

    async def backup(request: Request, store: Store) -> Response:
        return _json({"name": await backup_all(service.db, store)})

    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        await _json({"code": "not_found", "message": f"no such route: {scope['path']}"},
                    404)(scope, receive, send)

    inner = Router([
        Route("/objects", handle(put_object), methods=["PUT"]),
        Route("/objects", handle(list_objects), methods=["GET"]),
        Route("/objects/{ref}", handle(get_object), methods=["GET"]),
        Route("/objects/{ref}", handle(delete_object), methods=["DELETE"]),
        Route("/status", handle(status), methods=["GET"]),
        Route("/verify", handle(verify), methods=["POST"]),
        Route("/repair", handle(repair), methods=["POST"]),
        Route("/backup", handle(backup), methods=["POST"]),
        Route("/backends", handle(list_backends), methods=["GET"]),
        Route("/backends", handle(add_backend), methods=["POST"]),
        Route("/backends/{name}/drain", handle(drain_backend), methods=["POST"]),
        Route("/backends/{name}", handle(remove_backend), methods=["DELETE"]),
    ], default=not_found)
    return [Mount(LOCAL_STORAGE, app=OwnerOnly(inner, service.owner_token))]


async def put_object(request: Request, store: Store) -> Response:
    ref = await store.put(request.stream())  # streamed: a few segments in memory at most
    log.info("owner stored object %s", ref)
    return _json({"ref": str(ref)})


async def list_objects(request: Request, store: Store) -> Response:
    return StreamingResponse(_ndjson(store.iter_objects()), media_type=NDJSON)


async def _ndjson(infos: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    batch: list[bytes] = []
    size = 0
    async for info in infos:
        line = json.dumps(asdict(info)).encode() + b"\n"
        batch.append(line)
        size += len(line)
        if size >= _LIST_BATCH:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


async def get_object(request: Request, store: Store) -> Response:
    ref = request.path_params["ref"]
    if "range" not in request.headers:  # one catalogue read: the opened stream knows the size
        whole = await store.get(ref)
        return StreamingResponse(whole, media_type="application/octet-stream",
                                 headers={"content-length": str(whole.size),
                                          "accept-ranges": "bytes"})
    size = (await store.stat(ref)).size
    try:
        wanted = byte_range(request.headers.get("range"), size)
    except RangeNotSatisfiable:
        return Response(status_code=416, headers={"content-range": f"bytes */{size}"})
    start, end = wanted if wanted is not None else (0, size)
    stream = await store.get(ref, start, end)  # fails here, not mid-body, if deleted since
    headers = {"content-length": str(end - start), "accept-ranges": "bytes"}
    if wanted is not None:
        headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
    return StreamingResponse(stream, status_code=206 if wanted is not None else 200,
                             media_type="application/octet-stream", headers=headers)


async def delete_object(request: Request, store: Store) -> Response:
    ref = request.path_params["ref"]
    await store.delete(ref)
    log.info("owner deleted object %s", ref)
    return _json({"deleted": ref})


async def status(request: Request, store: Store) -> Response:
    return _json((await StoreStatus.of(store)).to_json())


async def verify(request: Request, store: Store) -> Response:
    text = request.query_params.get("sample")
    sample = float(text) if text else None  # a ValueError is a 400
    clean = request.query_params.get("clean", "") in ("1", "true", "yes")
    return _json(asdict(await store.verify(sample, clean=clean)))


async def repair(request: Request, store: Store) -> Response:
    return _json(asdict(await store.repair()))


# -- backends (core.backends does the work, the same as for a stopped twin)

MAX_SPEC_BODY = 16 * 1024  # a backend spec is a few short strings
DRAIN_REPORT_EVERY = 0.5  # seconds between progress lines of a drain


def _force(request: Request) -> bool:
    return request.query_params.get("force", "") in ("1", "true", "yes")


async def list_backends(request: Request, store: Store) -> Response:
    return _json([r.to_json() for r in await backends.rows(store)])


async def add_backend(request: Request, store: Store) -> Response:
    body = bytearray()
    async for chunk in request.stream():  # bounded before parsing: owner only, but still
        body += chunk
        if len(body) > MAX_SPEC_BODY:
            return _json({"code": "invalid", "message": "backend spec too large"}, 413)
    try:
        spec = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"backend spec is not JSON: {exc}") from None
    row = await backends.add(store, store.data_dir, spec, _force(request))
    log.info("owner added storage backend %s (%s)", row.name, row.kind)
    return _json(row.to_json())


async def drain_backend(request: Request, store: Store) -> Response:
    """Refusals before the first byte (a 400 like any other); then one NDJSON line per
    ``DRAIN_REPORT_EVERY`` and a last one with the result (or ``{"error"}``). The
    client going away cancels the drain, which the next request resumes."""
    name = request.path_params["name"]
    force = _force(request)
    await backends.check_drain(store, name, force)
    return StreamingResponse(_drain_lines(store, name, force), media_type=NDJSON)


async def _drain_lines(store: Store, name: str, force: bool) -> AsyncIterator[bytes]:
    from core import backends
    from storage import DrainProgress

    loop = asyncio.get_running_loop()
    latest: asyncio.Queue[DrainProgress] = asyncio.Queue(maxsize=1)
    last = 0.0

    def heard(p: DrainProgress) -> None:
        nonlocal last
        if loop.time() - last >= DRAIN_REPORT_EVERY and latest.empty():
            last = loop.time()
            latest.put_nowait(DrainProgress(**{**asdict(p), "failures": list(p.failures)}))

    log.info("owner started a drain of storage backend %s", name)
    task = asyncio.create_task(backends.drain(store, name, heard, force))
    try:
        while not task.done():
            waiter = asyncio.create_task(latest.get())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if waiter.done():
                yield json.dumps(backends.progress_json(waiter.result())).encode() + b"\n"
            else:
                waiter.cancel()
        try:
            final = task.result()
        except Exception as exc:
            log.warning("drain of %s failed: %s", name, exc)
            yield json.dumps({"error": str(exc)}).encode() + b"\n"
            return
        yield json.dumps({**backends.progress_json(final), "final": True}).encode() + b"\n"
    finally:
        if not task.done():
            log.info("drain of storage backend %s interrupted (resumed by the next drain)",
                     name)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def remove_backend(request: Request, store: Store) -> Response:
    name = request.path_params["name"]
    await backends.remove(store, store.data_dir, name, _force(request))
    log.info("owner removed storage backend %s", name)
    return _json({"removed": name})
