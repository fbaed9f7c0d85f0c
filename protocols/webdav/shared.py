"""``/dav/shared/<twin>/...``: what other twins shared with us, read and (rw grants) written.

Listings and bytes come from the peer layer (``service.peer.content_list`` and
``content_get``), which signs the request and lets the other twin check its
ACL; ranges are passed through, so seeking in a shared video fetches only
what is watched. A twin that refuses (no grant, grant revoked) simply shows
nothing: its folder is 404.

Writes go to the other twin as ``content.put`` (PUT: a body of at most
``peer.max_put`` bytes sent whole once received, a bigger one in chunks of
that size as it arrives, up to ``peer.max_upload``), ``content.mkdir`` (MKCOL),
``content.delete`` (DELETE) and ``content.move`` (MOVE within the same twin's
share); the owner's ACL decides (``core.peer.writes``) and its refusals come
back through ``bridge.STATUS``: 403 for a share without the write right, 404
for a path not shared, 507 over the owner's quota, 413 over ``peer.max_upload``.
A write into a folder the twin shows us nothing at still goes to it (only
the owner knows whether it may, and whether the folder exists). COPY,
PROPPATCH and LOCK are not offered (403). After a write the cached listings
of that twin are dropped, so the next request sees the change.

``/shared/`` lists the twins that told us they share something
(``share.notify``, recorded by ``core.peer.shares.SharedWithMe``) plus those
that answered a listing since start-up; each is listed only if its listing
answers now, so a revoked, failing or unreachable twin is hidden. A
notification (grant or revoke) drops the listing cache at once.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from wsgidav import util
from wsgidav.dav_error import DAVError
from wsgidav.dav_provider import DAVCollection, DAVNonCollection

from core.errors import Forbidden, Invalid, NotFound, PeerRejected
from core.files import join, split
from core.peer import uploads, writes
from core.peer.content import ContentEntry
from protocols.webdav.bridge import Bridge
from protocols.webdav.roles import dest_path
from protocols.webdav.streams import DownloadReader

if TYPE_CHECKING:
    from core.service import Service
    from protocols.webdav.provider import TwinProvider

log = logging.getLogger("twin.webdav.shared")
READ_ONLY = "shared folders are read-only"
NOT_OFFERED = "not offered in another twin's share"
LIST_TTL = 5.0


class SharedSpace:
    """Resolves shared paths, with a short listing cache (one PROPFIND asks often)."""

    def __init__(self, provider: TwinProvider, service: Service, bridge: Bridge) -> None:
        self.provider = provider
        self.service = service
        self.bridge = bridge
        self.seen: dict[str, float] = {}  # twins that answered a listing, for /shared/
        self._cache: dict[tuple[str, str], tuple[float, list[ContentEntry]]] = {}
        self._generation = -1

    def _sync(self) -> None:
        """Forget cached listings when a share.notify changed what we were told."""
        generation = self.service.shared_with_me.generation
        if generation != self._generation:
            self._generation = generation
            self._cache.clear()
            self.seen.clear()

    def twins(self) -> list[str]:
        """Candidates for ``/shared/``: notified twins and twins that answered us."""
        self._sync()
        told = self.bridge.call(self.service.shared_with_me.twins())
        return sorted(set(told) | set(self.seen))

    def listing(self, twin: str, path: str) -> list[ContentEntry] | None:
        """The twin's entries at ``path``, or None if it shows us nothing there."""
        self._sync()
        key = (twin, path)
        hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < LIST_TTL:
            return hit[1]
        try:
            entries = self.bridge.call(self._list(twin, path))
        except DAVError as exc:
            if exc.value in (403, 404, 502):
                self._cache.pop(key, None)
                if path == "/":
                    self.seen.pop(twin, None)
                return None
            raise
        if len(self._cache) > 1000:
            self._cache.clear()
        self._cache[key] = (time.monotonic(), entries)
        self.seen[twin] = time.time()
        return entries

    def forget(self, twin: str) -> None:
        """Drop ``twin``'s cached listings: we just changed something there."""
        for key in [k for k in self._cache if k[0] == twin]:
            del self._cache[key]

    def write(self, twin: str, coro: Any) -> Any:
        """Run one write request to ``twin``; its listings are stale afterwards either way."""
        try:
            return self.bridge.call(coro)
        finally:
            self.forget(twin)

    async def _list(self, twin: str, path: str) -> list[ContentEntry]:
        try:
            return list(await self.service.peer.content_list(twin, path))
        except (Forbidden, NotFound, PeerRejected) as exc:
            log.info("%s shows us nothing at %s: %s", twin, path, exc)
            raise

    def resolve(self, parts: tuple[str, ...], environ: dict[str, Any]) -> Any:
        if not parts:
            return SharedRoot("/shared", environ, self)
        twin, rest = parts[0], parts[1:]
        if not rest:
            if self.listing(twin, "/") is None:
                return self._parent_to_be(parts, environ)
            now = self.seen.get(twin, time.time())
            return SharedFolder(join(("shared", twin)), environ, self, twin,
                                ContentEntry("/", twin, 0, True, now, ""))
        path = join(("shared", twin, *rest))
        entries = self.listing(twin, join(rest[:-1]))
        if entries is None:
            # A grant on /photos/ need not allow listing /: ask for the folder itself.
            if self.listing(twin, join(rest)) is None:
                return self._parent_to_be(parts, environ)
            return SharedFolder(path, environ, self, twin,
                                ContentEntry(join(rest), rest[-1], 0, True, time.time(), ""))
        for entry in entries:
            if entry.name == rest[-1]:
                if entry.is_dir:
                    return SharedFolder(path, environ, self, twin, entry)
                return SharedFile(path, environ, self, twin, entry)
        return self._parent_to_be(parts, environ)

    def _parent_to_be(self, parts: tuple[str, ...], environ: dict[str, Any]) -> Any:
        """The folder a PUT, MKCOL or MOVE writes into, when the twin shows us none there.

        Whether bob may write below a folder he cannot see (and whether it
        exists) only its owner knows: the request goes to it, and its answer
        (404 not shared, 409 no such folder, 403) is the client's. Any other
        request gets None (404), as before.
        """
        method = environ.get("REQUEST_METHOD")
        if method in ("PUT", "MKCOL"):
            target: str | None = environ.get("PATH_INFO") or "/"
        elif method == "MOVE":
            target = dest_path(environ.get("HTTP_DESTINATION"))
        else:
            return None
        try:
            if target is None or split(target)[:-1] != ("shared", *parts):
                return None
        except Invalid:
            return None
        twin, rest = parts[0], parts[1:]
        entry = ContentEntry(join(rest), rest[-1] if rest else twin, 0, True, time.time(), "")
        return SharedFolder(join(("shared", *parts)), environ, self, twin, entry)


