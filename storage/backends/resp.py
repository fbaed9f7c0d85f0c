"""``resp`` backend: shares as values in a Redis-protocol server.

Locations:

- ``redis://[:password@]host:port/db`` — a Redis server, database ``db``;
- ``zdb://[:password@]host:port/namespace`` — a 0-db server in user mode; the
  connection sends ``SELECT namespace`` (0-db namespaces are selected like Redis
  databases, by name), so each twin can own one namespace.

Durability is the server's: run Redis with ``appendonly yes`` and
``appendfsync always`` (or accept losing up to a second of writes with
``everysec``; the store's repair brings lost shares back while k remain).
0-db fsyncs according to its ``--sync`` / ``--synctime`` options.

Listing uses ``SCAN MATCH prefix*`` on Redis and 0-db's own cursor ``SCAN``
(entries ``[key, size, timestamp]``) on 0-db.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from storage.backends import Buffer, check_key
from storage.errors import BackendUnavailable
from storage.model import BackendHealth

T = TypeVar("T")

log = logging.getLogger("twin.storage")
MAX_VALUE = 512 * 1024 * 1024  # Redis' proto-max-bulk-len default


class RespBackend:
    kind = "resp"

    def __init__(self, name: str, location: str, *, timeout: float = 10.0) -> None:
        self.name = name
        parts = urlsplit(location)
        # the location is shown in status and logs: never with its password
        self.location = location.replace(f":{parts.password}@", ":***@") if parts.password \
            else location
        if parts.scheme not in ("redis", "zdb") or not parts.hostname:
            raise ValueError(f"backend {name}: location must be redis://host:port/db "
                             f"or zdb://host:port/namespace")
        self._zdb = parts.scheme == "zdb"
        db: str | int = unquote(parts.path.lstrip("/")) or ("default" if self._zdb else 0)
        if not self._zdb:
            if not str(db).isdigit():
                raise ValueError(f"backend {name}: redis database must be a number")
            db = int(db)
        self._client = aioredis.Redis(
            host=parts.hostname, port=parts.port or 6379, db=db,
            password=unquote(parts.password) if parts.password else None,
            socket_timeout=timeout, socket_connect_timeout=timeout,
            max_connections=64,
            # fail fast: the store reads other shares instead of waiting on a dead server
            retry=Retry(NoBackoff(), 1),
        )
        self._errors = 0

    def _fail(self, exc: Exception) -> BackendUnavailable:
        self._errors += 1
        log.warning("backend %s: %s", self.name, exc)
        return BackendUnavailable(self.name, str(exc))

    async def _call(self, call: Awaitable[T], missing: T) -> T:
        """``await call``, 0-db's "not found" error read as ``missing`` (where Redis
        answers nil or 0), and a server that cannot be used as BackendUnavailable."""
        try:
            return await call
        except ResponseError as exc:
            if self._zdb and "not found" in str(exc).lower():
                return missing
            raise self._fail(exc) from exc
        except (RedisError, OSError) as exc:
            raise self._fail(exc) from exc

    async def put(self, key: str, parts: Sequence[Buffer]) -> None:
        check_key(key)
        value = _joined(parts)
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
            values.append((key, _joined(parts)))
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
            log.warning("backend %s: %d of %d writes refused: %s", self.name, len(refused),
                        len(results), refused[0])
        return [not isinstance(r, BaseException) for r in results]

    async def get(self, key: str) -> bytes | None:
        check_key(key)
        value: Any = await self._call(self._client.get(key), None)
        return None if value is None else bytes(value)

    async def delete(self, key: str) -> bool:
        check_key(key)
        return bool(await self._call(self._client.delete(key), 0))

    async def list(self, prefix: str = "") -> AsyncIterator[str]:
        if prefix:
            check_key(prefix.rstrip("/") or "x")
        try:
            if self._zdb:
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
        cursor: bytes | None = None
        while True:
            try:
                args = ("SCAN",) if cursor is None else ("SCAN", cursor)
                reply: Any = await cast(Any, self._client).execute_command(*args)
            except ResponseError as exc:
                if "no more data" in str(exc).lower():
                    return
                raise
            cursor = reply[0]
            for entry in reply[1]:
                key = entry[0].decode("ascii", "replace")
                if key.startswith(prefix):
                    yield key

    async def stat(self, key: str) -> int | None:
        check_key(key)
        if self._zdb:
            value = await self.get(key)
            return None if value is None else len(value)
        try:
            if not await self._client.exists(key):
                return None
            return int(await self._client.strlen(key))
        except (RedisError, OSError) as exc:
            raise self._fail(exc) from exc

    async def health(self) -> BackendHealth:
        try:
            await cast(Any, self._client).ping()
            free: int | None = None
            if not self._zdb:
                info: Any = await self._client.info("memory")
                maxmemory = int(info.get("maxmemory", 0))
                if maxmemory:
                    free = max(0, maxmemory - int(info.get("used_memory", 0)))
            return BackendHealth(self.name, self.kind, self.location, True, free, self._errors)
        except (RedisError, OSError) as exc:
            self._errors += 1
            return BackendHealth(self.name, self.kind, self.location, False, None, self._errors,
                                 str(exc))

    async def close(self) -> None:
        await self._client.aclose()


def _joined(parts: Sequence[Buffer]) -> bytes:
    value = b"".join(parts)
    if len(value) > MAX_VALUE:
        raise ValueError(f"value of {len(value)} bytes is too large for a resp backend")
    return value
