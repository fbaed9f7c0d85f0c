"""Catalogue backups inside the dispersed store, and restore from them.

A backup is a consistent snapshot of the catalogue written like any object
(namespace ``b/``, random key), plus a small *backup manifest* (where its shares
are, its key) sealed with the metadata key and put on **every** backend under
``backup/<time_ns:020d>-<id>``. So with nothing but the metadata key (derived
from the twin's words) and the backend list, restore lists ``backup/`` on any
reachable backend, takes the newest manifest it can open, reads the snapshot
back and installs it as the catalogue. Objects written after that backup are
not in it (their shares show up as orphans in verify); back up often.
The newest ``KEEP`` backups are kept, older ones are deleted after each backup.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any, BinaryIO

import cbor2

from storage import crypto
from storage.backends import ShardBackend, claim_all, load
from storage.catalogue import FILE_NAME, Catalogue, Manifest, SegmentEntry
from storage.engine import NS_BACKUP, Engine, share_key
from storage.errors import BackendUnavailable, IntegrityError, StorageError
from storage.memory import default_executors

log = logging.getLogger("twin.storage")
PREFIX = "backup/"
KEEP = 3
_MAGIC = b"TWBK1"
MAX_MANIFEST = 64 * 1024 * 1024


LIST_TIMEOUT = 10.0  # seconds to list the backups of one backend (a few keys)


async def _names(backends: list[ShardBackend], skip: frozenset[str] = frozenset()
                 ) -> tuple[dict[str, list[ShardBackend]], bool]:
    """Backup names and the backends holding each; False when some backend (down,
    failing or too slow) could not be listed, so the names may be incomplete."""
    names: dict[str, list[ShardBackend]] = {}

    async def one(b: ShardBackend) -> bool:
        if b.name in skip:
            return False
        try:
            async with asyncio.timeout(LIST_TIMEOUT):
                async for key in b.list(PREFIX):
                    names.setdefault(key, []).append(b)
            return True
        except BackendUnavailable as exc:
            log.warning("cannot list backups on %s: %s", b.name, exc.detail)
        except TimeoutError:
            log.warning("cannot list backups on %s: no answer in %.0f s", b.name,
                        LIST_TIMEOUT)
        return False

    complete = all(await asyncio.gather(*(one(b) for b in backends)))
    return names, complete


async def live_backup_ids(engine: Engine) -> set[str] | None:
    """Ids of the backups on the backends, None if a backend could not be listed (then
    no backup share may be taken for an orphan)."""
    names, complete = await _names(engine.backends, frozenset(engine.monitor.down))
    return {name.rsplit("-", 1)[-1] for name in names} if complete else None


def _encode(m: Manifest, key: bytes) -> bytes:
    body = {"v": 1, "id": m.id, "size": m.size, "created": m.created, "k": m.k, "n": m.n,
            "segment_size": m.segment_size, "key": key, "prefix": m.prefix,
            "segments": [[s.placement, s.hashes] for s in m.segments]}
    return _MAGIC + cbor2.dumps(body)


def _decode(plain: bytes) -> tuple[Manifest, bytes]:
    if not plain.startswith(_MAGIC):
        raise IntegrityError("not a backup manifest")
    try:
        b: Any = cbor2.loads(plain[len(_MAGIC):])
        segs = [SegmentEntry([str(p) for p in pl], [bytes(h) for h in hs])
                for pl, hs in b["segments"]]
        m = Manifest(str(b["id"]), int(b["size"]), float(b["created"]), int(b["k"]),
                     int(b["n"]), int(b["segment_size"]), b"", bytes(b["prefix"]), segs,
                     len(segs))
        return m, crypto.check_key(bytes(b["key"]), "backup key")
    except (KeyError, TypeError, ValueError, cbor2.CBORDecodeError) as exc:
        raise IntegrityError(f"malformed backup manifest: {exc}") from exc


async def _open_manifest(name: str, holders: list[ShardBackend], metadata_key: bytes
                         ) -> tuple[Manifest, bytes] | None:
    for b in holders:
        try:
            sealed = await b.get(name)
            if sealed is None or len(sealed) > MAX_MANIFEST:
                continue
            return _decode(crypto.unseal(metadata_key, sealed, f"backup {name}"))
        except (BackendUnavailable, IntegrityError) as exc:
            log.warning("backup %s on %s unusable: %s", name, b.name, exc)
    return None


async def backup(engine: Engine) -> str:
    """Snapshot the catalogue into the store; returns the backup's name."""
    loop = asyncio.get_running_loop()
    tmp = engine.data_dir / f".catalogue-backup-{secrets.token_hex(4)}.sqlite"
    oid = secrets.token_hex(16)
    key, prefix = crypto.new_key(), crypto.new_prefix()
    written: list[tuple[ShardBackend, str]] = []
    engine.inflight.add(oid)
    try:
        await loop.run_in_executor(engine.io, engine.catalogue.snapshot, tmp)
        f = await loop.run_in_executor(engine.io, open, tmp, "rb")
        try:
            size, entries = await engine.write_stream(f, NS_BACKUP, oid, key, prefix, written)
        finally:
            f.close()
        m = Manifest(oid, size, time.time(), engine.k, engine.n, engine.segment_size, b"", prefix,
                     entries, len(entries))
        sealed = crypto.seal(engine.metadata_key, _encode(m, key))
        name = f"{PREFIX}{time.time_ns():020d}-{oid}"
        up = [b for b in engine.backends if not engine.monitor.is_down(b.name)]
        results = await asyncio.gather(*(engine.call(b, b.put(name, [sealed]), len(sealed))
                                         for b in up), return_exceptions=True)
        stored = sum(1 for r in results if not isinstance(r, BaseException))
        if stored == 0:
            raise BackendUnavailable("*", "no backend accepted the backup manifest")
    except BaseException:
        await engine.discard(written)
        raise
    finally:
        engine.inflight.discard(oid)
        tmp.unlink(missing_ok=True)
    log.info("catalogue backed up as %s (%d bytes, manifest on %d of %d backends)", name, size,
             stored, len(engine.backends))
    await _prune(engine)
    return name