class _ReadOnly:
    def delete(self) -> None:
        raise DAVError(403, context_info=READ_ONLY)

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        raise DAVError(403, context_info=READ_ONLY)

    def support_recursive_move(self, dest_path: str) -> bool:
        return False

    def prevent_locking(self) -> bool:
        return True


class _Writable(_ReadOnly):
    """DELETE and MOVE of a file or folder in another twin's share (its ACL decides)."""

    space: SharedSpace
    twin: str
    entry: ContentEntry
    environ: dict[str, Any]

    def _remote(self, dest_path: str) -> str | None:
        """The other twin's path for a Destination in the same twin's share, else None."""
        parts = split(dest_path)
        if len(parts) < 3 or parts[0] != "shared" or parts[1] != self.twin:
            return None
        return join(parts[2:])

    # RFC 4918 section 9.6 (DELETE): the owner removes a folder with all it holds
    def delete(self) -> None:
        # If-Match was checked by wsgidav against the etag we saw; the owner checks it again
        if_match = self.entry.etag if self.environ.get("HTTP_IF_MATCH") else None
        self.space.write(self.twin, writes.delete(self.space.service.peer, self.twin,
                                                  self.entry.path, if_match or None))

    def support_recursive_delete(self) -> bool:
        return True

    # RFC 4918 section 9.9 (MOVE): one content.move, files and folders alike
    def support_recursive_move(self, dest_path: str) -> bool:
        return self._remote(dest_path) is not None

    def move_recursive(self, dest_path: str) -> None:
        dest = self._remote(dest_path)
        if dest is None:
            raise DAVError(403, context_info="moves leave no twin's share")
        self.space.write(self.twin, writes.move(self.space.service.peer, self.twin,
                                                self.entry.path, dest, overwrite=True))

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        raise DAVError(403, context_info=f"COPY: {NOT_OFFERED}")


