"""The peer part of a twin: send, receive, acks, the outbox worker, remote content.

See ``core/peer/__init__.py`` for the public contract. Receiving is one
straight line of checks (``receive``), each refusing with its own code:

    size -> version -> sender known -> signature -> body shape -> recipient
    -> clock skew -> expiry -> sender rate -> replay -> payload decrypts
    -> kind known -> handler (which asks core.acl.Access)

and every answer is a signed ``ack`` envelope encrypted to the sender, naming
the uid it answers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import dataclasses
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2

from core.acl import normalize
from core.config import Config
from core.db import Database
from core.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    PeerRejected,
    TwinError,
    Unavailable,
)
from core.identity import Identity
from core.peer import bundle, stream
from core.peer import envelope as env
from core.peer.bundler import Bundler, NoBundles
from core.peer.client import PeerClient, Refused
from core.peer.content import ContentEntry
from core.peer.errors import PERMANENT, Refusal
from core.peer.inbox import Inbox
from core.peer.kinds import (
    KINDS,
    AckHandler,
    BounceHandler,
    Handler,
    MessageListener,
    Registry,
    Streamed,
    StreamHandler,
)
from core.peer.outbox import Outbox, Pending, backoff
from core.peer.replay import PURGE_EVERY, RateLimit, ReplayGuard
from core.peer.replay import Bounds as ReplayBounds
from phonebook.pins import pk_matches
from phonebook.record import TwinRecord

log = logging.getLogger("twin.peer")
REPLAY_FILE = "peer-replay.db"
MAX_INFLIGHT = 256  # deliveries at once: the client batches them (LANES x MAX_BATCH)
RECORD_MEMO = 5.0  # seconds a resolved peer record is reused without asking the phonebook
MAX_MEMO = 4096

# The envelope being handled, for handlers that make themselves idempotent by uid.
current_envelope: contextvars.ContextVar[env.Envelope] = contextvars.ContextVar("envelope")


@dataclass
class Answer:
    """What the peer API sends back: the ack, then (content.get) an encrypted stream."""

    ack: bytes
    stream: AsyncIterator[bytes | memoryview] | None = None
    length: int | None = None  # of the whole answer (ack frame + stream), when known


@dataclass(frozen=True)
class _Keep:
    """How long a replay mark is kept, and until when it must not be evicted."""

    until: float
    replay_until: float


@dataclass
class _Opened:
    """A verified ack from a peer."""

    result: Any
    stream_key: bytes | None = None
    stream_header: bytes | None = None


@dataclass(frozen=True)
class PeerSettings:
    """What ``[peer]`` in twin.toml says, read once (``from_config``)."""

    max_envelope: int
    max_skew: int
    ttl: int
    max_ttl: int
    dedup_keep: int
    retry_schedule: tuple[float, ...]
    give_up_after: int
    poll: float
    timeout: float
    hosts: tuple[str, ...]
    rate_per_minute: int
    max_put: int
    replay: ReplayBounds
    memo_ttl: float  # how long a resolved record is reused, at most the phonebook cache's

    @classmethod
    def from_config(cls, conf: Config) -> PeerSettings:
        return cls(
            max_envelope=conf.int("peer.max_envelope"), max_skew=conf.int("peer.max_skew"),
            ttl=conf.int("peer.ttl"), max_ttl=conf.int("peer.max_ttl"),
            dedup_keep=conf.int("peer.dedup_keep"),
            retry_schedule=tuple(float(s) for s in conf.list("peer.retry_schedule")),
            give_up_after=conf.int("peer.give_up_after"), poll=conf.float("peer.outbox_poll"),
            timeout=conf.float("peer.timeout"),
            hosts=tuple(str(h) for h in conf.list("peer.hosts")),
            rate_per_minute=conf.int("peer.rate_per_minute"), max_put=conf.int("peer.max_put"),
            replay=ReplayBounds(max_ack=conf.int("peer.max_stored_ack"),
                                ack_budget=conf.int("peer.replay_ack_budget"),
                                per_sender=conf.int("peer.replay_per_sender")),
            memo_ttl=min(RECORD_MEMO, float(conf.int("phonebook.cache_ttl"))))


class Peer:
    """Sends and receives envelopes; the parts that own kinds install their handlers.

    Collaborators are handed in, not looked up: the twin's ``name`` as other
    twins find it, its ``identity``, the database holding the outbox and the
    peer inbox, ``data_dir`` for the replay store, and ``resolve`` / ``forget``
    for the phonebook (a record by name; drop cached records)."""

    def __init__(self, *, name: str, identity: Identity, db: Database, data_dir: Path,
                 settings: PeerSettings, resolve: Callable[[str], Awaitable[TwinRecord]],
                 forget: Callable[[], None]) -> None:
        self.name = name
        self.identity = identity
        self.boxes = env.Boxes(identity)
        self.kinds = Registry()
        self.outbox = Outbox(db)
        self.inbox = Inbox(db)
        self.replay = ReplayGuard(Path(data_dir) / REPLAY_FILE, settings.replay)
        self.settings = settings
        self.max_ttl = settings.max_ttl
        self.rate = RateLimit(settings.rate_per_minute)
        self.max_envelope = settings.max_envelope
        self.max_skew = settings.max_skew
        self.ttl = settings.ttl
        self.dedup_keep = settings.dedup_keep
        self.retry_schedule = list(settings.retry_schedule)
        self.give_up_after = settings.give_up_after
        self.poll = settings.poll
        self.timeout = settings.timeout
        self.max_put = settings.max_put
        self._resolve_record = resolve
        self._forget = forget
        self._client: PeerClient | None = None
        self._wake = asyncio.Event()
        self._fresh: deque[Pending] = deque()  # sent, not yet seen by the outbox worker
        self._backlog = False  # due rows were left in the table: every slot was taken
        self._retry_at = math.inf  # a failed delivery is retried from the table then
        self._records: dict[str, tuple[float, TwinRecord]] = {}
        self._memo_ttl = settings.memo_ttl
        self._message_listeners: list[MessageListener] = []
        self._bundler: Bundler[_Opened] = Bundler(self._deliver_one, self._deliver_bundle)
        self.register("message", self._on_message)
        self.register("ping", self._on_ping)
        self.register(bundle.KIND, self._on_bundle)
        self.on_bounce("message", self._on_message_bounce)

    # -- public API (see core/peer/__init__.py)

    def register(self, kind: str, handler: Handler) -> None:
        self.kinds.register(kind, handler)

    def on_bounce(self, kind: str, handler: BounceHandler) -> None:
        self.kinds.on_bounce(kind, handler)

    def register_stream(self, kind: str, handler: StreamHandler) -> None:
        """A kind answered with an encrypted stream after its ack (``content.get``)."""
        self.kinds.register_stream(kind, handler)

    def on_ack(self, kind: str, handler: AckHandler) -> None:
        """``handler(recipient, payload, result)`` once an outbox envelope is acked."""
        self.kinds.on_ack(kind, handler)

    def on_message(self, listener: MessageListener) -> None:
        """``listener(sender, uid, text)`` after a new native message is in the peer
        inbox (the mail router copies it into the mail Inbox); a failing listener
        is logged, the message stays stored."""
        self._message_listeners.append(listener)

    async def send(self, to: str, kind: str, payload: Any) -> str:
        """Durably queue ``payload`` for ``to``; returns the uid (hex)."""
        self.kinds.kind(kind)
        _check_pk(await self._resolve(to))  # an unknown recipient fails now, not in days
        item = await self.outbox.add(to, kind, payload)
        log.debug("queued %s envelope %s for %s", kind, item.uid.hex(), to)
        if len(self._fresh) < MAX_INFLIGHT:
            self._fresh.append(item)
        else:  # no worker, or one far behind: the table has it
            self._backlog = True
        self._wake.set()
        return item.uid.hex()

    async def request(self, to: str, kind: str, payload: Any) -> Any:
        """One signed request, its verified answer; raises PeerRejected or Unavailable."""
        if self.kinds.kind(kind).stream:
            raise Invalid(f"{kind} answers with a stream: use content_get")
        record = await self._resolve(to)
        opened = await self._exchange(record, kind, payload, env.new_uid())
        return opened.result

    async def content_list(self, twin: str, path: str) -> list[ContentEntry]:
        result = await self.request(twin, "content.list", {"path": normalize(path)})
        if not isinstance(result, list):
            raise Invalid("peer sent a malformed listing")
        return [ContentEntry.from_wire(e) for e in result[:100_000]]

    async def content_get(self, twin: str, path: str, start: int = 0,
                          end: int | None = None) -> AsyncIterator[bytes]:
        """Stream (a range of) ``path`` from ``twin``, verified chunk by chunk."""
        record = await self._resolve(twin)
        payload = {"path": normalize(path), "start": start, "end": end}
        if not record.endpoints:
            raise Unavailable(f"twin {record.name} publishes no endpoint")
        uid = env.new_uid()
        raw = self._seal(record, "content.get", payload, uid)
        async with self._exchanging(record, raw) as resp:
            frames = stream.FrameReader(resp.aiter_raw())
            first = await frames.next()
            if first is None:
                raise Invalid(f"{twin} sent an empty answer")
            opened = self._open_ack(record, first, uid)
            if opened.stream_key is None or opened.stream_header is None:
                raise Invalid(f"{twin} answered content.get without a stream")
            result = opened.result
            if not isinstance(result, dict) or type(result.get("end")) is not int \
                    or type(result.get("start")) is not int:
                raise Invalid(f"{twin} answered content.get with a malformed header")
            want = result["end"] - result["start"]
            dec = stream.Decryptor(opened.stream_key, opened.stream_header)
            got = 0
            while not dec.finished:
                sealed = await frames.next()
                if sealed is None:
                    raise Invalid(f"stream from {twin} was cut short")
                plain = (await asyncio.to_thread(dec.pull, sealed)
                         if len(sealed) > stream.INLINE else dec.pull(sealed))
                got += len(plain)
                if plain:
                    yield plain
            if await frames.next() is not None or got != want:
                raise Invalid(f"stream from {twin} does not match its announced length")

    async def _resolve(self, name: str) -> TwinRecord:
        """``service.resolve`` behind a memo of a few seconds.

        Every envelope sent or received needs its peer's record; the phonebook
        caches it anyway (``phonebook.cache_ttl``), but reaching that cache
        costs a thread hop per envelope. The memo never outlives the phonebook
        cache's own validity and is dropped whenever the phonebook is.
        """
        now = time.monotonic()
        hit = self._records.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        record = await self._resolve_record(name)
        if len(self._records) >= MAX_MEMO:
            self._records.clear()
        self._records[name] = (now + self._memo_ttl, record)
        return record

    def _forget_records(self) -> None:
        self._records.clear()
        self._forget()

    # -- sending

    @property
    def client(self) -> PeerClient:
        if self._client is None:
            self._client = PeerClient(self.timeout, max_answer=self.max_envelope,
                                      hosts=list(self.settings.hosts))
        return self._client

    def _seal(self, record: TwinRecord, kind: str, value: Any, uid: bytes) -> bytes:
        _check_pk(record)
        return env.seal(self.identity, self.boxes, sender=self.name, recipient=record.name,
                        recipient_key=record.public_key, kind=kind, value=value,
                        ttl=self.ttl, uid=uid)

    @contextlib.asynccontextmanager
    async def _exchanging(self, record: TwinRecord, raw: bytes) -> AsyncIterator[Any]:
        try:
            async with self.client.exchange(record.endpoints[0], raw) as resp:
                yield resp
        except Refused as refused:
            raise refused.error() from None

    async def _exchange(self, record: TwinRecord, kind: str, value: Any,
                        uid: bytes) -> _Opened:
        if not record.endpoints:
            raise Unavailable(f"twin {record.name} publishes no endpoint")
        raw = self._seal(record, kind, value, uid)
        try:
            ack = await self.client.deliver(record.endpoints[0], raw)
        except Refused as refused:
            if refused.code == "replay" and refused.ack:
                # delivered before: the peer's first ack, as old as that delivery
                return self._open_ack(record, refused.ack, uid, fresh=False)
            raise refused.error() from None
        return self._open_ack(record, ack, uid)

    def _open_ack(self, record: TwinRecord, raw: bytes, uid: bytes, *,
                  fresh: bool = True) -> _Opened:
        """Verify an ack: from the peer we asked, to us, naming our uid, and (``fresh``)
        stamped now, give or take ``peer.max_skew``, and not expired.

        A stale ack can only be the peer's genuine ack for this very uid (it is
        signed and names the uid), so accepting one would not be a forgery; it
        is still refused, because a fresh answer is what was asked for and an
        old one means someone replays traffic. The exception is the ack that
        comes back with a ``replay`` refusal: the peer stored it at the first
        delivery, so it is as old as that (``fresh=False``).
        """
        try:
            sig, body = env.split(raw)
            if env.peek_sender(body) != record.name:
                raise Refusal("unknown_sender", "ack from another twin")
            env.verify(sig, body, record.public_key)
            ack = env.parse(body)
            value = self.boxes.decrypt(record.public_key, ack.payload)
        except Refusal as exc:
            raise Invalid(f"bad ack from {record.name}: {exc.code}") from None
        if ack.kind != "ack" or ack.recipient != self.name or not isinstance(value, dict) \
                or value.get("uid") != uid:
            raise Invalid(f"ack from {record.name} does not answer our envelope")
        now = time.time()
        if fresh and (ack.timestamp > now + self.max_skew
                      or ack.expires + self.max_skew < now):
            raise Invalid(f"stale ack from {record.name}: stamped {now - ack.timestamp:.0f}s "
                          f"ago with a ttl of {ack.ttl}s")
        s = value.get("stream")
        if s is None:
            return _Opened(value.get("result"))
        # typed before use: bytes() of a forged integer would allocate that many zeros
        key = s.get("key") if isinstance(s, dict) else None
        header = s.get("header") if isinstance(s, dict) else None
        if type(key) is not bytes or len(key) != stream.KEY_LEN \
                or type(header) is not bytes or len(header) != stream.HEADER_LEN:
            raise Invalid(f"ack from {record.name} carries a malformed stream key")
        return _Opened(value.get("result"), key, header)

    # -- the outbox worker

    async def run_outbox(self) -> None:
        """Deliver queued envelopes until cancelled.

        What ``send`` queues is handed over in memory (``_fresh``) and leaves at
        once; the table is scanned only for what memory does not know: rows an
        earlier run left, retries coming due, and messages that found every
        delivery slot taken (``_backlog``). Scanning on every send and every
        ack, as this once did, cost two database round trips per wake-up and
        spun every 10 ms while anything was in flight (the rows in flight were
        "due"), on the thread the 250's commit needs."""
        running: set[bytes] = set()
        tasks: set[asyncio.Task[None]] = set()

        async def one(item: Pending) -> None:
            try:
                await self._deliver(item)
            except Exception:
                log.exception("outbox: delivering %s failed unexpectedly", item.uid.hex())
            finally:
                running.discard(item.uid)
                if self._backlog and len(running) <= MAX_INFLIGHT // 2:
                    self._wake.set()

        def start(item: Pending) -> None:
            running.add(item.uid)
            task = asyncio.create_task(one(item), name=f"outbox-{item.uid.hex()[:8]}")
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        next_scan = 0.0  # at once: rows queued before this run
        last_purge = 0.0
        while True:
            self._wake.clear()
            while self._fresh:
                item = self._fresh.popleft()
                if len(running) >= MAX_INFLIGHT:  # it is in the table: a later scan takes it
                    self._fresh.clear()
                    self._backlog = True
                elif item.uid not in running:
                    start(item)
            now = time.time()
            if now >= min(next_scan, self._retry_at) or (
                    self._backlog and len(running) <= MAX_INFLIGHT // 2):
                next_scan = now + self.poll
                self._retry_at = math.inf
                try:
                    free = MAX_INFLIGHT - len(running)
                    self._backlog = False  # unless this scan, or a send meanwhile, leaves rows
                    due = await self.outbox.due(now, free, frozenset(running))
                    self._backlog = self._backlog or len(due) >= free
                    fresh = {item.uid for item in self._fresh}  # queued during the scan
                    for item in due:
                        if item.uid not in running and item.uid not in fresh:
                            start(item)
                    if now - last_purge > PURGE_EVERY:
                        last_purge = now
                        await self.replay.purge()
                    nxt = await self.outbox.next_due(after=now)
                    if nxt is not None:
                        next_scan = min(next_scan, nxt)
                except Exception:  # a locked or failing db must not end the worker
                    log.exception("outbox: scan failed; trying again")
            wait = min(next_scan, self._retry_at) - time.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 0.01))

    async def _deliver(self, item: Pending) -> None:
        try:
            record = await self._resolve(item.recipient)
            opened = await self._bundler.deliver(record, item)
        except (PeerRejected, Invalid, NotFound, Forbidden, Conflict, Unavailable) as exc:
            code = getattr(exc, "code", "error")
            if isinstance(exc, Unavailable):
                # the peer may have moved (a restart on a new port): look it up afresh
                self._forget_records()
            permanent = isinstance(exc, PeerRejected) and code in PERMANENT
            if permanent or time.time() - item.created >= self.give_up_after:
                if await self.outbox.remove(item.uid):
                    log.warning("outbox: %s to %s bounced after %d attempts: %s",
                                item.uid.hex(), item.recipient, item.attempts + 1, exc)
                    await self._bounce(item, str(exc))
                return
            delay = backoff(self.retry_schedule, item.attempts + 1)
            await self.outbox.retry_later(item.uid, time.time() + delay, str(exc))
            self._retry_at = min(self._retry_at, time.time() + delay)
            self._wake.set()  # the worker may be asleep until later than that
            log.info("outbox: %s to %s failed (%s); retry in %.1fs", item.uid.hex(),
                     item.recipient, code, delay)
            return
        if await self.outbox.remove(item.uid):
            log.debug("outbox: %s delivered to %s (acked)", item.uid.hex(), item.recipient)
            handler = self.kinds.ack_handler(item.kind)
            if handler is not None:
                try:
                    await handler(item.recipient, item.value, opened.result)
                except Exception:
                    log.exception("outbox: ack handler for %s failed", item.kind)

    async def _deliver_one(self, record: TwinRecord, item: Pending) -> _Opened:
        return await self._exchange(record, item.kind, item.value, item.uid)

    async def _deliver_bundle(self, record: TwinRecord, items: list[Pending]
                              ) -> list[_Opened | Exception]:
        """``items`` in one bundle envelope (``core.peer.bundle``): one outcome each."""
        packed = bundle.pack([bundle.Item(i.uid, i.kind, i.value) for i in items])
        try:
            opened = await self._exchange(record, bundle.KIND, packed, env.new_uid())
        except PeerRejected as exc:
            if exc.code in ("unknown_kind", "too_large"):
                raise NoBundles(str(exc)) from exc
            raise
        try:
            answers = bundle.parse_answers(opened.result, len(items))
        except ValueError as exc:
            raise Invalid(f"bad bundle ack from {record.name}: {exc}") from None
        out: list[_Opened | Exception] = []
        for item, answer in zip(items, answers, strict=True):
            if answer.error is not None:
                out.append(answer.error)
            elif answer.replay_ack is not None:
                try:  # handled before in an envelope of its own: that envelope's ack
                    out.append(self._open_ack(record, answer.replay_ack, item.uid, fresh=False))
                except Invalid as exc:
                    out.append(exc)
            else:
                out.append(_Opened(answer.result))
        return out

    async def _bounce(self, item: Pending, reason: str) -> None:
        handler = self.kinds.bounce_handler(item.kind)
        if handler is None:
            log.warning("outbox: no bounce handler for kind %s", item.kind)
            return
        try:
            await handler(item.recipient, item.value, reason)
        except Exception:
            log.exception("outbox: bounce handler for %s failed", item.kind)

    # -- receiving

    async def receive(self, raw: bytes, *, stream_ok: bool = True) -> Answer:
        """Check one envelope and hand it to its kind's handler (see module docstring).

        ``stream_ok=False`` (a batch) refuses kinds answered with a stream."""
        sender = "?"
        parsed: list[env.Envelope] = []  # the envelope, once it is verified and parsed
        started = time.monotonic()
        try:
            if len(raw) > self.max_envelope:
                raise Refusal("too_large", f"envelope over {self.max_envelope} bytes")
            sig, body = env.split(raw)
            sender = env.peek_sender(body)
            answer = await self._receive(sender, sig, body, stream_ok, parsed)
        except Refusal as refusal:
            log_envelope(sender, parsed, started, refusal)
            raise
        log_envelope(sender, parsed, started)
        return answer

    async def _receive(self, sender: str, sig: bytes, body: bytes, stream_ok: bool,
                       parsed: list[env.Envelope]) -> Answer:
        record = await self._sender_record(sender)
        env.verify(sig, body, record.public_key)
        e = env.parse(body)
        parsed.append(e)
        if e.sender != record.name:
            raise Refusal("malformed", "envelope 'from' does not name the signer")
        if e.recipient != self.name:
            raise Refusal("wrong_recipient", f"envelope is for {e.recipient!r}")
        if e.ttl > self.max_ttl:  # the sender would choose how long we remember it
            raise Refusal("malformed", f"ttl {e.ttl}s over this twin's peer.max_ttl "
                                       f"({self.max_ttl}s)")
        now = time.time()
        if e.timestamp > now + self.max_skew:
            raise Refusal("clock_skew", f"timestamp {e.timestamp - now:.0f}s in the future")
        if e.expires + self.max_skew < now:
            raise Refusal("expired", f"envelope expired {now - e.expires:.0f}s ago")
        if e.timestamp < now - self.max_skew:
            # twins seal every attempt afresh, so an old stamp is a replay or a wrong
            # clock; refusing it also bounds how long a uid must guard against replays
            raise Refusal("clock_skew", f"timestamp {now - e.timestamp:.0f}s in the past")
        self.rate.take(record.name)
        kind = KINDS.get(e.kind)
        if kind is not None and kind.stream and not stream_ok:
            raise Refusal("invalid", f"{e.kind} is answered with a stream: send it alone")
        try:
            await self.replay.claim(record.name, e.uid)
        except Refusal as refusal:
            raise self._replay_from_bundle(record, e.uid, refusal) from None
        try:
            value = self.boxes.decrypt(record.public_key, e.payload)
            if kind is None or not self.kinds.handles(kind.name):
                raise Refusal("unknown_kind", f"this twin does not take {e.kind!r}")
            answer = await self._dispatch(record, e, value)
        except TwinError as exc:
            self.replay.release(record.name, e.uid)
            raise Refusal.from_error(exc) from exc
        except BaseException:
            self.replay.release(record.name, e.uid)
            raise
        keep = self._keep(e, now)
        await self.replay.done(record.name, e.uid, keep.until, answer.ack,
                               replay_until=keep.replay_until)
        return answer

    def _keep(self, e: env.Envelope, now: float) -> _Keep:
        return _Keep(max(e.expires + self.max_skew, now + self.dedup_keep),
                     min(e.timestamp, e.expires) + self.max_skew + 1)

    def _replay_from_bundle(self, record: TwinRecord, uid: bytes, refusal: Refusal) -> Refusal:
        """A replay of a uid first handled in a bundle carries that item's result, kept
        unsigned: it goes back in an ack signed now (any other refusal as it is)."""
        if refusal.ack is None or not bundle.is_stored_result(refusal.ack):
            return refusal
        result = bundle.stored_result(refusal.ack)
        return Refusal("replay", refusal.message,
                       ack=self._ack(record, uid, {"uid": uid, "result": result}))

    async def _sender_record(self, sender: str) -> TwinRecord:
        try:
            return await self._resolve(sender)
        except (NotFound, Forbidden):
            raise Refusal("unknown_sender", f"no valid phonebook record for {sender!r}") \
                from None
        except Conflict:
            raise Refusal("sender_key_changed", f"{sender!r} changed its key") from None
        except Unavailable:
            raise Refusal("unavailable", "phonebook unreachable") from None

    async def _dispatch(self, record: TwinRecord, e: env.Envelope, value: Any) -> Answer:
        streamer = self.kinds.stream_handler(e.kind)
        if streamer is not None:
            token = current_envelope.set(e)
            try:
                return self._streamed(record, e, await streamer(record, value))
            finally:
                current_envelope.reset(token)
        result = await self._handle(record, e, value)
        return Answer(self._ack(record, e.uid, {"uid": e.uid, "result": result}))

    async def _handle(self, record: TwinRecord, e: env.Envelope, value: Any) -> Any:
        """The kind's handler, with ``current_envelope`` set to ``e``."""
        token = current_envelope.set(e)
        try:
            handler = self.kinds.handler(e.kind)
            assert handler is not None
            return await handler(record, value)
        finally:
            current_envelope.reset(token)

    def _streamed(self, record: TwinRecord, e: env.Envelope, out: Streamed) -> Answer:
        """The ack carries the header and a fresh stream key; the body follows it,
        sealed frame by frame (``core.peer.stream``)."""
        key = stream.new_key()
        enc = stream.Encryptor(key)
        ack = self._ack(record, e.uid, {"uid": e.uid, "result": out.result,
                                        "stream": {"key": key, "header": enc.header}})
        return Answer(ack, stream.seal_frames(out.body, enc, out.size),
                      len(stream.frame(ack)) + stream.sealed_size(out.size))

    def _ack(self, record: TwinRecord, uid: bytes, value: dict[str, Any]) -> bytes:
        try:
            return self._seal(record, "ack", value, env.new_uid())
        except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
            raise Invalid(f"handler result for {uid.hex()} cannot be encoded") from exc

    # -- built-in kinds

    async def _on_message(self, record: TwinRecord, value: Any) -> Any:
        text = value.get("text") if isinstance(value, dict) else None
        if not isinstance(text, str):
            raise Invalid("a message needs a text")
        uid = current_envelope.get().uid
        new = await self.inbox.store(record.name, uid, text)
        log.debug("message %s from %s %s", uid.hex(), record.name,
                 "stored" if new else "was already stored")
        for listener in self._message_listeners if new else ():
            try:  # the peer inbox holds the message; listeners make copies (mail)
                await listener(record, uid, text)
            except Exception:
                log.exception("message %s from %s is in `twin inbox` but a copy failed",
                              uid.hex(), record.name)
        return {"stored": True}

    async def _on_message_bounce(self, recipient: str, value: Any, reason: str) -> None:
        text = value.get("text", "") if isinstance(value, dict) else ""
        await self.inbox.store("-", env.new_uid(),
                               f"could not deliver to {recipient}: {reason}\n> {text[:1000]}",
                               bounce=True)

    async def _on_ping(self, record: TwinRecord, value: Any) -> Any:
        return value

    async def _on_bundle(self, record: TwinRecord, value: Any) -> list[dict[str, Any]]:
        """Each item as if it had come alone (``core.peer.bundle``); one answer each."""
        outer = current_envelope.get()
        items = bundle.parse_items(value)
        return list(await asyncio.gather(*(self._bundled(record, outer, item)
                                           for item in items)))

    async def _bundled(self, record: TwinRecord, outer: env.Envelope,
                       item: bundle.Item) -> dict[str, Any]:
        try:
            self.rate.take(record.name)
            kind = KINDS.get(item.kind)
            if kind is None or kind.stream or kind.name == bundle.KIND \
                    or not self.kinds.handles(kind.name):
                raise Refusal("unknown_kind", f"this twin does not take {item.kind!r} "
                                              "in a bundle")
            await self.replay.claim(record.name, item.uid)
        except Refusal as refusal:
            if refusal.code != "replay" or not refusal.ack:
                return bundle.refused(refusal)
            if bundle.is_stored_result(refusal.ack):
                return bundle.ok(bundle.stored_result(refusal.ack))
            return bundle.replayed(refusal.ack)
        inner = dataclasses.replace(outer, uid=item.uid, kind=item.kind)
        try:
            result = await self._handle(record, inner, item.value)
            mark = bundle.stored(result)
        except TwinError as exc:
            self.replay.release(record.name, item.uid)
            return bundle.refused(Refusal.from_error(exc))
        except (cbor2.CBOREncodeError, TypeError, ValueError):
            self.replay.release(record.name, item.uid)
            return bundle.refused(Refusal("invalid", "the handler's result cannot be encoded"))
        except BaseException:
            self.replay.release(record.name, item.uid)
            raise
        keep = self._keep(outer, time.time())
        await self.replay.done(record.name, item.uid, keep.until, mark,
                               replay_until=keep.replay_until)
        return bundle.ok(result)

    # -- lifecycle

    async def stop(self) -> None:
        self._bundler.close()
        if self._client is not None:
            await self._client.close()
            self._client = None

    def close(self) -> None:
        self.replay.close()


