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
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cbor2

from core.acl import OWNER, Access, Principal, as_dir, normalize
from core.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    PeerRejected,
    TwinError,
    Unavailable,
)
from core.peer import envelope as env
from core.peer import stream
from core.peer.client import PeerClient, Refused
from core.peer.content import ContentEntry, ContentSource
from core.peer.errors import PERMANENT, Refusal
from core.peer.inbox import Inbox
from core.peer.kinds import KINDS, AckHandler, BounceHandler, Handler, Registry
from core.peer.outbox import Outbox, Pending, backoff
from core.peer.replay import PURGE_EVERY, RateLimit, ReplayGuard
from core.peer.replay import Bounds as ReplayBounds
from phonebook.pins import pk_matches
from phonebook.record import TwinRecord

if TYPE_CHECKING:
    from core.service import Service

log = logging.getLogger("twin.peer")
REPLAY_FILE = "peer-replay.db"
MAX_INFLIGHT = 256  # deliveries at once: the client batches them (LANES x MAX_BATCH)
RECORD_MEMO = 5.0  # seconds a resolved peer record is reused without asking the phonebook
MAX_MEMO = 4096
# The one answer to a path the caller may not read, whether or not it exists.
NOT_SHARED = "{path}: not found or not shared"

# The envelope being handled, for handlers that make themselves idempotent by uid.
current_envelope: contextvars.ContextVar[env.Envelope] = contextvars.ContextVar("envelope")


@dataclass
class Answer:
    """What the peer API sends back: the ack, then (content.get) an encrypted stream."""

    ack: bytes
    stream: AsyncIterator[bytes | memoryview] | None = None
    length: int | None = None  # of the whole answer (ack frame + stream), when known


@dataclass
class _Opened:
    """A verified ack from a peer."""

    result: Any
    stream_key: bytes | None = None
    stream_header: bytes | None = None


