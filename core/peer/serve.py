"""Serving what the owner shared: the ``content.list`` and ``content.get`` kinds.

Every request asks ``core.acl.Access`` first, and a path the caller may not
see gets the same answer whether it exists or not (``NOT_SHARED``): another
twin cannot probe what the owner keeps. Only then is the ``ContentSource``
(the file tree) read. ``content.get`` answers with the entry and the range
in the ack and the bytes as an encrypted stream after it (``Streamed``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from core.acl import Access, Principal, as_dir, normalize
from core.errors import Invalid, NotFound
from core.peer.content import ContentEntry, ContentSource
from core.peer.kinds import Streamed
from phonebook.record import TwinRecord

if TYPE_CHECKING:
    from core.peer.peer import Peer

log = logging.getLogger("twin.peer")
# The one answer to a path the caller may not read, whether or not it exists.
NOT_SHARED = "{path}: not found or not shared"


def field(value: Any, name: str, kind: type) -> Any:
    """``value[name]`` when ``value`` is a map and it is exactly of type ``kind``."""
    if not isinstance(value, dict) or type(value.get(name)) is not kind:
        raise Invalid(f"request needs {name!r} ({kind.__name__})")
    return value[name]


class ContentServer:
    """The owner of the two read kinds: the ACL, then the content source."""

    def __init__(self, access: Access, content: ContentSource) -> None:
        self.access = access
        self.content = content

    def install(self, peer: Peer) -> None:
        peer.register("content.list", self.on_list)
        peer.register_stream("content.get", self.on_get)

    async def on_list(self, record: TwinRecord, value: Any) -> list[dict[str, Any]]:
        who = Principal.remote(record.name)
        path = normalize(field(value, "path", str))
        whole = await self.access.allowed(who, as_dir(path), "read")
        if not whole and not await self.access.reaches_below(who, path):
            raise NotFound(NOT_SHARED.format(path=path))
        entry = await self._stat_shared(path)
        if not entry.is_dir:
            raise Invalid(f"{path} is not a directory")
        out = []
        for child in await self.content.list(entry.path):
            target = as_dir(child.path) if child.is_dir else child.path
            if whole or await self.access.allowed(who, target, "read") or (
                    child.is_dir and await self.access.reaches_below(who, child.path)):
                out.append(child.to_wire())
        return out

    async def on_get(self, record: TwinRecord, value: Any) -> Streamed:
        who = Principal.remote(record.name)
        path = normalize(field(value, "path", str))
        start = field(value, "start", int)
        end = value.get("end")
        if not await self.access.allowed(who, path, "read"):
            raise NotFound(NOT_SHARED.format(path=path))
        entry = await self._stat_shared(path)
        if entry.is_dir:
            raise Invalid(f"{path} is a directory")
        end = entry.size if end is None else end
        if type(end) is not int or not 0 <= start <= end or end > entry.size:
            raise Invalid(f"range {start}-{end} outside 0-{entry.size}")
        log.debug("content.get %s [%d, %d) for %s", path, start, end, who)
        return Streamed({"entry": entry.to_wire(), "start": start, "end": end},
                        self.content.read(path, start, end), end - start)

    async def _stat_shared(self, path: str) -> ContentEntry:
        try:
            return await self.content.stat(path)
        except NotFound:
            raise NotFound(NOT_SHARED.format(path=path)) from None
