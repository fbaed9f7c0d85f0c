"""The peer API on the twin's HTTPS listener, under /twin/v1/.

``POST /twin/v1/envelope`` takes one envelope (raw bytes) and answers 200 with
frames (``core.peer.stream``): the signed ack, then for ``content.get`` the
encrypted stream. A refusal is the HTTP status from ``core.peer.errors.STATUS``
and a JSON body ``{"code", "message"}`` (plus the stored ``ack`` for a replay).
The body size is checked against ``peer.max_envelope`` while it is read, before
anything else looks at it, and every body held counts against one
``core.budget.ByteBudget`` (``peer.max_buffered`` over all requests,
``peer.max_buffered_per_ip`` per client address) until it is answered: past it
the request gets 503 ``unavailable`` (the sender retries) and is not read.

``POST /twin/v1/envelopes`` takes a batch: up to ``MAX_BATCH`` envelopes as
frames, each one that is answered by an ack alone (no streamed kinds). They are
checked and handled concurrently, exactly as if each had come on its own, and
the answer is one frame per envelope in the same order: ``0 | ack`` or
``1 | JSON refusal``. Only a batch that cannot be read at all gets an HTTP
error. Batches exist because HTTP costs far more than an envelope's crypto
(see ``core.peer.client``).

The owner's local API (``twin share``, ``twin send``, ``twin storage`` while
the twin runs) is not twin-to-twin: it lives in ``core.owner``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from core.budget import ByteBudget
from core.errors import Invalid
from core.peer import stream
from core.peer.client import (
    ACKED,
    BATCH_MEDIA_TYPE,
    BATCH_PATH,
    ENVELOPE_PATH,
    MAX_BATCH,
    MEDIA_TYPE,
    REFUSED,
)
from core.peer.errors import Refusal
from core.peer.peer import log_envelope, refusal_body

if TYPE_CHECKING:
    from core.peer.peer import Peer

log = logging.getLogger("twin.peer")


class Body:
    """A request body read within the byte budget; ``release()`` once it is answered."""

    def __init__(self, budget: ByteBudget, ip: str) -> None:
        self.budget, self.ip, self.held = budget, ip, 0
        self.data = b""

    def hold(self, n: int) -> bool:
        if n <= self.held:
            return True
        if not self.budget.take(self.ip, n - self.held):
            return False
        self.held = n
        return True

    def release(self) -> None:
        self.budget.give(self.ip, self.held)
        self.held = 0


async def _read_capped(request: Request, cap: int, what: str, budget: ByteBudget
                       ) -> Body | Response:
    """The body, or the answer that refuses it: over ``cap`` bytes (as declared or
    as read; reading stops there), over the byte budget, or cut off by the client."""
    declared = request.headers.get("content-length", "")
    too_large = declared.isdigit() and int(declared) > cap
    ip = request.client.host if request.client else "?"
    held = Body(budget, ip)
    busy = not too_large and declared.isdigit() and not held.hold(int(declared))
    chunks: list[bytes] = []  # joined once: a growing bytearray copied as it grew
    size = 0
    try:
        if not too_large and not busy:
            async for chunk in request.stream():
                chunks.append(chunk)
                size += len(chunk)
                if size > cap:
                    too_large = True
                    break
                if not held.hold(size):
                    busy = True
                    break
    except ClientDisconnect:
        held.release()
        return Response(status_code=400)
    if too_large or busy:
        held.release()
        refusal = Refusal("too_large", f"{what} over {cap} bytes") if too_large else \
            Refusal("unavailable", "busy: too many request bodies in memory, retry later")
        log_envelope(ip, (), time.monotonic(), refusal)
        return _refuse(refusal)
    held.data = b"".join(chunks)
    return held


def _refuse(refusal: Refusal) -> JSONResponse:
    return JSONResponse(refusal_body(refusal), status_code=refusal.status)


def routes(peer: Peer, budget: ByteBudget) -> list[BaseRoute]:
    """The two envelope routes; every body held counts against ``budget``."""

    async def envelope(request: Request) -> Response:
        body = await _read_capped(request, peer.max_envelope, "envelope", budget)
        if isinstance(body, Response):
            return body
        try:
            answer = await peer.receive(body.data)
        except Refusal as refusal:
            return _refuse(refusal)
        except Exception:
            log.exception("internal error while handling an envelope")
            return _refuse(Refusal("internal", "internal error"))
        finally:
            body.release()
        if answer.stream is None:
            return Response(stream.frame(answer.ack), media_type=MEDIA_TYPE)
        # A declared length spares chunked encoding (a copy of every frame on
        # both sides); a stream cut short then shows as a truncated body.
        headers = {"content-length": str(answer.length)} if answer.length is not None else {}
        return StreamingResponse(_with_ack(answer.ack, answer.stream), media_type=MEDIA_TYPE,
                                 headers=headers)

    async def envelopes(request: Request) -> Response:
        limit = peer.max_envelope + 4 * MAX_BATCH  # the envelopes plus their frame headers
        body = await _read_capped(request, limit, "batch", budget)
        if isinstance(body, Response):
            return body
        try:
            try:
                items = stream.split_frames(body.data, MAX_BATCH)
            except Invalid as exc:
                log.warning("refused a batch from %s: malformed (%s)", request.client, exc)
                return _refuse(Refusal("malformed", f"batch: {exc}"))
            answers = await asyncio.gather(*(_answer_one(raw) for raw in items))
        finally:
            body.release()
        return Response(b"".join(answers), media_type=BATCH_MEDIA_TYPE)

    async def _answer_one(raw: bytes) -> bytes:
        try:
            answer = await peer.receive(raw, stream_ok=False)
        except Refusal as refusal:
            return _refusal_frame(refusal)
        except Exception:
            log.exception("internal error while handling an envelope of a batch")
            return _refusal_frame(Refusal("internal", "internal error"))
        return stream.frame(bytes([ACKED]) + answer.ack)

    return [
        Route(ENVELOPE_PATH, envelope, methods=["POST"]),
        Route(BATCH_PATH, envelopes, methods=["POST"]),
    ]


def _refusal_frame(refusal: Refusal) -> bytes:
    return stream.frame(bytes([REFUSED]) + json.dumps(refusal_body(refusal)).encode())


async def _with_ack(ack: bytes, body: AsyncIterator[bytes | memoryview],
                    ) -> AsyncIterator[bytes | memoryview]:
    yield stream.frame(ack)
    try:
        async for frame in body:
            yield frame
    except Exception:
        # The body ends short of its Content-Length: the connection drops and
        # the client reports a cut stream (it also misses the final chunk).
        log.exception("content stream failed; cutting it short")
