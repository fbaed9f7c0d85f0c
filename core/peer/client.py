"""HTTP transport to other twins: one pooled httpx.AsyncClient, envelopes in batches.

Peers' certificates are self-signed, so this client does not verify them
(``verify=False``). That is acceptable here and ONLY here: TLS between twins
gives transport privacy (it hides who asks for what from the network), while
authenticity and confidentiality come from the envelopes themselves: every
envelope and ack is signed with the twin's phonebook key and its payload and
streams are encrypted to the recipient. A man in the middle can drop traffic,
never read or forge it. Do not copy this setting to any other client.

Why batches: one HTTP request costs this client about 2-3 ms of CPU (httpx,
httpcore's pool, TLS records), ten times the envelope's own crypto, so one
request per envelope caps a twin at a few hundred envelopes per second on a
small machine. ``deliver`` therefore queues envelopes per peer and lets at most
``LANES`` POSTs to ``/twin/v1/envelopes`` run at once; whatever queued while
they ran goes out together in the next one (up to ``MAX_BATCH`` envelopes or
``BATCH_BYTES``). A lone envelope leaves at once, so latency is unchanged when
idle; under load the HTTP cost is shared. Streamed answers (``content.get``)
keep the one-envelope endpoint (``exchange``).

Batches go through ``core.peer.http1``, not httpx: even shared by a batch,
httpx was a quarter of a sending twin's CPU per message.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from core.errors import Invalid, Unavailable
from core.peer import stream
from core.peer.errors import rejected
from core.peer.http1 import Origin

log = logging.getLogger("twin.peer")
ENVELOPE_PATH = "/twin/v1/envelope"
BATCH_PATH = "/twin/v1/envelopes"
MEDIA_TYPE = "application/x-twin-envelope"
BATCH_MEDIA_TYPE = "application/x-twin-envelopes"
MAX_REFUSAL = 256 * 1024
MAX_BATCH = 64  # envelopes in one POST; the receiver refuses more
BATCH_BYTES = 1024 * 1024  # a batch grows to this at most (a bigger envelope goes alone)
LANES = 4  # concurrent POSTs per peer: enough to keep both ends busy
MAX_PEERS = 1024  # batchers kept; the idle ones are dropped first
ACKED, REFUSED = 0, 1  # first byte of each answer frame in a batch


class Refused(Exception):
    """The peer answered with a refusal (parsed); ``ack`` set for a replay."""

    def __init__(self, code: str, message: str, ack: bytes | None) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.ack = code, message, ack

    def error(self) -> Exception:
        return rejected(self.code, self.message)


def parse_hosts(items: list[str]) -> dict[str, tuple[str, int | None]]:
    """``peer.hosts`` (``["bob.example=127.0.0.1:8443"]``) as domain -> (host, port)."""
    out: dict[str, tuple[str, int | None]] = {}
    for item in items:
        domain, sep, target = str(item).partition("=")
        host, colon, port = target.strip().rpartition(":")
        if not sep or not target.strip():
            raise Invalid(f"peer.hosts entry {item!r}: expected domain=host[:port]")
        if not colon or not port.isdigit():
            host, port = target.strip(), ""
        out[domain.strip().lower()] = (host, int(port) if port else None)
    return out


class _MappedTransport(httpx.AsyncHTTPTransport):
    """Connects to ``peer.hosts``' address for a mapped domain; the URL keeps the domain."""

    def __init__(self, hosts: dict[str, tuple[str, int | None]], **options: Any) -> None:
        super().__init__(**options)
        self.hosts = hosts

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = self.hosts.get(request.url.host)
        if target is not None:
            request.url = request.url.copy_with(host=target[0],
                                                port=target[1] or request.url.port)
        return await super().handle_async_request(request)


