"""The owner's import/export API: ``twin mail import|export`` while the twin runs.

The CLI reads the source (files, another IMAP server) and writes the export;
the running twin, which holds the store, files and reads. Routes under
``/twin/v1/local/mail/transfer/``, owner only (the local token, checked
before anything else by ``core.owner.token.OwnerOnly``); ``login``
(a query parameter) defaults to the owner:

=======  ======================  ==================================================
GET      ``folders``             -> ``[{"name", "messages", "bytes"}]``
GET      ``messages?folder=F``   -> ``[[uid, size, date, flags], …]``
POST     ``bodies?folder=F``     ``{"uids"}`` -> a JSON line ``{"sizes"}``, then the bytes
POST     ``known``               ``{"source", "keys"}`` -> ``{"known"}``
POST     ``import?folder=F&source=S``  a JSON line ``{"items": [{"key", "flags",
         "date", "size"}]}``, then the bytes -> ``{"added", "bytes", "skipped"}``
=======  ======================  ==================================================

Bounded: a request body of at most one batch (8 MiB) or one message of the
size limit, plus 1 MiB of JSON; at most ``MAX_UIDS`` bodies per request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router

from core.errors import Invalid, NotFound, TwinError
from core.mail.imported import Imported, Incoming, clean_flags
from core.mail.transfer import BATCH_BYTES, LocalMail
from core.owner.token import OwnerOnly
from core.peer.errors import http_status

if TYPE_CHECKING:
    from core.service import Service

log = logging.getLogger("twin.mail")
LOCAL_TRANSFER = "/twin/v1/local/mail/transfer"
MAX_JSON = 1024 * 1024
MAX_UIDS = 1000


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise Invalid(f"request body over {limit} bytes")
    out = bytearray()
    async for chunk in request.stream():
        out += chunk
        if len(out) > limit:
            raise Invalid(f"request body over {limit} bytes")
    return bytes(out)


def split_framed(body: bytes) -> tuple[Any, bytes]:
    """A JSON line (at most ``MAX_JSON``) and the bytes after it."""
    end = body.find(b"\n", 0, MAX_JSON + 1)
    if end < 0:
        raise Invalid("no JSON header line")
    try:
        return json.loads(body[:end]), body[end + 1:]
    except ValueError as exc:
        raise Invalid(f"bad JSON header: {exc}") from None


def routes(service: Service) -> list[BaseRoute]:
    max_size = service.config.int("smtp.max_message_size")
    owner = f"{service.config.name}@{service.config.domain}"
    record = Imported(service.mail, max_size)  # its table made once, at start, not per request

    def access(request: Request) -> LocalMail:
        login = request.query_params.get("login") or owner
        if service.users.owner_of(login) != login:
            raise NotFound(f"no user {login[:80]}")
        return LocalMail(service.mail, login, max_size, record)

    def handle(fn: Callable[[Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                result = await fn(request)
                return result if isinstance(result, Response) else JSONResponse(result)
            except TwinError as exc:  # the peer table's status, as every local API
                return JSONResponse({"code": exc.code, "message": str(exc)}, http_status(exc))
        return endpoint

    async def folders(request: Request) -> Any:
        return [f.__dict__ for f in await access(request).folders()]

    async def messages(request: Request) -> Any:
        folder = request.query_params.get("folder", "")
        return [m.to_json() for m in await access(request).messages(folder)]

    async def bodies(request: Request) -> Response:
        folder = request.query_params.get("folder", "")
        ask = json.loads(await read_body(request, MAX_JSON))
        uids = [int(u) for u in ask.get("uids", [])]
        if len(uids) > MAX_UIDS:
            raise Invalid(f"at most {MAX_UIDS} messages at once")
        got = await access(request).bodies(folder, uids)
        head = json.dumps({"sizes": [len(b) for b in got]}).encode() + b"\n"
        return Response(head + b"".join(got), media_type="application/octet-stream")

    async def known(request: Request) -> Any:
        ask = json.loads(await read_body(request, 4 * MAX_JSON))
        keys = [str(k) for k in ask.get("keys", [])]
        found = await access(request).known(str(ask.get("source", "")), keys)
        return {"known": sorted(found)}

    async def imported(request: Request) -> Any:
        folder = request.query_params.get("folder", "")
        source = request.query_params.get("source", "")
        body = await read_body(request, max(BATCH_BYTES, max_size) + MAX_JSON)
        header, data = split_framed(body)
        items: list[Incoming] = []
        at = 0
        for item in header.get("items", []):
            size = int(item["size"])
            if size < 0 or at + size > len(data):
                raise Invalid("item sizes do not match the body")
            items.append(Incoming(str(item["key"]), data[at:at + size],
                                  clean_flags([str(f) for f in item.get("flags", [])][:200]),
                                  float(item["date"])))
            at += size
        filed = await access(request).file(folder, source, items)
        return {"added": filed.added, "bytes": filed.bytes,
                "skipped": [s.to_json() for s in filed.skipped]}

    inner = Router([
        Route("/folders", handle(folders), methods=["GET"]),
        Route("/messages", handle(messages), methods=["GET"]),
        Route("/bodies", handle(bodies), methods=["POST"]),
        Route("/known", handle(known), methods=["POST"]),
        Route("/import", handle(imported), methods=["POST"]),
    ])
    return [Mount(LOCAL_TRANSFER, app=OwnerOnly(inner, service.owner_token))]
