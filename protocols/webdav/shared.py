"""``/dav/shared/<twin>/...``: what other twins shared with us, read-only.

Listings and bytes come from the peer layer (``service.peer.content_list`` and
``content_get``), which signs the request and lets the other twin check its
ACL; ranges are passed through, so seeking in a shared video fetches only
what is watched. A twin that refuses (no grant, grant revoked) simply shows
nothing: its folder is 404. Writing into another twin's files is not offered
(the peer protocol has no write kind yet), so every change here is 403.

``/shared/`` lists the twins that told us they share something
(``share.notify``, recorded by ``core.peer.shares.SharedWithMe``) plus those
that answered a listing since start-up; each is listed only if its listing
answers now, so a revoked, failing or unreachable twin is hidden. A
notification (grant or revoke) drops the listing cache at once.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from wsgidav import util
from wsgidav.dav_error import DAVError
from wsgidav.dav_provider import DAVCollection, DAVNonCollection

from core.errors import Forbidden, NotFound, PeerRejected
from core.files import join
from core.peer.content import ContentEntry
from protocols.webdav.bridge import Bridge
from protocols.webdav.streams import DownloadReader

if TYPE_CHECKING:
    from core.service import Service
    from protocols.webdav.provider import TwinProvider

log = logging.getLogger("twin.webdav.shared")
READ_ONLY = "shared folders are read-only"
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
                return None
            now = self.seen.get(twin, time.time())
            return SharedFolder(join(("shared", twin)), environ, self, twin,
                                ContentEntry("/", twin, 0, True, now, ""))
        path = join(("shared", twin, *rest))
        entries = self.listing(twin, join(rest[:-1]))
        if entries is None:
            # A grant on /photos/ need not allow listing /: ask for the folder itself.
            if self.listing(twin, join(rest)) is None:
                return None
            return SharedFolder(path, environ, self, twin,
                                ContentEntry(join(rest), rest[-1], 0, True, time.time(), ""))
        for entry in entries:
            if entry.name == rest[-1]:
                if entry.is_dir:
                    return SharedFolder(path, environ, self, twin, entry)
                return SharedFile(path, environ, self, twin, entry)
        return None


class _ReadOnly:
    def delete(self) -> None:
        raise DAVError(403, context_info=READ_ONLY)

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        raise DAVError(403, context_info=READ_ONLY)

    def support_recursive_move(self, dest_path: str) -> bool:
        return False

    def prevent_locking(self) -> bool:
        return True


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


class SharedFolder(_ReadOnly, DAVCollection):  # type: ignore[misc]
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

    def create_empty_resource(self, name: str) -> Any:
        raise DAVError(403, context_info=READ_ONLY)

    def create_collection(self, name: str) -> Any:
        raise DAVError(403, context_info=READ_ONLY)


class SharedFile(_ReadOnly, DAVNonCollection):  # type: ignore[misc]
    def __init__(self, path: str, environ: dict[str, Any], space: SharedSpace, twin: str,
                 entry: ContentEntry) -> None:
        super().__init__(path, environ)
        self.space, self.twin, self.entry = space, twin, entry

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

    def begin_write(self, *, content_type: str | None = None) -> Any:
        raise DAVError(403, context_info=READ_ONLY)