class PeerClient:
    def __init__(self, timeout: float, max_answer: int = 16 * 1024 * 1024,
                 hosts: list[str] | None = None) -> None:
        # Connections: LANES per peer for batches plus streams; fewer idle
        # connections keep httpcore's per-request pool scan short.
        self.http = httpx.AsyncClient(
            transport=_MappedTransport(
                parse_hosts(hosts or []),
                verify=False,  # see the module docstring: envelopes carry the security
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16)),
            timeout=httpx.Timeout(timeout),
            headers={"content-type": MEDIA_TYPE},
        )
        self.max_answer = max_answer
        self.timeout = timeout
        self.hosts = parse_hosts(hosts or [])
        self._batchers: OrderedDict[str, _Batcher] = OrderedDict()

    @asynccontextmanager
    async def exchange(self, endpoint: str, raw: bytes) -> AsyncIterator[httpx.Response]:
        """POST one envelope; yields the 200 response still streaming, or raises.

        ``Refused`` for a refusal, ``Unavailable`` when the peer cannot be reached.
        """
        url = endpoint.rstrip("/") + ENVELOPE_PATH
        try:
            async with self.http.stream("POST", url, content=raw) as resp:
                if resp.status_code != 200:
                    raise _refused(resp.status_code, await _read_capped(resp))
                yield resp
        except httpx.TransportError as exc:
            raise Unavailable(f"peer at {endpoint} unreachable: {type(exc).__name__}") from exc

    async def deliver(self, endpoint: str, raw: bytes) -> bytes:
        """Send one envelope that is answered by an ack alone; returns the raw ack.

        Raises ``Refused`` or ``Unavailable`` like ``exchange``. Batched with
        whatever else is on its way to the same peer (see the module docstring).
        """
        key = endpoint.rstrip("/")
        batcher = self._batchers.get(key)
        if batcher is None:
            batcher = self._batchers[key] = _Batcher(self, key)
            if len(self._batchers) > MAX_PEERS:
                for old, b in list(self._batchers.items()):
                    if b.idle and old != key:
                        del self._batchers[old]
                        b.close()
                        break
        else:
            self._batchers.move_to_end(key)
        return await batcher.submit(raw)

    async def _single(self, endpoint: str, raw: bytes) -> bytes:
        """The one-envelope endpoint, for peers that do not take batches."""
        async with self.exchange(endpoint, raw) as resp:
            frames = stream.FrameReader(resp.aiter_raw(), max_frame=self.max_answer)
            first = await frames.next()
            # read to the end: a half-read response cannot go back to the pool
            if first is None or await frames.next() is not None:
                raise Invalid(f"peer at {endpoint} did not answer with one ack")
        return first

    async def close(self) -> None:
        for batcher in self._batchers.values():
            batcher.close()
        self._batchers.clear()
        await self.http.aclose()


