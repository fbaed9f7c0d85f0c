"""ASGI fast path for a MKCOL of a folder that exists: 405 without wsgidav.

Why: rclone creates the parent folder before every file it uploads (``MKCOL``
of an existing folder, answered 405, then PUT, then PROPFIND), so a copy of
2,000 files sent 2,000 of these through a2wsgi's thread, wsgidav's login check
and a database round trip each (issue 20). The answer needs one lookup.

Only the unambiguous case is taken, as in ``fastget``: the owner's valid Basic
credentials (wrong ones: 401 here, missing ones: wsgidav's 401), no body, no
Depth other than 0, no ``If`` header, a path of the owner's tree that exists.
wsgidav checks exactly these first (RFC 4918 section 9.3: 415 for a body, 400
for a Depth, then 405 "MKCOL can only be executed on an unmapped URL") and
answers with the same status page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsgidav.dav_error import DAVError

from core.errors import TwinError
from core.files import join
from protocols.webdav.fastget import LoginRefused, basic_login, tree_parts, unauthorized

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from core.service import Service

DEFER = frozenset({b"if", b"transfer-encoding"})
UNMAPPED = "MKCOL can only be executed on an unmapped URL."  # wsgidav's words


class FastMkcol:
    def __init__(self, app: ASGIApp, service: Service, shared: str) -> None:
        self.app, self.service, self.shared = app, service, shared

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "MKCOL":
            try:
                taken = await self._exists(scope)
            except LoginRefused:
                await unauthorized(send)
                return
            if taken:
                content_type, page = DAVError(405, context_info=UNMAPPED).get_response_page()
                await send({"type": "http.response.start", "status": 405, "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(page)).encode())]})
                await send({"type": "http.response.body", "body": page, "more_body": False})
                return
        await self.app(scope, receive, send)

    async def _exists(self, scope: Scope) -> bool:
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in DEFER:
                return False
            headers[name] = value
        if headers.get(b"content-length", b"0") != b"0" \
                or headers.get(b"depth", b"0") != b"0":
            return False
        parts = tree_parts(scope, self.shared)
        if parts is None:
            return False
        login = await basic_login(self.service, headers.get(b"authorization", b""), scope)
        if login is None or not self.service.users.is_owner(login):
            return False  # another login: wsgidav, behind roles.RoleGate (#15.8)
        try:
            return await self.service.files.exists(join(parts)) is not None
        except TwinError:
            return False