async def _prune(engine: Engine) -> None:
    names, _ = await _names(engine.backends, frozenset(engine.monitor.down))
    for name in sorted(names, reverse=True)[KEEP:]:
        opened = await _open_manifest(name, names[name], engine.metadata_key)
        if opened is not None:
            m, _ = opened
            await engine.delete_keys([(b, share_key(NS_BACKUP, m.id, seg, i))
                                     for seg, e in enumerate(m.segments)
                                     for i, b in enumerate(e.placement) if b])
        await asyncio.gather(*(engine.call(b, b.delete(name), 0) for b in names[name]),
                             return_exceptions=True)
        log.info("removed old backup %s", name)


def _sync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


async def _read_into(engine: Engine, m: Manifest, key: bytes, path: Path) -> None:
    loop = asyncio.get_running_loop()
    f = await loop.run_in_executor(engine.io, open, path, "wb")
    try:
        for seg in range(m.segment_count):
            data = await engine.read_segment(m, key, seg, NS_BACKUP)
            await loop.run_in_executor(engine.io, f.write, data)
        await loop.run_in_executor(engine.io, _sync, f)
    finally:
        f.close()


async def restore_catalogue(data_dir: Path, *, backends: list[dict[str, str]],
                            metadata_key: bytes, master_key: bytes, k: int, n: int,
                            segment_size: int) -> None:
    """Install the newest readable catalogue backup on ``backends`` as the catalogue of
    the empty ``data_dir`` (read through an engine on a scratch catalogue, closed again
    before this returns); ``Store.restore`` then opens the store."""
    crypto.check_key(metadata_key, "metadata key")
    loop = asyncio.get_running_loop()
    target = data_dir / FILE_NAME
    await loop.run_in_executor(None, lambda: data_dir.mkdir(parents=True, exist_ok=True))
    if await loop.run_in_executor(None, target.exists):
        raise StorageError(f"{target} exists: restore needs a data dir without a catalogue")
    part = data_dir / (FILE_NAME + ".restore")
    scratch = data_dir / (FILE_NAME + ".scratch")
    cpu, io = default_executors()
    loaded = [load(spec, data_dir, io) for spec in backends]
    try:
        claim_all(loaded)
    except BaseException:
        cpu.shutdown(wait=False)
        io.shutdown(wait=False)
        raise
    engine = Engine(data_dir, loaded, Catalogue(scratch, io), k=k, n=n,
                    segment_size=segment_size, master_key=master_key,
                    metadata_key=metadata_key, cpu=cpu, io=io)
    try:
        names, _ = await _names(loaded)
        for name in sorted(names, reverse=True):
            opened = await _open_manifest(name, names[name], metadata_key)
            if opened is None:
                continue
            m, key = opened
            try:
                await _read_into(engine, m, key, part)
            except StorageError as exc:
                log.warning("backup %s cannot be read back (%s); trying an older one", name, exc)
                continue
            log.info("restoring the catalogue from backup %s (%d bytes)", name, m.size)
            break
        else:
            raise StorageError("no readable catalogue backup on the given backends "
                               "(wrong metadata key, or no backup was ever made)")
    finally:
        await engine.close()
        for leftover in scratch.parent.glob(scratch.name + "*"):
            leftover.unlink(missing_ok=True)
    os.replace(part, target)