class _Batcher:
    """The queue of envelopes for one peer and the POSTs that drain it."""

    def __init__(self, client: PeerClient, endpoint: str) -> None:
        self.client = client
        self.endpoint = endpoint
        self.url = endpoint + BATCH_PATH
        self.queue: deque[tuple[bytes, asyncio.Future[bytes]]] = deque()
        self.lanes = 0
        self.batches = True  # False once the peer showed it has no batch endpoint
        self._tasks: set[asyncio.Task[None]] = set()
        self.origin = _origin(endpoint, client)

    @property
    def idle(self) -> bool:
        return not self.queue and self.lanes == 0

    async def submit(self, raw: bytes) -> bytes:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.queue.append((raw, future))
        if self.lanes < LANES:
            self.lanes += 1
            task = asyncio.create_task(self._drain(), name=f"peer-batch {self.endpoint}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    def close(self) -> None:
        """Fail what is still queued, stop the POSTs in flight, drop kept connections."""
        if self.origin is not None:
            self.origin.close()
        while self.queue:
            _, future = self.queue.popleft()
            if not future.done():
                future.set_exception(Unavailable(f"sending to {self.endpoint} was stopped"))
        for task in list(self._tasks):
            task.cancel()

    def _take(self) -> list[tuple[bytes, asyncio.Future[bytes]]]:
        batch: list[tuple[bytes, asyncio.Future[bytes]]] = []
        size = 0
        while self.queue and len(batch) < MAX_BATCH:
            raw, future = self.queue[0]
            if batch and size + len(raw) > BATCH_BYTES:
                break
            self.queue.popleft()
            if not future.done():  # its caller gave up (cancelled): do not send it
                batch.append((raw, future))
                size += len(raw)
        return batch

    async def _drain(self) -> None:
        try:
            while self.queue:
                batch = self._take()
                if not batch:
                    continue
                try:
                    if self.batches:
                        await self._post(batch)
                    else:
                        await asyncio.gather(*(self._one(raw, f) for raw, f in batch))
                except BaseException as exc:  # every waiter learns why
                    failure = exc if isinstance(exc, Exception) else Unavailable(
                        f"sending to {self.endpoint} was cancelled")
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(failure)
                    if failure is not exc:
                        raise
        finally:
            self.lanes -= 1

    async def _one(self, raw: bytes, future: asyncio.Future[bytes]) -> None:
        try:
            ack = await self.client._single(self.endpoint, raw)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(ack)

    async def _post(self, batch: list[tuple[bytes, asyncio.Future[bytes]]]) -> None:
        body = b"".join(stream.frame(raw) for raw, _ in batch)
        if self.origin is None:
            return await self._post_httpx(batch, body)
        max_frame = self.client.max_answer + 1  # an ack or a refusal, and its type byte
        answer = await self.origin.post(BATCH_PATH, body, BATCH_MEDIA_TYPE,
                                        max(len(batch) * (max_frame + 4), MAX_REFUSAL))
        if answer.status != 200:
            refusal = answer.body[:MAX_REFUSAL]
            if answer.status not in (404, 405) or _is_refusal(refusal):
                raise _refused(answer.status, refusal)
            await self._no_batches(batch)
            return
        try:
            frames = stream.split_frames(answer.body, len(batch))
        except Invalid:
            raise Invalid(f"peer at {self.endpoint} answered a batch with more or broken "
                          "frames") from None
        if len(frames) != len(batch) or not all(0 < len(f) <= max_frame for f in frames):
            raise Invalid(f"peer at {self.endpoint} answered a batch short")
        for (_, future), answer_frame in zip(batch, frames, strict=True):
            _settle(future, answer_frame)

    async def _no_batches(self, batch: list[tuple[bytes, asyncio.Future[bytes]]]) -> None:
        log.info("peer at %s takes no batches; sending one by one", self.endpoint)
        self.batches = False
        await asyncio.gather(*(self._one(raw, f) for raw, f in batch))

    async def _post_httpx(self, batch: list[tuple[bytes, asyncio.Future[bytes]]],
                          body: bytes) -> None:
        """The batch through httpx, for an endpoint ``core.peer.http1`` does not take."""
        try:
            async with self.client.http.stream(
                    "POST", self.url, content=body,
                    headers={"content-type": BATCH_MEDIA_TYPE}) as resp:
                if resp.status_code != 200:
                    refusal = await _read_capped(resp)
                    if resp.status_code not in (404, 405) or _is_refusal(refusal):
                        raise _refused(resp.status_code, refusal)
                    await self._no_batches(batch)
                    return
                frames = stream.FrameReader(resp.aiter_raw(),
                                            max_frame=self.client.max_answer + 1)
                for _, future in batch:
                    answer = await frames.next()
                    if answer is None or not answer:
                        raise Invalid(f"peer at {self.endpoint} answered a batch short")
                    _settle(future, answer)
                if await frames.next() is not None:
                    raise Invalid(f"peer at {self.endpoint} answered more than it was sent")
        except httpx.TransportError as exc:
            raise Unavailable(
                f"peer at {self.endpoint} unreachable: {type(exc).__name__}") from exc


def _settle(future: asyncio.Future[bytes], answer: bytes) -> None:
    """One batch answer frame: ``ACKED | ack`` or ``REFUSED | JSON refusal``."""
    if future.done():
        return
    if answer[0] == ACKED:
        future.set_result(answer[1:])
    elif answer[0] == REFUSED:
        future.set_exception(_refused(0, answer[1:]))
    else:
        future.set_exception(Invalid("peer sent a batch answer of unknown type"))


async def _read_capped(resp: httpx.Response) -> bytes:
    out = bytearray()
    async for chunk in resp.aiter_bytes():
        out += chunk
        if len(out) > MAX_REFUSAL:
            break
    return bytes(out)


def _is_refusal(body: bytes) -> bool:
    try:
        return isinstance(json.loads(body).get("code"), str)
    except (ValueError, AttributeError, RecursionError):  # RecursionError: deep nesting
        return False


def _refused(status: int, body: bytes) -> Refused:
    try:
        data = json.loads(body)
        code, message = str(data["code"]), str(data.get("message", ""))[:500]
        ack = base64.b64decode(data["ack"]) if data.get("ack") else None
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return Refused("unavailable", f"peer answered HTTP {status} without a refusal", None)
    return Refused(code, message, ack)


def _origin(endpoint: str, client: PeerClient) -> Origin | None:
    """The keep-alive batch connection to ``endpoint``; None when it is not an
    http(s) URL (the httpx path is then taken, and says why it cannot send)."""
    try:
        return Origin(endpoint, timeout=client.timeout,
                      address=client.hosts.get(httpx.URL(endpoint).host))
    except (Invalid, httpx.InvalidURL):
        return None