class Peer:
    def __init__(self, service: Service) -> None:
        conf = service.config
        self.service = service
        self.name = service.phonebook_name
        self.identity = service.identity
        self.boxes = env.Boxes(service.identity)
        self.kinds = Registry()
        self.outbox = Outbox(service.db)
        self.inbox = Inbox(service.db)
        self.replay = ReplayGuard(Path(service.data_dir) / REPLAY_FILE, ReplayBounds(
            max_ack=conf.int("peer.max_stored_ack"),
            ack_budget=conf.int("peer.replay_ack_budget"),
            per_sender=conf.int("peer.replay_per_sender")))
        self.max_ttl = conf.int("peer.max_ttl")
        self.rate = RateLimit(conf.int("peer.rate_per_minute"))
        self.max_envelope = conf.int("peer.max_envelope")
        self.max_skew = conf.int("peer.max_skew")
        self.ttl = conf.int("peer.ttl")
        self.dedup_keep = conf.int("peer.dedup_keep")
        self.retry_schedule = [float(s) for s in conf.list("peer.retry_schedule")]
        self.give_up_after = conf.int("peer.give_up_after")
        self.poll = conf.float("peer.outbox_poll")
        self.timeout = conf.float("peer.timeout")
        self._client: PeerClient | None = None
        self.local_token = ""
        self._wake = asyncio.Event()
        self._records: dict[str, tuple[float, TwinRecord]] = {}
        self._memo_ttl = min(RECORD_MEMO, float(conf.int("phonebook.cache_ttl")))
        self.register("message", self._on_message)
        self.register("ping", self._on_ping)
        self.on_bounce("message", self._on_message_bounce)

    @property
    def access(self) -> Access:
        return self.service.access

    @property
    def content(self) -> ContentSource:
        """Looked up per request: the file tree may replace the shared objects."""
        return self.service.content

    # -- public API (see core/peer/__init__.py)

    def register(self, kind: str, handler: Handler) -> None:
        self.kinds.register(kind, handler)

    def on_bounce(self, kind: str, handler: BounceHandler) -> None:
        self.kinds.on_bounce(kind, handler)

    def on_ack(self, kind: str, handler: AckHandler) -> None:
        """``handler(recipient, payload, result)`` once an outbox envelope is acked."""
        self.kinds.on_ack(kind, handler)

    async def send(self, to: str, kind: str, payload: Any) -> str:
        """Durably queue ``payload`` for ``to``; returns the uid (hex)."""
        self.kinds.kind(kind)
        _check_pk(await self._resolve(to))  # an unknown recipient fails now, not in days
        uid = await self.outbox.enqueue(to, kind, payload)
        log.debug("queued %s envelope %s for %s", kind, uid.hex(), to)
        self._wake.set()
        return uid.hex()

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
        record = await self.service.resolve(name)
        if len(self._records) >= MAX_MEMO:
            self._records.clear()
        self._records[name] = (now + self._memo_ttl, record)
        return record

    def _forget_records(self) -> None:
        self._records.clear()
        self.service.phonebook.invalidate()

    # -- sending

    @property
    def client(self) -> PeerClient:
        if self._client is None:
            self._client = PeerClient(self.timeout, max_answer=self.max_envelope,
                                      hosts=self.service.config.list("peer.hosts"))
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
        """Deliver due envelopes until cancelled; woken by ``send`` or every poll."""
        sem = asyncio.Semaphore(MAX_INFLIGHT)
        running: set[bytes] = set()
        tasks: set[asyncio.Task[None]] = set()

        async def one(item: Pending) -> None:
            async with sem:
                try:
                    await self._deliver(item)
                except Exception:
                    log.exception("outbox: delivering %s failed unexpectedly", item.uid.hex())
                finally:
                    running.discard(item.uid)
                    self._wake.set()

        last_purge = 0.0
        while True:
            self._wake.clear()
            now = time.time()
            wait = self.poll
            try:
                free = MAX_INFLIGHT - len(running)
                for item in await self.outbox.due(now, free, frozenset(running)) if free else []:
                    if item.uid not in running:
                        running.add(item.uid)
                        task = asyncio.create_task(one(item),
                                                   name=f"outbox-{item.uid.hex()[:8]}")
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                if now - last_purge > PURGE_EVERY:
                    last_purge = now
                    await self.replay.purge()
                nxt = await self.outbox.next_due()
                if nxt is not None:
                    wait = min(self.poll, max(0.0, nxt - time.time()))
            except Exception:  # a locked or failing db must not end the worker
                log.exception("outbox: scan failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 0.01))

    async def _deliver(self, item: Pending) -> None:
        try:
            record = await self._resolve(item.recipient)
            opened = await self._exchange(record, item.kind, item.value, item.uid)
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
        await self.replay.claim(record.name, e.uid)
        try:
            value = self.boxes.decrypt(record.public_key, e.payload)
            if kind is None or (kind.name not in ("content.list", "content.get")
                                and self.kinds.handler(kind.name) is None):
                raise Refusal("unknown_kind", f"this twin does not take {e.kind!r}")
            answer = await self._dispatch(record, e, value)
        except TwinError as exc:
            self.replay.release(record.name, e.uid)
            raise Refusal.from_error(exc) from exc
        except BaseException:
            self.replay.release(record.name, e.uid)
            raise
        keep = max(e.expires + self.max_skew, now + self.dedup_keep)
        await self.replay.done(record.name, e.uid, keep, answer.ack,
                               replay_until=min(e.timestamp, e.expires) + self.max_skew + 1)
        return answer

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
        who = Principal.remote(record.name)
        if e.kind == "content.get":
            return await self._content_get(record, who, e, value)
        if e.kind == "content.list":
            result: Any = await self._content_list(who, value)
        else:
            handler = self.kinds.handler(e.kind)
            assert handler is not None
            token = current_envelope.set(e)
            try:
                result = await handler(record, value)
            finally:
                current_envelope.reset(token)
        return Answer(self._ack(record, e.uid, {"uid": e.uid, "result": result}))

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
        if new and self.service.store is not None:  # the mail store runs with `twin serve`
            try:  # the peer inbox holds the message; the mail copy is for mail clients
                await self._to_mail_inbox(record, uid, text)
            except Exception:
                log.exception("message %s from %s is in `twin inbox` but could not be put "
                              "in the mail Inbox", uid.hex(), record.name)
        return {"stored": True}

    async def _to_mail_inbox(self, record: TwinRecord, uid: bytes, text: str) -> None:
        """A native message as mail, so Thunderbird shows it too (a crash between
        the two stores leaves it only in `twin inbox`)."""
        conf = self.service.config
        sender = f"{record.name}@{record.mail_domains[0]}" if record.mail_domains else ""
        mail = EmailMessage()
        mail["From"] = sender or f"twin {record.name}"
        mail["To"] = f"{conf.name}@{conf.domain}"
        mail["Subject"] = f"Message from twin {record.name}"
        mail["Date"] = formatdate(localtime=True)
        mail["Message-ID"] = f"<{uid.hex()}@{conf.domain}>"
        mail.set_content(text)
        raw = mail.as_bytes(policy=SMTP)
        marked = self.service.router.mark_from_twin(record, sender, raw)
        await self.service.mail.accept(f"{conf.name}@{conf.domain}", marked)

    async def _on_message_bounce(self, recipient: str, value: Any, reason: str) -> None:
        text = value.get("text", "") if isinstance(value, dict) else ""
        await self.inbox.store("-", env.new_uid(),
                               f"could not deliver to {recipient}: {reason}\n> {text[:1000]}",
                               bounce=True)

    async def _on_ping(self, record: TwinRecord, value: Any) -> Any:
        return value

    async def _content_list(self, who: Principal, value: Any) -> list[dict[str, Any]]:
        """The ACL answers first, and a path the caller may not see gets the same
        answer whether it exists or not: no probing what the owner keeps."""
        path = normalize(_field(value, "path", str))
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

    async def _stat_shared(self, path: str) -> ContentEntry:
        try:
            return await self.content.stat(path)
        except NotFound:
            raise NotFound(NOT_SHARED.format(path=path)) from None

    async def _content_get(self, record: TwinRecord, who: Principal, e: env.Envelope,
                           value: Any) -> Answer:
        path = normalize(_field(value, "path", str))
        start = _field(value, "start", int)
        end = value.get("end") if isinstance(value, dict) else None
        if not await self.access.allowed(who, path, "read"):
            raise NotFound(NOT_SHARED.format(path=path))
        entry = await self._stat_shared(path)
        if entry.is_dir:
            raise Invalid(f"{path} is a directory")
        end = entry.size if end is None else end
        if type(end) is not int or not 0 <= start <= end or end > entry.size:
            raise Invalid(f"range {start}-{end} outside 0-{entry.size}")
        key = stream.new_key()
        enc = stream.Encryptor(key)
        ack = self._ack(record, e.uid, {
            "uid": e.uid,
            "result": {"entry": entry.to_wire(), "start": start, "end": end},
            "stream": {"key": key, "header": enc.header},
        })
        log.debug("content.get %s [%d, %d) for %s", path, start, end, who)
        return Answer(ack, stream.seal_frames(self.content.read(path, start, end), enc,
                                              end - start),
                      len(stream.frame(ack)) + stream.sealed_size(end - start))

    # -- lifecycle

    def start(self) -> None:
        from core.peer.api import write_token

        self.local_token = write_token(self.service.data_dir)
        self.service.spawn(self.run_outbox(), "peer-outbox")

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def close(self) -> None:
        self.replay.close()


def _field(value: Any, name: str, kind: type) -> Any:
    if not isinstance(value, dict) or type(value.get(name)) is not kind:
        raise Invalid(f"request needs {name!r} ({kind.__name__})")
    return value[name]


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


__all__ = ["OWNER", "Answer", "Peer", "current_envelope", "log_envelope", "refusal_body"]


def _check_pk(record: TwinRecord) -> None:
    """Encrypt only to the X25519 form of the account key (README: "The `pk` rule")."""
    if not pk_matches(record):
        raise Forbidden(
            f"twin {record.name} publishes an encryption key (pk) that is not the X25519 "
            "form of its account key: refusing to encrypt to it")
