"""The one registry of envelope kinds, and who installs each one's handler.

A kind must be listed in ``KINDS`` before a handler can be registered for it,
so every kind twins exchange is visible here with what it is for and which
part owns it. The owner installs its handlers in one place, its ``install
(peer)`` (the ``KindOwner`` protocol), and ``core.service`` calls every
owner's ``install`` together; the peer part installs its own (``message``,
``ping``) when it is made. A kind without a handler is refused as
``unknown_kind``.

To add a kind: list it here with its owner, and register its handler in that
owner's ``install``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from phonebook.record import TwinRecord

if TYPE_CHECKING:
    from core.peer.peer import Peer

Handler = Callable[[TwinRecord, Any], Awaitable[Any]]
BounceHandler = Callable[[str, Any, str], Awaitable[None]]
# an envelope from the outbox was acked: (recipient twin, payload, the ack's result)
AckHandler = Callable[[str, Any, Any], Awaitable[None]]
# a new native message is in the peer inbox: (sender's record, uid, text)
MessageListener = Callable[[TwinRecord, bytes, str], Awaitable[None]]


@dataclass(frozen=True)
class Streamed:
    """A stream kind's answer: ``result`` in the ack, then ``size`` bytes of ``body``."""

    result: Any
    body: AsyncIterator[bytes]
    size: int


StreamHandler = Callable[[TwinRecord, Any], Awaitable[Streamed]]


class KindOwner(Protocol):
    """A part that owns kinds: registers their handlers on the peer part."""

    def install(self, peer: Peer) -> None: ...


@dataclass(frozen=True)
class Kind:
    name: str
    help: str
    owner: str  # where the handler is installed
    stream: bool = False  # the answer is an encrypted stream after the ack


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("ack", "a recipient's signed receipt; answers every other kind", "core.peer.peer"),
    Kind("message", "a native text message for the peer inbox (`twin send`)",
         "core.peer.peer"),
    Kind("mail.deliver", "a mail message delivered twin to twin (the mail store)",
         "core.routing.MailRouter"),
    Kind("content.list", "list a directory another twin shared with the sender",
         "core.peer.serve.ContentServer"),
    Kind("content.get", "read (a range of) an object shared with the sender",
         "core.peer.serve.ContentServer", stream=True),
    Kind("content.put", "write a file (whole body, at most peer.max_put) in a read-write share",
         "core.peer.writes.SharedWrites"),
    Kind("content.delete", "delete a file or folder in a folder shared read-write",
         "core.peer.writes.SharedWrites"),
    Kind("content.mkdir", "create a folder in a folder shared read-write",
         "core.peer.writes.SharedWrites"),
    Kind("content.move", "rename or move within what is shared read-write (both paths)",
         "core.peer.writes.SharedWrites"),
    Kind("share.notify", "tell a twin that something was shared with it",
         "core.peer.shares.SharedWithMe"),
    Kind("ping", "a no-op round trip (health checks and benchmarks)", "core.peer.peer"),
    Kind("bundle", "the values of many queued envelopes in one (core.peer.bundle)",
         "core.peer.peer"),
)}


class Registry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._streams: dict[str, StreamHandler] = {}
        self._bounces: dict[str, BounceHandler] = {}
        self._acks: dict[str, AckHandler] = {}

    @staticmethod
    def kind(name: str) -> Kind:
        try:
            return KINDS[name]
        except KeyError:
            raise ValueError(f"envelope kind {name!r} is not in core.peer.kinds.KINDS") from None

    def register(self, kind: str, handler: Handler) -> None:
        known = self.kind(kind)
        if known.name == "ack":
            raise ValueError("acks are handled by the peer part itself")
        if known.stream:
            raise ValueError(f"{kind} is answered with a stream: use register_stream")
        self._handlers[kind] = handler

    def register_stream(self, kind: str, handler: StreamHandler) -> None:
        if not self.kind(kind).stream:
            raise ValueError(f"{kind} is not answered with a stream: use register")
        self._streams[kind] = handler

    def on_bounce(self, kind: str, handler: BounceHandler) -> None:
        self._bounces[self.kind(kind).name] = handler

    def on_ack(self, kind: str, handler: AckHandler) -> None:
        self._acks[self.kind(kind).name] = handler

    def handles(self, kind: str) -> bool:
        return kind in self._handlers or kind in self._streams

    def ack_handler(self, kind: str) -> AckHandler | None:
        return self._acks.get(kind)

    def handler(self, kind: str) -> Handler | None:
        return self._handlers.get(kind)

    def stream_handler(self, kind: str) -> StreamHandler | None:
        return self._streams.get(kind)

    def bounce_handler(self, kind: str) -> BounceHandler | None:
        return self._bounces.get(kind)
