"""The owner's mail quarantine API: ``twin mail quarantine …`` while the twin runs.

A quarantined message (``core.mail.quarantine``) is retried or deleted by the
running twin itself: its store is locked by that process, and its live IMAP
sessions must learn of a message filed into the Inbox. Routes under
``/twin/v1/local/mail/``, owner only (the local token, checked before
anything else by ``core.owner.token.OwnerOnly``):

=======  ==========================  =====================================
GET      ``quarantine``              -> ``[Quarantined.to_json()]``
POST     ``quarantine/{id}/retry``   -> ``{"id", "uid"}`` (filed into the Inbox)
DELETE   ``quarantine/{id}``         -> ``{"deleted": id}``
POST     ``send?from=A&to=B&to=C``   -> ``Routed.to_json()`` (``twin mail send``;
                                        body: the message, at most ``MAX_SEND``)
=======  ==========================  =====================================

Errors are JSON ``{"code", "message"}``: a core error with the status of its
code in the peer table (``core.peer.errors``: 404 for an unknown id), 409
``failed`` when the message still cannot be filed for any other reason (it
stays in the quarantine).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router

from core.errors import Forbidden, Invalid, TwinError
from core.owner.token import OwnerOnly
from core.peer.errors import http_status

if TYPE_CHECKING:
    from core.routing import Routed
    from core.service import Service

log = logging.getLogger("twin.mail")
LOCAL_MAIL = "/twin/v1/local/mail"
MAX_SEND = 11 * 1024 * 1024  # ``twin mail send`` reads at most 10 MiB of body
MAX_SEND_RCPTS = 100


def routes(service: Service) -> list[BaseRoute]:
    """One mount under ``LOCAL_MAIL``, every route behind the owner's token."""

    def handle(fn: Callable[[Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return JSONResponse(await fn(request))
            except TwinError as exc:  # the peer table's status, as every local API
                return JSONResponse({"code": exc.code, "message": str(exc)}, http_status(exc))
            except Exception as exc:  # the message still cannot be filed: say why
                log.warning("quarantine request failed: %s: %s", type(exc).__name__, exc)
                return JSONResponse({"code": "failed",
                                     "message": f"{type(exc).__name__}: {exc}"}, 409)
        return endpoint

    async def listed(request: Request) -> Any:
        return [q.to_json() for q in await service.mail.quarantined()]

    async def retry(request: Request) -> Any:
        qid = int(request.path_params["id"])
        return {"id": qid, "uid": await service.mail.retry_quarantined(qid)}

    async def drop(request: Request) -> Any:
        qid = int(request.path_params["id"])
        await service.mail.drop_quarantined(qid)
        return {"deleted": qid}

    async def send(request: Request) -> Any:
        rcpts = request.query_params.getlist("to")
        if not rcpts or len(rcpts) > MAX_SEND_RCPTS:
            raise Invalid(f"give 1 to {MAX_SEND_RCPTS} recipients")
        message = bytearray()
        async for chunk in request.stream():  # bounded before anything is parsed
            message += chunk
            if len(message) > MAX_SEND:
                raise Invalid(f"message over {MAX_SEND} bytes")
        routed = await send_as_owner(service, request.query_params.get("from", ""), rcpts,
                                     bytes(message))
        return routed.to_json()

    inner = Router([
        Route("/quarantine", handle(listed), methods=["GET"]),
        Route("/quarantine/{id:int}/retry", handle(retry), methods=["POST"]),
        Route("/quarantine/{id:int}", handle(drop), methods=["DELETE"]),
        Route("/send", handle(send), methods=["POST"]),
    ])
    return [Mount(LOCAL_MAIL, app=OwnerOnly(inner, service.owner_token))]


async def send_as_owner(service: Service, sender: str, rcpts: list[str], message: bytes
                        ) -> Routed:
    """Route ``message`` from one of the owner's addresses, as ``twin mail send`` asks
    (through the running twin, or on the stopped twin's own store)."""
    owner = f"{service.config.name}@{service.config.domain}"
    if await asyncio.to_thread(service.users.owner_of, sender) != owner:
        raise Forbidden(f"{sender} is not an address of {owner}")
    return await service.router.route(sender, rcpts, message)