class SharedRoot(_ReadOnly, DAVCollection):  # type: ignore[misc]
    """``/shared``: one folder per twin that shares something with us and answers."""

    def __init__(self, path: str, environ: dict[str, Any], space: SharedSpace) -> None:
        super().__init__(path, environ)
        self.space = space

    def get_display_name(self) -> str:
        return "shared"

    def get_member_list(self) -> list[Any]:
        members = []
        for name in self.space.twins():
            try:
                member = self.space.resolve((name,), self.environ)
            except DAVError as exc:  # unreachable (503) and the like: hidden, not an error
                log.info("%s hidden from /shared/: %s", name, exc.value)
                continue
            if member is not None:
                members.append(member)
        return members

    def get_member_names(self) -> list[str]:
        return [m.name for m in self.get_member_list()]

    def get_member(self, name: str) -> Any:
        return self.space.resolve((name,), self.environ)

    def create_empty_resource(self, name: str) -> Any:
        raise DAVError(403, context_info=READ_ONLY)

    def create_collection(self, name: str) -> Any:
        raise DAVError(403, context_info=READ_ONLY)


class SharedFolder(_Writable, DAVCollection):  # type: ignore[misc]
    def __init__(self, path: str, environ: dict[str, Any], space: SharedSpace, twin: str,
                 entry: ContentEntry) -> None:
        super().__init__(path, environ)
        self.space, self.twin, self.entry = space, twin, entry

    def get_display_name(self) -> str:
        return self.entry.name

    def get_last_modified(self) -> float:
        return self.entry.mtime

    def _entries(self) -> list[ContentEntry]:
        entries = self.space.listing(self.twin, self.entry.path)
        if entries is None:
            raise DAVError(404, context_info=f"{self.twin} no longer shares this")
        return entries

    def get_member_names(self) -> list[str]:
        return [e.name for e in self._entries()]

    def get_member_list(self) -> list[Any]:
        out: list[Any] = []
        for e in self._entries():
            path = util.join_uri(self.path, e.name)
            cls = SharedFolder if e.is_dir else SharedFile
            out.append(cls(path, self.environ, self.space, self.twin, e))
        return out

    def get_member(self, name: str) -> Any:
        for e in self._entries():
            if e.name == name:
                path = util.join_uri(self.path, name)
                cls = SharedFolder if e.is_dir else SharedFile
                return cls(path, self.environ, self.space, self.twin, e)
        return None

    # RFC 4918 section 9.7.1 (PUT of a new file): nothing is sent before the body is whole
    def create_empty_resource(self, name: str) -> SharedFile:
        path = join((*split(self.entry.path), name))
        entry = ContentEntry(path, name, 0, False, time.time(), "")
        return SharedFile(util.join_uri(self.path, name), self.environ, self.space, self.twin,
                          entry, fresh=True)

    # RFC 4918 section 9.3 (MKCOL)
    def create_collection(self, name: str) -> SharedFolder:
        path = join((*split(self.entry.path), name))
        entry = self.space.write(self.twin, writes.mkdir(self.space.service.peer, self.twin,
                                                         path))
        return SharedFolder(util.join_uri(self.path, name), self.environ, self.space,
                            self.twin, entry)


