"""WebDAV over the twin's file tree (``/dav/``), and what other twins share (``/dav/shared/``).

Contract: ``routes(service) -> list[starlette.routing.BaseRoute]`` is the
``twin.http`` entry point. It must be called on the service's event loop (the
HTTP listener builds its app there): the loop is captured so that wsgidav,
which runs in a2wsgi's worker threads, can call core's coroutines.

Parts, one job each:

- ``app``: wsgidav configuration, request guards, the Starlette mount.
- ``bridge``: thread -> loop calls and the one error table (core error -> status).
- ``auth``: the domain controller (the twin's logins, Basic over TLS, throttled).
- ``provider``, ``resources``: the DAVProvider and the tree's folder/file resources.
- ``shared``: read-only resources over the peer layer's content API.
- ``streams``: bounded-memory PUT and GET between wsgidav and async streams.
- ``storage_adapters``: wsgidav lock storage and property manager over twin.db.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from core.service import Service


def routes(service: Service) -> list[BaseRoute]:
    from protocols.webdav.app import routes as build

    return build(service)


__all__ = ["routes"]
