"""Twin-to-twin messaging: signed, encrypted envelopes over HTTPS.

Public API (``service.peer``, a ``Peer``), kept stable for the other parts.
``Peer`` is made by the service with its collaborators (name, identity,
database, data dir, ``PeerSettings.from_config``, the phonebook's resolve and
forget); a part that owns envelope kinds registers their handlers in its
``install(peer)`` (``core.peer.kinds.KindOwner``), which the service calls:

    service.peer.register(kind: str, handler: Callable[[TwinRecord, Any], Awaitable[Any]])
        # receive side; the handler gets the *verified* sender's phonebook record
        # and the decrypted payload. Its return value goes back in the signed ack;
        # raising a core.errors error refuses the envelope with that error's code.
        # ``kind`` must be listed in core.peer.kinds.KINDS (the one registry).
    service.peer.on_bounce(kind: str, handler: Callable[[str, Any, str], Awaitable[None]])
        # (recipient, payload, reason) when a queued envelope finally fails
    service.peer.register_stream(kind: str, handler: StreamHandler)  # see core.peer.kinds
        # a kind answered with an encrypted stream after the ack (content.get)
    service.peer.on_message(listener: Callable[[TwinRecord, bytes, str], Awaitable[None]])
        # after a new native message is in the peer inbox (routing copies it to mail)
    service.peer.on_ack(kind: str, handler: Callable[[str, Any, Any], Awaitable[None]])
        # (recipient, payload, the ack's result) once a queued envelope is acked:
        # e.g. mail.deliver's ack names recipients the peer refused as unknown
    await service.peer.send(to: str, kind: str, payload: Any) -> str
        # durable (committed to twin.db before it returns); returns the uid (hex);
        # delivered by the outbox worker, retried per peer.retry_schedule until
        # the recipient's signed ack arrives, bounced after peer.give_up_after
    await service.peer.request(to: str, kind: str, payload: Any) -> Any
        # one synchronous signed request and its verified answer (no outbox);
        # raises core.errors.PeerRejected (``.code`` = the refusal) or Unavailable
    await service.peer.content_list(twin: str, path: str) -> list[ContentEntry]
    service.peer.content_get(twin: str, path: str, start=0, end=None) -> AsyncIterator[bytes]
        # what ``twin`` shared with us, through its ACL; streamed, verified per chunk

Exactly-once: a receiver remembers every handled ``(sender, uid)`` with the
ack it sent (``replay.py``) and answers a repeated uid with a ``replay``
refusal carrying that ack, which the sender accepts as delivery. The mark is
written after the handler returns, so a crash in between re-runs the handler:
handlers MUST be idempotent by uid. The envelope being handled is available
as ``core.peer.peer.current_envelope.get()`` (``.uid``, ``.sender``) for that.

Security model: authenticity and confidentiality come from the envelopes
(Ed25519 signatures over the exact body bytes, NaCl Box / secretstream
encryption to the recipient's X25519 key), not from TLS: peers' certificates
are self-signed and TLS only hides traffic from onlookers (see ``client.py``).

Modules: ``envelope`` (wire format, sign, verify), ``stream`` (secretstream
frames), ``replay`` (replay guard, rate limit), ``kinds`` (registry, and
which part owns each kind), ``outbox``, ``bundle`` (many queued values in
one envelope: the wire format) and ``bundler`` (the outbox's deliveries to
one peer leave together), ``inbox``, ``content``
(ContentSource, the legacy SharedObjects), ``serve`` (content.list/get, ACL
first), ``writes`` (content.put/delete/mkdir/move), ``shares``
(share.notify), ``client`` (httpx; batches over ``http1``, a minimal
keep-alive HTTP/1.1 client), ``api`` (the two envelope routes),
``peer`` (it all together), ``errors``
(the refusal codes and their one table, keyed by the envelope checks' codes and
``core.errors.ErrorCode``: status and whether the sender retries; the local
APIs answer core errors with the same statuses).
"""

from __future__ import annotations

from core.peer.content import ContentEntry, ContentSource
from core.peer.peer import Peer, PeerSettings, current_envelope

__all__ = ["ContentEntry", "ContentSource", "Peer", "PeerSettings", "current_envelope"]
