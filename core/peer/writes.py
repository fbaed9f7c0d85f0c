"""Writing into another twin's read-write share: ``content.put|delete|mkdir|move``.

Why: a grant with the write right (``twin share /docs/ --with bob --rights rw``)
must let bob change ``/docs/`` from his own twin (his file manager writes under
``/dav/shared/alice/docs/``), not only read it.

Owner side (``SharedWrites``, alice): the peer part has verified the envelope
(signature, recipient, clock, replay, rate) before a handler here runs. Each
handler then reads the path field(s) alone and asks ``core.acl.Access`` for
the write right on each (a move: on the source and on the destination)
BEFORE it looks at anything else in the request or touches the file tree or
the store. The rule is the one plain logins have over WebDAV
(``protocols.webdav.roles``): the write right on the path itself, so a
grantee of ``/docs/`` writes, renames and deletes below it but cannot delete
or rename ``/docs`` itself. A path the sender may not even read is answered
``not_found`` "not found or not shared" (as ``content.get`` does: no probing
what the owner keeps); one it may read but not write, ``forbidden``.

Bounds: a file of at most ``peer.max_put`` bytes (8 MiB by default) travels
whole in one envelope; a bigger one in chunks of that size, staged on the
owner's disk (``core.peer.uploads``), up to ``peer.max_upload`` (1 GiB by
default). The receiver's ``peer.max_envelope`` bounds each envelope before
its signature is checked, its own ``peer.max_put`` each chunk and
``peer.max_upload`` the file after the ACL said yes: ``too_large``. The
write is charged to the owner's ``webdav.quota``: over it the refusal is
``quota`` (507 at the sender's WebDAV). ``if_match`` (an ETag) makes a put
or delete conditional: a file changed meanwhile is ``precondition_failed``
(412).

Sender side (``put``, ``put_chunk``, ``delete``, ``mkdir``, ``move``): one
signed request each through ``Peer.request``, the answer typed before use.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from core.acl import Access, Principal, normalize
from core.errors import Conflict, ErrorCode, Forbidden, Invalid, NotFound, TwinError
from core.peer.content import ContentEntry
from core.peer.serve import NOT_SHARED
from core.peer.uploads import Uploads
from phonebook.record import TwinRecord

if TYPE_CHECKING:
    from core.files import FileTree
    from core.peer.peer import Peer

log = logging.getLogger("twin.peer.writes")
PUT, DELETE, MKDIR, MOVE = "content.put", "content.delete", "content.mkdir", "content.move"
MAX_ETAG = 128


class SharedWrites:
    """The owner's handlers of the four write kinds (see the module docstring)."""

    def __init__(self, files: FileTree, access: Access, uploads: Uploads, max_put: int) -> None:
        self.files = files
        self.access = access
        self.uploads = uploads  # chunks of files bigger than max_put, staged on disk
        self.max_put = max_put

    def install(self, peer: Peer) -> None:
        peer.register(PUT, self.on_put)
        peer.register(DELETE, self.on_delete)
        peer.register(MKDIR, self.on_mkdir)
        peer.register(MOVE, self.on_move)

    async def _writable(self, who: Principal, value: Any, field: str) -> str:
        """The path in ``value[field]``, once the ACL gave ``who`` write on it."""
        raw = value.get(field) if isinstance(value, dict) else None
        if type(raw) is not str:
            raise Invalid(f"request needs {field!r} (str)")
        path = normalize(raw).rstrip("/") or "/"
        access = self.access
        if path != "/" and await access.allowed(who, path, "write"):
            return path
        if await access.allowed(who, path, "read") or \
                await access.allowed(who, path.rstrip("/") + "/", "read"):
            raise Forbidden(f"{who} may not write {path}")
        raise NotFound(NOT_SHARED.format(path=path))

    async def _check_etag(self, path: str, value: dict[str, Any]) -> None:
        want = value.get("if_match")
        if want is None:
            return
        if type(want) is not str or len(want) > MAX_ETAG:
            raise Invalid("if_match must be an ETag (str)")
        now = await self.files.exists(path)
        if now is None or now.etag != want:
            raise Conflict(f"{path} changed since it was read (ETag {want!r} no longer holds)",
                           code=ErrorCode.PRECONDITION_FAILED)

    # content.put {"path": str, "data": bytes, "if_match": str | None} and, for a file
    # in chunks, {"upload": 16 bytes, "offset": int, "last": bool} (core.peer.uploads)
    async def on_put(self, record: TwinRecord, value: Any) -> dict[str, Any]:
        path = await self._writable(Principal.remote(record.name), value, "path")
        data = value.get("data")
        if type(data) is not bytes:
            raise Invalid("content.put needs 'data' (bytes)")
        if len(data) > self.max_put:
            raise Invalid(f"{len(data)} bytes over this twin's peer.max_put ({self.max_put})",
                          code=ErrorCode.TOO_LARGE)
        await self._check_etag(path, value)
        upload = value.get("upload")
        if upload is None:
            entry = await self.files.write(path, _once(data), size_hint=len(data))
            log.info("%s wrote %s (%d bytes)", record.name, path, len(data))
            return entry.to_wire()
        return await self._chunk(record.name, path, upload, value, data)

    async def _chunk(self, sender: str, path: str, upload: Any, value: dict[str, Any],
                     data: bytes) -> dict[str, Any]:
        files = self.files
        last = value.get("last", False)
        if type(last) is not bool:
            raise Invalid("last must be a bool")
        old = await files.exists(path)
        _, room = await files.usage()
        room += old.size if old is not None and not old.is_dir else 0
        try:
            size = await self.uploads.append(sender, upload, value.get("offset"), data, room)
            if not last:
                return {"received": size}
            entry = await files.write(path, self.uploads.chunks(sender, upload),
                                      size_hint=size)
        except TwinError:
            if type(upload) is bytes:
                await self.uploads.drop(sender, upload)  # the sender's PUT has failed
            raise
        await self.uploads.drop(sender, upload)
        log.info("%s wrote %s (%d bytes in chunks)", sender, path, size)
        return entry.to_wire()

    # content.delete {"path": str, "if_match": str | None}
    async def on_delete(self, record: TwinRecord, value: Any) -> dict[str, Any]:
        path = await self._writable(Principal.remote(record.name), value, "path")
        await self._check_etag(path, value)
        await self.files.delete(path)
        log.info("%s deleted %s", record.name, path)
        return {"deleted": path}

    # content.mkdir {"path": str}
    async def on_mkdir(self, record: TwinRecord, value: Any) -> dict[str, Any]:
        path = await self._writable(Principal.remote(record.name), value, "path")
        entry = await self.files.mkdir(path)
        log.info("%s created folder %s", record.name, path)
        return entry.to_wire()

    # content.move {"path": str, "to": str, "overwrite": bool}
    async def on_move(self, record: TwinRecord, value: Any) -> dict[str, Any]:
        who = Principal.remote(record.name)
        src = await self._writable(who, value, "path")
        dst = await self._writable(who, value, "to")
        overwrite = value.get("overwrite", False)
        if type(overwrite) is not bool:
            raise Invalid("overwrite must be a bool")
        if dst == src or dst.startswith(src + "/"):
            raise Conflict(f"cannot move {src} into itself")
        entry = await self.files.move(src, dst, overwrite=overwrite)
        log.info("%s moved %s to %s", record.name, src, dst)
        return entry.to_wire()


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


