"""WebDAV over the twin's file tree (``/dav/``), and what other twins share (``/dav/shared/``).

Contract: ``routes(service) -> list[starlette.routing.BaseRoute]`` is the
``twin.http`` entry point. It must be called on the service's event loop (the
HTTP listener builds its app there): the loop is captured so that wsgidav,
which runs in a2wsgi's worker threads, can call core's coroutines.

Parts, one job each:

- ``app``: wsgidav configuration, request guards, the Starlette mount.
- ``bridge``: thread -> loop calls and the one error table (``core.errors.ErrorCode``
  -> HTTP status; over quota is its ``OVER_QUOTA`` row, 507).
- ``auth``: the domain controller (the twin's logins, Basic over TLS, throttled).
- ``provider``, ``resources``: the DAVProvider and the tree's folder/file resources.
- ``shared``: read-only resources over the peer layer's content API.
- ``streams``: bounded-memory PUT and GET between wsgidav and async streams.
- ``storage_adapters``: wsgidav lock storage and property manager over twin.db.
- ``fastget``: plain whole-file GETs of the tree served on the loop, past wsgidav.
- ``fastput``: plain PUTs of the tree stored from the loop, past wsgidav (same
  lock checks, through wsgidav's lock manager).
- ``fastmkcol``: MKCOL of a folder that exists answered 405 on the loop (rclone
  sends one before every upload).

Server: uvicorn + a2wsgi (the twin's one HTTPS listener), not cheroot. Decided
by ``bench/webdav.py`` as it was before issue 20, which ran one twin process
serving the same wsgidav app on both its a2wsgi mount and a cheroot TLS
listener (256 MiB, best of 2, 2-core machine shared with other work; load
average in brackets). Today's ``bench/webdav.py`` compares the twin with
wsgidav's filesystem provider behind cheroot + TLS instead (issue 20):

    before fastget: a2wsgi PUT 76.8  GET 151.1 | cheroot PUT 66.5  GET 202.3 MiB/s  [3.3-5.1]
    with fastget:   a2wsgi PUT 93.7  GET 283.0 | cheroot PUT 119.4 GET 292.8 MiB/s  [6.0-3.7]
    again:          a2wsgi PUT 90.0  GET 231.0 | cheroot PUT 87.4  GET 208.7 MiB/s  [5.8-4.8]

cheroot's GET lead came from a2wsgi's thread hop per block; with the fast GET
path the two are level, and PUT swings either way between runs. Neither is
clearly faster, so the twin keeps one listener, one port and one certificate,
and the request guards in ``app`` that litmus was run against. The dispersed
store (XChaCha20-Poly1305 + zfec), not the HTTP server, bounds throughput.
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
