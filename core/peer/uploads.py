"""A file larger than one envelope, written into a read-write share in chunks.

Why: a ``content.put`` carries its bytes inside one envelope, and envelopes
are held whole in memory before their signature is checked, so they are
bounded (``peer.max_envelope``). A bigger file travels as a numbered upload:
``content.put`` envelopes with the same ``upload`` id, each at most
``peer.max_put`` bytes at ``offset`` (the bytes so far), the last one marked
``last``. The owner appends each chunk to a part file under ``uploads/`` in
its data dir (never in memory) and, at the last one, streams the part file
into the file tree as one ``FileTree.write``, so the new version replaces the
old only when whole, as a WebDAV PUT does.

Bounds: a whole upload is at most ``peer.max_upload`` bytes and at most the
owner's free quota (checked at every chunk, so a file that cannot fit is
refused at its first chunk over, not at its end); a sender has at most
``MAX_PER_SENDER`` uploads under way; a part file untouched for ``STALE``
seconds (a sender that stopped half way) is removed when the next upload
starts. Every chunk passes the ACL before it is looked at
(``core.peer.writes``), and a chunk whose offset is not the bytes received so
far is ``conflict``: nothing is ever written at a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from core.contacts import check_name
from core.errors import Conflict, ErrorCode, Invalid, QuotaExceeded

DIR = "uploads"
MAX_PER_SENDER = 4
STALE = 3600.0
READ = 1024 * 1024
ID_LEN = 16


class Uploads:
    def __init__(self, data_dir: Path, max_upload: int) -> None:
        self.dir = Path(data_dir) / DIR
        self.max_upload = max_upload
        self._locks: dict[str, asyncio.Lock] = {}

    def _part(self, sender: str, upload: bytes) -> Path:
        return self.dir / f"{check_name(sender)}-{upload.hex()}.part"

    async def append(self, sender: str, upload: object, offset: object, data: bytes,
                     room: int) -> int:
        """Add ``data`` at ``offset`` of ``sender``'s upload; returns its size now.

        ``room``: bytes the owner's quota still takes for this file.
        """
        if type(upload) is not bytes or len(upload) != ID_LEN:
            raise Invalid(f"upload must be {ID_LEN} bytes")
        if type(offset) is not int or offset < 0:
            raise Invalid("offset must be a non-negative integer")
        size = offset + len(data)
        if size > self.max_upload:
            raise Invalid(f"upload over this twin's peer.max_upload ({self.max_upload} bytes)",
                          code=ErrorCode.TOO_LARGE)
        if size > room:
            raise QuotaExceeded(f"upload of {size} bytes or more exceeds the quota")
        part = self._part(sender, upload)
        if len(self._locks) > 1024:  # only parts being appended to need theirs
            self._locks = {k: v for k, v in self._locks.items() if v.locked()}
        lock = self._locks.setdefault(part.name, asyncio.Lock())
        async with lock:
            return await asyncio.to_thread(self._append, sender, part, offset, data)

    def _append(self, sender: str, part: Path, offset: int, data: bytes) -> int:
        self.dir.mkdir(mode=0o700, exist_ok=True)
        if offset == 0:
            self._sweep(sender, keep=part)
            mode = "wb"
        else:
            mode = "r+b"
        try:
            with open(part, mode) as f:
                f.seek(0, os.SEEK_END)
                if f.tell() != offset:
                    raise Conflict(f"chunk at {offset}, but {f.tell()} bytes were received")
                f.write(data)
                return f.tell()
        except FileNotFoundError:
            raise Conflict(f"no upload under way to continue at {offset}") from None

    def _sweep(self, sender: str, keep: Path) -> None:
        """Drop stale part files; refuse a sender with too many under way."""
        now = time.time()
        mine = 0
        for path in self.dir.glob("*.part"):
            with contextlib.suppress(FileNotFoundError):
                if now - path.stat().st_mtime > STALE:
                    path.unlink()
                elif path.name.rsplit("-", 1)[0] == sender and path != keep:
                    mine += 1
        if mine >= MAX_PER_SENDER:
            raise Invalid(f"{sender} has {mine} uploads under way (at most {MAX_PER_SENDER})")

    async def chunks(self, sender: str, upload: bytes) -> AsyncIterator[bytes]:
        """The whole upload, read back in READ-sized pieces."""
        part = self._part(sender, upload)
        f = await asyncio.to_thread(open, part, "rb")
        try:
            while piece := await asyncio.to_thread(f.read, READ):
                yield piece
        finally:
            f.close()

    async def drop(self, sender: str, upload: bytes) -> None:
        part = self._part(sender, upload)
        self._locks.pop(part.name, None)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(part.unlink)