def refusal_body(refusal: Refusal) -> dict[str, Any]:
    body: dict[str, Any] = {"code": refusal.code, "message": refusal.message}
    if refusal.ack:
        body["ack"] = base64.b64encode(refusal.ack).decode()
    return body


def log_envelope(sender: str, parsed: Sequence[env.Envelope], started: float,
                 refusal: Refusal | None = None) -> None:
    """The one line each received envelope gets (issue 21 item 4): who sent which
    kind under which uid (the sender's outbox logs the same uid), how long it took,
    and the outcome, ``ok`` or the refusal code. ``parsed`` is empty when the
    envelope was refused before it could be verified and parsed (by the API, for
    its size, too)."""
    kind, uid = (parsed[0].kind[:40], parsed[0].uid.hex()[:16]) if parsed else ("?", "?")
    ms = (time.monotonic() - started) * 1000
    line = f"peer in: kind={kind} from={sender[:64]} uid={uid} ms={ms:.0f}"
    if refusal is None:
        log.info("%s outcome=ok", line)
    else:
        log.warning("%s outcome=%s (%s)", line, refusal.code, refusal.message)


__all__ = ["Answer", "Peer", "PeerSettings", "current_envelope", "log_envelope", "refusal_body"]


def _check_pk(record: TwinRecord) -> None:
    """Encrypt only to the X25519 form of the account key (README: "The `pk` rule")."""
    if not pk_matches(record):
        raise Forbidden(
            f"twin {record.name} publishes an encryption key (pk) that is not the X25519 "
            "form of its account key: refusing to encrypt to it")
