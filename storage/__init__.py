"""Dispersed, encrypted object storage for the twin.

The contract
============

Objects are opaque byte streams named by an ``ObjectRef`` (``str(ref)`` is
``<32 hex id>:<size>``, ``ObjectRef.parse`` reads it back). ``open_store`` gives
a ``Store``; every method is a coroutine safe to call concurrently from one
event loop (many puts and gets at once are the normal case)::

    ref  = await store.put(source)          # bytes | async iterable of bytes | binary file
    async for chunk in store.get(ref, start=0, end=None):   # end exclusive, clamped to size
        ...                                  # (await store.get(...) first to fail early
                                             #  with ObjectNotFound before sending anything)
    data = await store.read(ref, start, end) # the same, joined: for small objects
    info = await store.stat(ref)             # ObjectInfo(id, size, created, segments, k, n)
    await store.delete(ref)
    infos = await store.list()               # or ``async for info in store.iter_objects()``
    report = await store.verify(sample=None | fraction, clean=False)   # VerifyReport
    report = await store.repair()            # RepairReport
    await store.set_named("twin.db", ref)    # a named pointer, kept in the catalogue
    refs = await store.get_named("twin.db")  # its kept generations, newest first
    name = await store.backup(); await store.backup_loop(interval_seconds)
    store = await Store.restore(data_dir, backends=..., metadata_key=..., master_key=...)
    healths = await store.health()           # [BackendHealth(name, kind, location, ...)]
    await store.check_backends()             # ValueError: a backend that can never work
    await store.maintain(scrub_interval)     # self-repair and scrub, until cancelled
    await store.compact_loop(interval)       # dead shard bytes back (local backends)
    await store.trim_loop(interval)          # freed heap pages back to the kernel
    store.monitor.summary()                  # readable / writable, from cached health
    await store.close()

Guarantees:

- ``put`` returns once the write quorum of every segment's shares and the
  manifest are durable (the other shares get a short grace; what misses it is
  queued for ``maintain`` to repair); before that the object is invisible,
  and a crash leaves only orphan shares that ``verify(clean=True)`` (or the
  scrub) removes. Every backend call has a deadline that follows its size; a
  backend that fails is skipped until a health probe passes (``storage.health``).
  Memory stays bounded (a few segments) whatever the object size; ranged
  ``get`` decodes only the covering segments.
- Each segment (default 4 MiB) is encrypted with XChaCha20-Poly1305 under a
  per-object key (stored wrapped by the master key), bound to object id,
  segment number and last-segment flag (computed by OpenSSL, byte-identical
  to libsodium's), then cut by zfec into n shares of which any k rebuild it;
  each share on a *distinct* backend, each with a versioned header and a
  hash (version 2: BLAKE3-256; version 1, BLAKE2b-256, still reads). A
  corrupt or missing share is skipped; fewer than k good shares raise
  ``NotEnoughShares``. Reads skip share hashes while the AEAD tag verifies
  (it authenticates the whole segment) and check them all when it does not.
- Writes need ``write_quorum`` shares per segment (default k+1, at most n):
  with a backend down, puts still succeed at reduced redundancy and ``repair``
  restores full redundancy later (also onto an empty replacement backend).
- Errors (``storage.errors``): ``StorageError`` and its subclasses
  ``ObjectNotFound``, ``NotEnoughShares``, ``BackendUnavailable`` (and its
  ``StoreInUse``), ``IntegrityError``, ``InvalidReference`` (a malformed ref or
  name; also a ValueError).

Pluggable part: shard backends (``storage.backends.ShardBackend``: put, get,
delete, list, stat, health, close), chosen by ``kind`` — ``local`` (a directory
of append-only data files with an index, group-committed fsyncs) and ``resp``
(Redis, or 0-db namespaces with ``zdb://host:port/namespace``). A data dir and
its local backends are used by one process at a time: ``open_store`` locks the
local directories at once and raises ``StoreInUse`` (with the holder's pid)
if another process, normally a running ``twin serve``, has them.

The catalogue (``catalogue.sqlite`` in the data dir) is backed up into the
store itself, sealed by the *metadata* key, findable without the catalogue
under ``backup/`` on every backend; see ``storage.backup``. Named pointers
(``set_named``; the newest ``NAMED_KEEP`` generations are kept) are catalogue
rows, so a restored catalogue finds what they name: the twin keeps its
metadata DB snapshot there (``core/backup.py``).

Layout: which file for what
===========================

- ``store.py``: ``Store``, the façade (the calls above), and ``open_store``.
  Each call checks its arguments and that the store is open, then does an
  object-level step over the engine or hands the engine to the part below.
- ``engine.py``: ``Engine``, the state every part shares (backends and which
  are draining, catalogue, health monitor, ids in flight, shares and repairs
  owed, keys, pools) and the share-level primitives: the write path
  (``write_stream``, ``store_shares``, ``settle_writes``), the read path
  (``read_segment``, ``probe_share``, ``ObjectStream``), placement
  (``placement_order``, ``spares``), ``delete_keys``, and ``call`` (every
  backend call, with its deadline).
- The parts, each taking the ``Engine`` (none imports ``Store``):
  ``smallput.py`` (small puts, batched), ``repair.py`` (verify and repair),
  ``maintain.py`` (self-repair and scrub while serving), ``backup.py``
  (catalogue backup and restore), ``backendset.py`` (add and remove a
  backend) and ``drain.py`` (move every share off one).
- Beneath them: ``codec.py`` (a segment to n shares and back, over
  ``crypto.py``, ``erasure.py`` and the share format ``share.py``),
  ``catalogue.py`` (the SQLite catalogue), ``health.py`` (deadlines,
  ``BackendMonitor``), ``memory.py`` (byte budget, buffer pool, malloc tuning,
  thread pools), ``source.py`` (a put's source cut into segments),
  ``groupcommit.py`` (the twin's one group commit: the catalogue and the
  local backend use it, and so do ``core.db.Group`` and ``core.mail.commit``)
  and ``sqlpool.py`` (shared by the catalogue and the local backend),
  ``model.py`` and ``errors.py`` (the public values and errors).
- To add a storage backend, open ``backends/__init__.py``: the
  ``ShardBackend`` contract, and ``load``, which picks the implementation by
  ``kind``. A new kind is a module beside ``backends/local.py`` and
  ``backends/resp.py`` (``backends/zdb.py`` is 0-db's part of resp) plus its
  branch in ``load``; nothing else in ``storage`` names a kind. Outside it,
  ``twin storage backends add`` offers the kinds (``core/cli/storage.py``) and
  ``core/domains.py`` tells a local directory's failure domain.
"""

from __future__ import annotations

from storage.backends import ShardBackend
from storage.backends.local import CompactPolicy
from storage.engine import ObjectStream
from storage.errors import (
    BackendRefused,
    BackendUnavailable,
    IntegrityError,
    InvalidReference,
    NotEnoughShares,
    ObjectNotFound,
    StorageError,
    StoreInUse,
)
from storage.model import (
    BackendHealth,
    DrainProgress,
    ObjectInfo,
    ObjectRef,
    RepairReport,
    ShareProblem,
    VerifyReport,
)
from storage.store import Store, open_store

__all__ = [
    "BackendHealth",
    "BackendRefused",
    "BackendUnavailable",
    "CompactPolicy",
    "DrainProgress",
    "IntegrityError",
    "InvalidReference",
    "NotEnoughShares",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectRef",
    "ObjectStream",
    "RepairReport",
    "ShardBackend",
    "ShareProblem",
    "StorageError",
    "Store",
    "StoreInUse",
    "VerifyReport",
    "open_store",
]
