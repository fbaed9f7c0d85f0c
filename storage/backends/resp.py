"""``resp`` backend: shares as values in a Redis-protocol server.

Locations:

- ``redis://[:password@]host:port/db`` — a Redis server, database ``db``
  (the password is Redis' ``AUTH``);
- ``zdb://[:password@]host:port/namespace`` — a namespace of ThreeFold's 0-db
  in user-key mode. A namespace password (``NSSET ns password``) is proven with
  0-db's ``SELECT ns SECURE`` challenge, never sent in clear
  (``storage.backends.zdb``); give it in the URL or, better, as the spec's
  ``password`` or ``password_file`` field (``storage.backends.load``).

Durability is the server's: run Redis with ``appendonly yes`` and
``appendfsync always`` (or accept losing up to a second of writes with
``everysec``; the store's repair brings lost shares back while k remain).
0-db fsyncs according to its ``--sync`` / ``--synctime`` options.

Listing uses ``SCAN MATCH prefix*`` on Redis and ``SCANX`` on 0-db (its
``SCAN`` cursor is binary, which redis-py cannot parse; ``SCANX`` is the same
command under a name redis-py has no parser for).

No call is retried here and the socket timeout is only a backstop: the store
puts a deadline on every call that follows its size, and skips a backend that
failed until a health probe passes (``storage.health``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from storage.backends.keys import Buffer, check_key
from storage.backends.zdb import MAX_VALUE as ZDB_MAX_VALUE
from storage.backends.zdb import NamespaceInfo, ZdbConnection, parse_nsinfo
from storage.errors import BackendUnavailable, DeleteRefused
from storage.model import BackendHealth

T = TypeVar("T")

log = logging.getLogger("twin.storage")
MAX_VALUE = 512 * 1024 * 1024  # Redis' proto-max-bulk-len default
BACKSTOP_TIMEOUT = 30.0  # the store's own deadlines are far shorter
HEALTH_TIMEOUT = 1.5
_PROBE_KEY = "twin-probe"
_NO_SPACE = ("No space left", "OOM command not allowed")
_REFUSED_DELETE = ("worm mode", "temporarily locked", "temporarily frozen")


class RespBackend:
    kind = "resp"

    def __init__(self, name: str, location: str, *, password: str | None = None,
                 timeout: float = BACKSTOP_TIMEOUT) -> None:
        self.name = name
        parts = urlsplit(location)
        # the location is shown in status and logs: never with its password
        self.location = location.replace(f":{parts.password}@", ":***@") if parts.password \
            else location
        if parts.scheme not in ("redis", "zdb") or not parts.hostname:
            raise ValueError(f"backend {name}: location must be redis://host:port/db "
                             f"or zdb://host:port/namespace")
        if password is None and parts.password:
            password = unquote(parts.password)
        self.zdb = parts.scheme == "zdb"
        self.max_value = ZDB_MAX_VALUE if self.zdb else MAX_VALUE
        self.namespace: NamespaceInfo | None = None  # 0-db: from the last NSINFO
        common: dict[str, Any] = dict(
            host=parts.hostname, port=parts.port or 6379, socket_timeout=timeout,
            socket_connect_timeout=min(timeout, 5.0), max_connections=64,
            retry=Retry(NoBackoff(), 0))  # the store decides what to try next
        if self.zdb:
            self.ns = unquote(parts.path.lstrip("/")) or "default"
            pool = aioredis.ConnectionPool(
                connection_class=ZdbConnection, namespace=self.ns, ns_password=password,
                **common)
        else:
            db = parts.path.lstrip("/") or "0"
            if not db.isdigit():
                raise ValueError(f"backend {name}: redis database must be a number")
            self.ns = db
            pool = aioredis.ConnectionPool(db=int(db), password=password, **common)
        self._client = aioredis.Redis(connection_pool=pool)
        self._errors = 0
        self._full = False  # a write was refused for lack of space since the last health
        self._full_free: int | None = None  # free bytes then: full until there is more
        self._stale = False  # connections selected a namespace that is gone: reconnect

    def _fail(self, exc: Exception) -> BackendUnavailable:
        self._errors += 1
        if any(why in str(exc) for why in _NO_SPACE):
            self._full = True
        if self.zdb and "not available anymore" in str(exc):
            self._stale = True  # the namespace was deleted (and maybe made anew)
        log.warning("backend %s: %s", self.name, exc)
        return BackendUnavailable(self.name, str(exc))

    async def _call(self, call: Awaitable[T], missing: T) -> T:
        """``await call``, 0-db's "not found" error read as ``missing`` (where Redis
        answers nil or 0), and a server that cannot be used as BackendUnavailable."""
        try:
            return await call
        except ResponseError as exc:
            if self.zdb and "not found" in str(exc).lower():
                return missing
            raise self._fail(exc) from exc
        except (RedisError, OSError) as exc:
            raise self._fail(exc) from exc

    async def put(self, key: str, parts: Sequence[Buffer]) -> None:
        check_key(key)
        value = self._joined(parts)
        try:
            await self._client.set(key, value)
        except (RedisError, OSError) as exc:
            raise self._fail(exc) from exc

    async def put_many(self, items: Sequence[tuple[str, Sequence[Buffer]]]) -> list[bool]:
        """Every item as one pipelined batch of SETs: one round trip, not one per share.

        Plain SETs rather than MSET, because 0-db has no MSET; not a MULTI either, since
        each item stands alone (an item the server refuses is a False, the rest stand).
        """
        values: list[tuple[str, bytes]] = []
        for key, parts in items:
            check_key(key)
            values.append((key, self._joined(parts)))
        if not values:
            return []
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in values:
                    pipe.set(key, value)
                results: list[Any] = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            raise self._fail(exc) from exc
        refused = [r for r in results if isinstance(r, BaseException)]
        if refused:
            self._errors += 1
            self._full = self._full or any(w in str(r) for r in refused for w in _NO_SPACE)
            log.warning("backend %s: %d of %d writes refused: %s", self.name, len(refused),
                        len(results), refused[0])
        return [not isinstance(r, BaseException) for r in results]

    async def get(self, key: str) -> bytes | None:
        check_key(key)
        value: Any = await self._call(self._client.get(key), None)
        return None if value is None else bytes(value)

    async def delete(self, key: str) -> bool:
        """True if the key existed; ``DeleteRefused`` where 0-db's worm or lock forbids it."""
        check_key(key)
        try:
            return bool(await self._call(self._client.delete(key), 0))
        except BackendUnavailable as exc:
            if any(why in exc.detail for why in _REFUSED_DELETE):
                raise DeleteRefused(self.name, exc.detail) from exc
            raise

    async def list(self, prefix: str = "") -> AsyncIterator[str]:
        if prefix:
            check_key(prefix.rstrip("/") or "x")
        try:
            if self.zdb:
                async for key in self._list_zdb(prefix):
                    yield key
                return
            cursor: int = 0
            while True:
                cursor, keys = await self._client.scan(cursor, match=prefix + "*", count=1000)
                for key in keys:
                    yield key.decode("ascii", "replace")
                if cursor == 0:
                    return
        except (RedisError, OSError) as exc:
            raise self._fail(exc) from exc

    async def _list_zdb(self, prefix: str) -> AsyncIterator[str]:
        """0-db's ``SCANX``: ``[cursor, [[key, size, timestamp], ...]]`` per page, an
        error "No more data" after the last (an empty namespace answers that at once)."""
        cursor: bytes | None = None
        while True:
            try:
                args = ("SCANX",) if cursor is None else ("SCANX", cursor)
                reply: Any = await cast(Any, self._client).execute_command(*args)
            except ResponseError as exc:
                if "no more data" in str(exc).lower():
                    return
                raise
            if not (isinstance(reply, list) and len(reply) == 2
                    and isinstance(reply[0], bytes) and isinstance(reply[1], list)):
                raise ResponseError(f"unexpected SCANX answer {reply!r:.80}")
            cursor = reply[0]
            for entry in reply[1]:
                if isinstance(entry, list) and entry and isinstance(entry[0], bytes):
                    key = entry[0].decode("ascii", "replace")
                    if key.startswith(prefix):
                        yield key

    async def stat(self, key: str) -> int | None:
        check_key(key)
        if self.zdb:
            value = await self.get(key)
            return None if value is None else len(value)
        try:
            if not await self._client.exists(key):
                return None
            return int(await self._client.strlen(key))
        except (RedisError, OSError) as exc:
            raise self._fail(exc) from exc

    async def nsinfo(self) -> NamespaceInfo:
        """0-db: the namespace's mode, flags and room, kept in ``self.namespace``."""
        reply: Any = await cast(Any, self._client).execute_command("NSINFO", self.ns)
        self.namespace = parse_nsinfo(reply)
        return self.namespace

    async def delete_refusal(self) -> str | None:
        """Why this backend would refuse a delete now (0-db worm or lock), asked fresh."""
        if not self.zdb:
            return None
        try:
            return (await self.nsinfo()).refuses_delete
        except (RedisError, OSError, ValueError) as exc:
            raise self._fail(exc) from exc

    async def check_usable(self) -> None:
        """Raise ValueError if this backend can never hold shares (0-db in seq mode).

        An unreachable server is not refused: it may come back (reads use the others)."""
        if not self.zdb:
            return
        try:
            info = await asyncio.wait_for(self.nsinfo(), HEALTH_TIMEOUT)
        except (RedisError, OSError, TimeoutError, ValueError) as exc:
            log.warning("backend %s: cannot read NSINFO at start: %s", self.name, exc)
            return
        if info.unusable:
            raise ValueError(f"backend {self.name} ({self.location}): {info.unusable}")

    async def health(self) -> BackendHealth:
        try:
            return await asyncio.wait_for(self._health(), HEALTH_TIMEOUT)
        except (RedisError, OSError, TimeoutError, ValueError) as exc:
            self._errors += 1
            detail = str(exc) or f"no answer in {HEALTH_TIMEOUT} s"
            return BackendHealth(self.name, self.kind, self.location, False, None, self._errors,
                                 detail)

    async def _health(self) -> BackendHealth:
        client = cast(Any, self._client)
        if self._stale:
            self._stale = False
            await self._client.connection_pool.disconnect()
        await client.ping()
        free: int | None = None
        flags = ""
        writable = True
        detail = ""
        if self.zdb:
            info = await self.nsinfo()
            free, flags = info.free_bytes, info.flags()
            try:
                await client.get(_PROBE_KEY)  # a frozen namespace refuses reads
            except ResponseError as exc:
                if "not found" not in str(exc).lower():
                    return BackendHealth(self.name, self.kind, self.location, False, free,
                                         self._errors, str(exc), False, flags)
            if info.unusable or info.locked:
                writable, detail = False, info.unusable or "namespace is locked (read-only)"
            elif info.data_limit and self._no_room(free):
                writable, detail = False, "namespace is full (maxsize reached)"
        else:
            mem: Any = await self._client.info("memory")
            maxmemory = int(mem.get("maxmemory", 0))
            if maxmemory:
                free = max(0, maxmemory - int(mem.get("used_memory", 0)))
                if self._no_room(free) and mem.get("maxmemory_policy") == "noeviction":
                    writable, detail = False, "maxmemory reached (noeviction)"
        return BackendHealth(self.name, self.kind, self.location, True, free, self._errors,
                             detail, writable, flags)

    def _no_room(self, free: int | None) -> bool:
        """Full: nothing free, or no more free than when a write was refused for space."""
        if self._full:
            self._full, self._full_free = False, free
        if free is None:
            return False
        if free == 0 or (self._full_free is not None and free <= self._full_free):
            return True
        self._full_free = None
        return False

    async def close(self) -> None:
        await self._client.aclose()

    def _joined(self, parts: Sequence[Buffer]) -> bytes:
        value = b"".join(parts)
        if len(value) > self.max_value:
            raise ValueError(f"value of {len(value)} bytes is larger than backend {self.name} "
                             f"accepts ({self.max_value})")
        return value
