"""Calls from wsgidav's worker threads into the twin's event loop.

wsgidav is synchronous and runs in a2wsgi's thread pool; core is async on the
service loop. ``Bridge.call`` submits a coroutine to that loop and waits for
it, and turns core's neutral errors into ``DAVError`` through ``STATUS``, the
one table that says what a WebDAV client is told.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from wsgidav.dav_error import DAVError

from core.errors import Conflict, Forbidden, Invalid, NotFound, PeerRejected, TwinError, Unavailable
from core.files import QuotaExceeded

log = logging.getLogger("twin.webdav")
T = TypeVar("T")

# Core's neutral errors -> HTTP status (RFC 4918 section 9, RFC 4331 section 5 for 507).
STATUS: dict[type[TwinError], int] = {
    QuotaExceeded: 507,
    NotFound: 404,
    Forbidden: 403,
    Conflict: 409,
    Invalid: 400,
    Unavailable: 503,
    PeerRejected: 502,
}


# Codes that say more than their error's class: an oversized body is an Invalid, and
# another twin's refusal (PeerRejected, 502 otherwise) names what it refused.
CODE_STATUS: dict[str, int] = {
    "too_large": 413,
    "quota": 507,
}
PEER_STATUS: dict[str, int] = {
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "precondition_failed": 412,
    "invalid": 400,
    "too_large": 413,
    "quota": 507,
}


def dav_error(exc: TwinError) -> DAVError:
    if exc.code in CODE_STATUS and not isinstance(exc, PeerRejected):
        return DAVError(CODE_STATUS[exc.code], context_info=str(exc))
    if isinstance(exc, PeerRejected) and exc.code in PEER_STATUS:
        return DAVError(PEER_STATUS[exc.code], context_info=str(exc))
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return DAVError(STATUS[cls], context_info=str(exc))
    return DAVError(500, context_info=str(exc))


class Bridge:
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float = 3600.0) -> None:
        self.loop = loop
        self.timeout = timeout

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the service loop and wait; core errors become DAVErrors."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(self.timeout)
        except TwinError as exc:
            raise dav_error(exc) from exc