# -- the sending side (bob's twin, for his WebDAV under /dav/shared/<twin>/)

def _entry(result: Any) -> ContentEntry:
    return ContentEntry.from_wire(result)


async def put(peer: Peer, twin: str, path: str, data: bytes,
              if_match: str | None = None) -> ContentEntry:
    """Write ``data`` (at most ``peer.max_put`` bytes) at ``path`` in ``twin``'s content."""
    limit = peer.max_put
    if len(data) > limit:
        raise Invalid(f"{len(data)} bytes over peer.max_put ({limit}): send it in chunks",
                      code=ErrorCode.TOO_LARGE)
    return _entry(await peer.request(twin, PUT, {"path": normalize(path), "data": data,
                                                 "if_match": if_match}))


async def put_chunk(peer: Peer, twin: str, path: str, upload: bytes, offset: int,
                    data: bytes, *, last: bool, if_match: str | None = None
                    ) -> ContentEntry | None:
    """One chunk of a file in chunks; the file's entry once ``last`` is stored."""
    result = await peer.request(twin, PUT, {"path": normalize(path), "data": data,
                                            "if_match": if_match, "upload": upload,
                                            "offset": offset, "last": last})
    if last:
        return _entry(result)
    if not isinstance(result, dict) or result.get("received") != offset + len(data):
        raise Invalid(f"{twin} did not take chunk {offset}-{offset + len(data)} as sent")
    return None


async def delete(peer: Peer, twin: str, path: str, if_match: str | None = None) -> None:
    await peer.request(twin, DELETE, {"path": normalize(path), "if_match": if_match})


async def mkdir(peer: Peer, twin: str, path: str) -> ContentEntry:
    return _entry(await peer.request(twin, MKDIR, {"path": normalize(path)}))


async def move(peer: Peer, twin: str, src: str, dst: str, *, overwrite: bool) -> ContentEntry:
    return _entry(await peer.request(twin, MOVE, {"path": normalize(src), "to": normalize(dst),
                                                  "overwrite": overwrite}))