class SharedFile(_Writable, DAVNonCollection):  # type: ignore[misc]
    def __init__(self, path: str, environ: dict[str, Any], space: SharedSpace, twin: str,
                 entry: ContentEntry, *, fresh: bool = False) -> None:
        super().__init__(path, environ)
        self.space, self.twin, self.entry = space, twin, entry
        self.fresh = fresh  # made by create_empty_resource: not on the other twin yet
        self._body: PutBody | None = None

    def get_content_length(self) -> int:
        return self.entry.size

    def get_content_type(self) -> str:
        return util.guess_mime_type(self.entry.name) or "application/octet-stream"

    def get_display_name(self) -> str:
        return self.entry.name

    def get_etag(self) -> str:
        return self.entry.etag or f"{self.twin}-{self.entry.size}-{int(self.entry.mtime)}"

    def get_last_modified(self) -> float:
        return self.entry.mtime

    def support_etag(self) -> bool:
        return True

    def support_ranges(self) -> bool:
        return True

    # RFC 9110 section 14: the range goes to the other twin unchanged
    def get_content(self) -> DownloadReader:
        from protocols.webdav.resources import range_end

        peer, twin, path = self.space.service.peer, self.twin, self.entry.path

        def opener(start: int, end: int | None) -> Any:
            return peer.content_get(twin, path, start, end)

        return DownloadReader(self.space.bridge, opener, range_end(self.environ, self.entry.size))

    # RFC 4918 section 9.7 (PUT): sent whole, or (over peer.max_put) chunk by chunk
    def begin_write(self, *, content_type: str | None = None) -> PutBody:
        conf = self.space.service.config
        limit = conf.int("peer.max_upload")
        declared = util.get_content_length(self.environ)
        if declared and declared > limit:  # refused before a byte of the body is read
            raise DAVError(413, context_info=f"over peer.max_upload ({limit} bytes)")
        # If-Match was checked by wsgidav against the etag we saw; the owner checks it again
        if_match = self.entry.etag if self.environ.get("HTTP_IF_MATCH") and not self.fresh \
            and self.entry.etag else None
        self._body = PutBody(self, conf.int("peer.max_put"), limit, if_match)
        return self._body

    def end_write(self, *, with_errors: bool) -> None:
        body = self._body
        if not with_errors and body is not None and body.result is not None:
            self.entry = body.result


class PutBody:
    """The file-like wsgidav writes a PUT body into.

    Up to ``peer.max_put`` bytes are held and sent at ``close`` as one
    content.put; a bigger body goes out in chunks of that size as it arrives
    (``writes.put_chunk``), so at most one chunk is held per PUT.
    """

    def __init__(self, target: SharedFile, chunk: int, limit: int, if_match: str | None
                 ) -> None:
        self.target, self.chunk, self.limit, self.if_match = target, chunk, limit, if_match
        self.parts: list[bytes] = []
        self.held = 0  # bytes in parts
        self.sent = 0  # bytes already sent as chunks
        self.upload: bytes | None = None
        self.result: ContentEntry | None = None

    def write(self, data: bytes) -> None:
        if self.sent + self.held + len(data) > self.limit:
            self.parts.clear()
            raise DAVError(413, context_info=f"over peer.max_upload ({self.limit} bytes)")
        self.parts.append(bytes(data))
        self.held += len(data)
        while self.held > self.chunk:  # more than one chunk: the file goes in chunks
            blob = b"".join(self.parts)
            self.parts, self.held = [blob[self.chunk:]], len(blob) - self.chunk
            self._send(blob[:self.chunk], last=False)

    def _send(self, data: bytes, *, last: bool) -> None:
        t = self.target
        if self.upload is None:
            self.upload = os.urandom(uploads.ID_LEN)
        entry = t.space.write(t.twin, writes.put_chunk(
            t.space.service.peer, t.twin, t.entry.path, self.upload, self.sent, data,
            last=last, if_match=self.if_match))
        self.sent += len(data)
        if last:
            self.result = entry

    def close(self) -> None:
        t = self.target
        data = b"".join(self.parts)
        self.parts, self.held = [], 0
        if self.upload is not None:
            self._send(data, last=True)
            return
        self.result = t.space.write(t.twin, writes.put(t.space.service.peer, t.twin,
                                                       t.entry.path, data, self.if_match))
