"""Calls from wsgidav's worker threads into the twin's event loop.

wsgidav is synchronous and runs in a2wsgi's thread pool; core is async on the
service loop. ``Bridge.call`` submits a coroutine to that loop and waits for
it, and turns core's neutral errors into ``DAVError`` through ``STATUS``, the
one table (keyed by ``core.errors.ErrorCode``, like every adapter's) that says
what a WebDAV client is told: the fast paths (``fastget``, ``fastput``) answer
through it too. Over quota is its ``OVER_QUOTA`` row.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from wsgidav.dav_error import DAVError

from core.errors import ErrorCode, TwinError, code_of

log = logging.getLogger("twin.webdav")
T = TypeVar("T")

# core error code -> HTTP status (RFC 4918 section 9; RFC 4331 section 5 for 507).
# Every ``ErrorCode`` has a row (tests/core/test_errors.py checks). Another
# twin's refusal (a ``PeerRejected``) is looked up by the code it carries, so
# its over-quota is our client's 507 too; a code of its own (``malformed``)
# falls to the PEER_REJECTED row.
STATUS: dict[ErrorCode, int] = {
    ErrorCode.ERROR: 500,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.LIMIT: 403,
    ErrorCode.OVER_QUOTA: 507,            # Insufficient Storage
    ErrorCode.CONFLICT: 409,
    ErrorCode.ALREADY_EXISTS: 409,
    ErrorCode.HAS_CHILDREN: 409,
    ErrorCode.PRECONDITION_FAILED: 412,
    ErrorCode.INVALID: 400,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.SPECIAL_USE: 400,
    ErrorCode.CONFIG: 500,                # ours to fix, not the client's
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.THROTTLED: 503,             # logins: auth.check_login answers 401 itself
    ErrorCode.PORT_IN_USE: 503,
    ErrorCode.PEER_REJECTED: 502,         # Bad Gateway: the twin behind us said no
}


def status_of(exc: TwinError) -> int:
    return STATUS[code_of(exc)]


def dav_error(exc: TwinError) -> DAVError:
    return DAVError(status_of(exc), context_info=str(exc))


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
