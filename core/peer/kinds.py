"""The one registry of envelope kinds.

A kind must be listed in ``KINDS`` before a handler can be registered for it,
so every kind twins exchange is visible here with what it is for. Handlers
are registered at runtime by the part that owns the kind (``service.peer.
register``); a kind without a handler is refused as ``unknown_kind``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from phonebook.record import TwinRecord

Handler = Callable[[TwinRecord, Any], Awaitable[Any]]
BounceHandler = Callable[[str, Any, str], Awaitable[None]]
# an envelope from the outbox was acked: (recipient twin, payload, the ack's result)
AckHandler = Callable[[str, Any, Any], Awaitable[None]]


@dataclass(frozen=True)
class Kind:
    name: str
    help: str
    stream: bool = False  # the answer is an encrypted stream after the ack


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("ack", "a recipient's signed receipt; answers every other kind"),
    Kind("message", "a native text message for the peer inbox (`twin send`)"),
    Kind("mail.deliver", "a mail message delivered twin to twin (the mail store)"),
    Kind("content.list", "list a directory another twin shared with the sender"),
    Kind("content.get", "read (a range of) an object shared with the sender", stream=True),
    Kind("content.put", "write a file (whole body, at most peer.max_put) in a read-write share"),
    Kind("content.delete", "delete a file or folder in a folder shared read-write"),
    Kind("content.mkdir", "create a folder in a folder shared read-write"),
    Kind("content.move", "rename or move within what is shared read-write (both paths)"),
    Kind("share.notify", "tell a twin that something was shared with it"),
    Kind("ping", "a no-op round trip (health checks and benchmarks)"),
)}


class Registry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._bounces: dict[str, BounceHandler] = {}
        self._acks: dict[str, AckHandler] = {}

    @staticmethod
    def kind(name: str) -> Kind:
        try:
            return KINDS[name]
        except KeyError:
            raise ValueError(f"envelope kind {name!r} is not in core.peer.kinds.KINDS") from None

    def register(self, kind: str, handler: Handler) -> None:
        if self.kind(kind).name == "ack":
            raise ValueError("acks are handled by the peer part itself")
        self._handlers[kind] = handler

    def on_bounce(self, kind: str, handler: BounceHandler) -> None:
        self._bounces[self.kind(kind).name] = handler

    def on_ack(self, kind: str, handler: AckHandler) -> None:
        self._acks[self.kind(kind).name] = handler

    def ack_handler(self, kind: str) -> AckHandler | None:
        return self._acks.get(kind)

    def handler(self, kind: str) -> Handler | None:
        return self._handlers.get(kind)

    def bounce_handler(self, kind: str) -> BounceHandler | None:
        return self._bounces.get(kind)
