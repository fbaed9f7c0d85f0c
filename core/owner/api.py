"""The owner-only local API on the twin's HTTPS listener: all of it, mounted once.

``twin …`` commands that need the running twin's store or queues (the store
belongs to one process) ask it over these routes, each behind the owner's
local token (``core.owner.token``), which is checked before anything else:

- ``PUT /twin/v1/local/objects?path=/x``: ``twin share FILE --as /x``: the body
  streamed into the file tree at ``/x`` (missing parent folders made);
- ``POST /twin/v1/local/send``: ``twin send``: ``{"to", "text"}`` queued by the
  running twin, whose outbox worker sends at once (a row queued by the CLI
  would wait for the next ``peer.outbox_poll``);
- ``/twin/v1/local/storage/…``: ``twin storage …`` (``core.owner.storage``);
- ``/twin/v1/local/mail/transfer/…``: ``twin mail import|export``
  (``core.owner.transfer``);
- ``/twin/v1/local/mail/…``: ``twin mail quarantine|send`` (``core.owner.mail``).

A core error is answered ``{"code", "message"}`` with the status of its code
in ``core.peer.errors`` (404, 409, 507 over ``webdav.quota``, ...), as on
every local route.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from core.acl import normalize
from core.errors import Conflict, ErrorCode, Invalid, TwinError
from core.owner import mail, storage, transfer
from core.owner.token import refused
from core.peer.content import ContentEntry
from core.peer.errors import http_status

if TYPE_CHECKING:
    from core.files import FileTree
    from core.service import Service

log = logging.getLogger("twin.owner")
LOCAL_OBJECTS = "/twin/v1/local/objects"
LOCAL_SEND = "/twin/v1/local/send"
MAX_LOCAL_SEND = 1024 * 1024  # a native message's JSON body


def _failure(exc: TwinError) -> JSONResponse:
    """A core error as the CLI reads it: the peer table's status, so it can tell
    a missing path from a full quota."""
    return JSONResponse({"code": exc.code, "message": str(exc)}, http_status(exc))


async def publish(files: FileTree, path: str, data: AsyncIterable[bytes]) -> ContentEntry:
    """Store ``data`` at ``path`` in the file tree, making missing parent folders."""
    path = normalize(path)
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        directory = "/" + "/".join(parts[:i])
        if await files.exists(directory) is None:
            with contextlib.suppress(Conflict):
                await files.mkdir(directory)
    return await files.write(path, data)


def routes(service: Service) -> list[BaseRoute]:
    token = service.owner_token

    async def put_object(request: Request) -> Response:
        if not token.admits(request.headers):
            return refused()
        try:
            entry = await publish(service.files, request.query_params.get("path", ""),
                                  request.stream())
        except TwinError as exc:
            return _failure(exc)
        log.info("owner published %s (%d bytes)", entry.path, entry.size)
        return JSONResponse({"path": entry.path, "size": entry.size})

    async def send(request: Request) -> Response:
        if not token.admits(request.headers):
            return refused()
        try:
            try:
                body = await transfer.read_body(request, MAX_LOCAL_SEND)
            except Invalid as exc:
                raise Invalid(str(exc), code=ErrorCode.TOO_LARGE) from None
            value = json.loads(body)
            if not isinstance(value, dict) or not isinstance(value.get("to"), str) \
                    or not isinstance(value.get("text"), str):
                raise Invalid("a message needs 'to' and 'text' (text)")
            uid = await service.peer.send(value["to"], "message", {"text": value["text"]})
        except ValueError:
            return JSONResponse({"code": ErrorCode.INVALID, "message": "body is not JSON"}, 400)
        except TwinError as exc:
            return _failure(exc)
        return JSONResponse({"uid": uid})

    return [
        Route(LOCAL_SEND, send, methods=["POST"]),
        Route(LOCAL_OBJECTS, put_object, methods=["PUT"]),
        *storage.routes(service),
        *transfer.routes(service),  # before its parent mount, mail's
        *mail.routes(service),
    ]
