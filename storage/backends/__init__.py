"""Shard backends: where share bytes live.

The contract (``ShardBackend``) is deliberately small so that a directory, a
Redis or a 0-db namespace can all hold shares:

- keys are short ASCII strings (``check_key``), values are opaque bytes;
- ``put`` returns only once the value is durable (as durable as the backend
  can make it: fsync for ``local``, the server's AOF policy for ``resp``);
- ``get`` returns None for a missing key; any failure to *reach* the backend
  raises ``BackendUnavailable`` (the store then treats its shares as missing);
- ``list(prefix)`` yields keys in pages so a backend with millions of keys
  never needs them all in memory;
- optionally, ``put_many(items)`` (``SupportsPutMany``) stores many
  ``(key, parts)`` at once and returns one bool per item: True once that item
  is as durable as ``put`` makes it, False if that item alone could not be
  stored; a backend it cannot reach at all raises ``BackendUnavailable``. The
  store writes a batch of small objects with one such call per backend, since
  per-share calls (a future, a task and a round trip each) were most of the CPU
  a 4 KiB put cost. ``put_many(backend, items)`` below falls back to one ``put``
  per item for a backend without it.

``load(spec, data_dir, executor)`` picks the implementation by ``kind``, the way
Radicale picks its storage: ``{"name": "local0", "kind": "local",
"location": "shards/0"}`` (relative to the data dir) or ``{"name": "r1", "kind":
"resp", "location": "redis://127.0.0.1:6379/0"}`` (``zdb://host:port/namespace``
for 0-db, where the namespace is selected with ``SELECT namespace``). A ``resp``
spec may add ``password`` (the Redis AUTH password, or the 0-db namespace's) or
``password_file`` (a file holding it, relative to the data dir), so that the
location shown in status and logs carries no secret.

Every backend has ``max_value``, the largest value it stores: the store refuses
at start a segment size whose shares would not fit (0-db: 8 MiB, Redis: 512 MiB).

A new kind is a module here implementing ``ShardBackend`` (taking keys and
values as ``storage.backends.keys`` defines them, not from this module, which
imports the kinds) and its branch in ``load``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Protocol, runtime_checkable

from storage.backends.keys import MAX_KEY, Buffer, check_key
from storage.backends.local import CompactPolicy, LocalBackend
from storage.errors import BackendUnavailable
from storage.model import BackendHealth

__all__ = [
    "MAX_KEY",
    "Buffer",
    "ShardBackend",
    "SupportsPutMany",
    "check_key",
    "check_name",
    "check_usable",
    "claim_all",
    "load",
    "max_value",
    "put_many",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"invalid backend name {name!r:.80}: use letters, digits, - and _")
    return name


@runtime_checkable
class ShardBackend(Protocol):
    name: str
    kind: str
    location: str

    async def put(self, key: str, parts: Sequence[Buffer]) -> None:
        """Store the concatenation of ``parts`` under ``key``, durably, replacing any value."""

    async def get(self, key: str) -> bytes | None: ...

    async def delete(self, key: str) -> bool:
        """True if the key existed."""

    def list(self, prefix: str = "") -> AsyncIterator[str]: ...

    async def stat(self, key: str) -> int | None:
        """Stored size in bytes, None if missing."""

    async def health(self) -> BackendHealth: ...

    async def close(self) -> None: ...


def max_value(backend: ShardBackend) -> int:
    """The largest value ``backend`` stores (a backend without the attribute: no limit
    the store needs to know)."""
    return int(getattr(backend, "max_value", 1 << 62))


async def check_usable(backend: ShardBackend) -> None:
    """ValueError if ``backend`` can never hold shares (a 0-db namespace in seq mode)."""
    check = getattr(backend, "check_usable", None)
    if check is not None:
        await check()


class SupportsPutMany(Protocol):
    """The optional batch write of the contract (see the module docstring); a
    typed statement of it for implementers, never checked at run time."""

    async def put_many(self, items: Sequence[tuple[str, Sequence[Buffer]]]) -> list[bool]: ...


async def put_many(backend: ShardBackend, items: Sequence[tuple[str, Sequence[Buffer]]]
                   ) -> list[bool]:
    """``backend.put_many(items)`` if it has one, else one ``put`` per item, concurrently.

    Either way a ``BackendUnavailable`` for an item is a False for that item, and
    any other error propagates (it is a bug, not a backend being down).
    """
    if not items:
        return []
    # getattr, not isinstance: a runtime_checkable Protocol check costs ~6 us,
    # and this runs per backend for every small-put batch
    batch = getattr(backend, "put_many", None)
    if batch is not None:
        try:
            return list(await batch(items))
        except BackendUnavailable:
            return [False] * len(items)
    results = await asyncio.gather(*(backend.put(key, parts) for key, parts in items),
                                   return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, BackendUnavailable):
            raise r
    return [not isinstance(r, BaseException) for r in results]


def claim_all(backends: list[ShardBackend]) -> None:
    """Lock every backend that can be locked (local directories) for this process now.

    Raises ``StoreInUse`` (and releases what it took) if another process holds one.
    """
    claimed: list[ShardBackend] = []
    try:
        for b in backends:
            claim = getattr(b, "claim", None)
            if claim is not None:
                claim()
                claimed.append(b)
    except BaseException:
        for b in claimed:
            b.unclaim()  # type: ignore[attr-defined]
        raise


def _password(spec: dict[str, str], name: str, data_dir: Path) -> str | None:
    """The spec's ``password``, or the first line of its ``password_file``."""
    if "password" in spec and "password_file" in spec:
        raise ValueError(f"backend {name}: give password or password_file, not both")
    if "password" in spec:
        return str(spec["password"])
    if "password_file" not in spec:
        return None
    path = Path(str(spec["password_file"])).expanduser()
    path = path if path.is_absolute() else data_dir / path
    try:
        with open(path, "rb") as f:
            text = f.read(4097)
    except OSError as exc:
        raise ValueError(f"backend {name}: cannot read password_file {path}: {exc}") from exc
    if len(text) > 4096:
        raise ValueError(f"backend {name}: password_file {path} is too large")
    return text.decode("utf-8", "replace").splitlines()[0] if text.strip() else ""


def load(spec: dict[str, str], data_dir: Path, executor: Executor,
         policy: CompactPolicy | None = None) -> ShardBackend:
    if not isinstance(spec, dict):
        raise ValueError(f"backend spec must be a table, got {type(spec).__name__}")
    unknown = set(spec) - {"name", "kind", "location", "password", "password_file"}
    if unknown:
        raise ValueError(f"backend spec has unknown keys {sorted(unknown)}")
    name = check_name(str(spec.get("name", "")))
    kind = str(spec.get("kind", ""))
    location = str(spec.get("location", ""))
    if not location or len(location) > 1000:
        raise ValueError(f"backend {name}: location missing or too long")
    if kind == "local":
        path = Path(location).expanduser()
        if not path.is_absolute():
            path = data_dir / path
        return LocalBackend(name, path, executor, location=location, policy=policy)
    if kind == "resp":
        # imported here, not above, for what it costs: redis.asyncio and this module
        # take ~0.2 s to import, which a twin with local backends only never pays
        # (no cycle: resp imports storage.backends.keys, not this module)
        from storage.backends.resp import RespBackend

        return RespBackend(name, location, password=_password(spec, name, data_dir))
    raise ValueError(f"backend {name}: unknown kind {kind!r} (expected local or resp)")
