"""The owner's local token: what lets the owner's own CLI into the running twin.

The running twin writes a random token to ``run/local.token`` (0600, so only
the owner's account can read it) at start; every owner-only route wants it
as ``Authorization: Bearer <token>``, compared in constant time. ``OwnerOnly``
wraps a whole mount with that check, so a route added later cannot forget it
and an unknown path is refused like a known one: 403 before the body is read.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

log = logging.getLogger("twin.owner")
TOKEN_FILE = "run/local.token"  # noqa: S105 - a file name, not a secret


class OwnerToken:
    """The token of this run: empty (nothing admitted) until ``issue``."""

    def __init__(self) -> None:
        self.value = ""

    def issue(self, data_dir: Path) -> str:
        """A new random token, written to ``TOKEN_FILE`` (0600) atomically."""
        token = secrets.token_urlsafe(32)
        path = Path(data_dir) / TOKEN_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token)
        os.replace(tmp, path)
        self.value = token
        return token

    def admits(self, headers: Headers) -> bool:
        """Whether the request carries this run's token (constant time)."""
        given = headers.get("authorization", "").removeprefix("Bearer ")
        # bytes: compare_digest refuses non-ASCII str, and a header may be anything
        return bool(self.value) and hmac.compare_digest(given.encode("latin-1"),
                                                        self.value.encode())


def refused() -> JSONResponse:
    return JSONResponse({"code": "forbidden", "message": "bad local token"}, 403)


class OwnerOnly:
    """Refuse every request without the running twin's local token, before anything else."""

    def __init__(self, app: ASGIApp, token: OwnerToken) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.token.admits(Headers(scope=scope)):
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            log.warning("refused a local request without the local token from %s",
                        scope.get("client"))
            await refused()(scope, receive, send)
        else:
            await WebSocketClose()(scope, receive, send)
