"""Bundles: the values of many outbox envelopes in one signed, encrypted envelope.

Why: under load a twin sends hundreds of small envelopes a second to the
same peer, and each cost both twins an Ed25519 signature and a verification
(the envelope, then its ack: ~100 us a side), a canonical CBOR parse, a sealed
ack and a task or two. A bundle pays that once for up to ``MAX_ITEMS``
messages: at the messaging bench's maximum, 0.13-0.22 ms less CPU per message
on each twin (of 0.75-1.0 ms; issue 22).

Wire (a kind of envelope v1, so the envelope's own checks are unchanged and
come first): an envelope of kind ``bundle`` whose value is a list of maps
``{"uid": 16 bytes, "kind": text, "value": any}``. Its ack's result is a list
with one answer per item, in order:

- ``{"ok": result}``: handled now, or handled before in a bundle (its result);
- ``{"replay": ack}``: handled before in an envelope of its own: that
  envelope's signed ack, which the sender verifies as it would any replay's;
- ``{"refused": {"code": text, "message": text}}``.

The receiver handles each item exactly as if it had come in an envelope of
its own from the same verified sender: rate limit, replay guard by the
item's uid, a known kind that is answered by an ack alone, and that kind's
handler (which checks the ACL). Only the verified and decrypted value is
parsed, bounded by the envelope's size and ``MAX_ITEMS`` (``parse_items``).

A replay mark for an item keeps its result (``RESULT`` then canonical CBOR),
not a signed ack: an ack signed per item is what a bundle saves. A later
envelope of its own with that uid (the sender fell back to single
envelopes) gets a freshly signed ack built from it (``core.peer.peer``).

A lone message is never bundled (no latency is added), and a peer that
refuses the kind (an older twin: ``unknown_kind``) is sent single envelopes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2

from core.errors import PeerRejected
from core.peer.envelope import MAX_KIND, PAYLOAD_LIMITS, UID_LEN
from core.peer.errors import Refusal, rejected
from phonebook import cbor as wire

KIND = "bundle"
MAX_ITEMS = 64  # items in one bundle; the receiver refuses more
MAX_BYTES = 1024 * 1024  # of encoded values in one bundle (the sender's limit)
RESULT = b"\x00"  # a replay mark holding an item's result (signed acks start with 1)
ITEM_FIELDS = frozenset({"uid", "kind", "value"})


@dataclass(frozen=True)
class Item:
    """One message of a bundle: what an envelope of its own would have carried."""

    uid: bytes
    kind: str
    value: Any


def pack(items: list[Item]) -> list[dict[str, Any]]:
    """The bundle envelope's value."""
    return [{"uid": i.uid, "kind": i.kind, "value": i.value} for i in items]


def parse_items(value: Any) -> list[Item]:
    """A verified bundle's items, refused as ``malformed`` unless every one is well formed.

    Count first: nothing is looked at past ``MAX_ITEMS``."""
    if not isinstance(value, list) or not 0 < len(value) <= MAX_ITEMS:
        raise Refusal("malformed", f"a bundle is a list of 1 to {MAX_ITEMS} items")
    items: list[Item] = []
    for raw in value:
        if not isinstance(raw, dict) or set(raw) != ITEM_FIELDS:
            raise Refusal("malformed", "a bundle item is a map of uid, kind and value")
        uid, kind = raw["uid"], raw["kind"]
        if type(uid) is not bytes or len(uid) != UID_LEN \
                or type(kind) is not str or not 0 < len(kind) <= MAX_KIND:
            raise Refusal("malformed", "a bundle item's uid or kind is of the wrong type or size")
        items.append(Item(uid, kind, raw["value"]))
    return items


def ok(result: Any) -> dict[str, Any]:
    return {"ok": result}


def replayed(ack: bytes) -> dict[str, Any]:
    return {"replay": ack}


def refused(refusal: Refusal) -> dict[str, Any]:
    return {"refused": {"code": refusal.code, "message": refusal.message[:500]}}


def stored(result: Any) -> bytes:
    """What the replay guard keeps for an item handled in a bundle."""
    return RESULT + cbor2.dumps(result, canonical=True)


def is_stored_result(mark: bytes) -> bool:
    return mark[:1] == RESULT


def stored_result(mark: bytes) -> Any:
    """The result kept by ``stored`` (this twin's own bytes, still decoded bounded)."""
    return wire.loads(mark[1:], PAYLOAD_LIMITS)


@dataclass(frozen=True)
class Answered:
    """One item's answer as the sender reads it: at most one of the last two is set."""

    result: Any = None
    replay_ack: bytes | None = None
    error: PeerRejected | None = None


def parse_answers(result: Any, count: int) -> list[Answered]:
    """The verified ack's answers, one per item sent; ``ValueError`` if malformed."""
    if not isinstance(result, list) or len(result) != count:
        raise ValueError("a bundle ack answers every item, in order")
    out: list[Answered] = []
    for answer in result:
        if not isinstance(answer, dict) or len(answer) != 1:
            raise ValueError("a bundle answer is a map of one field")
        if "ok" in answer:
            out.append(Answered(result=answer["ok"]))
        elif type(answer.get("replay")) is bytes:
            out.append(Answered(replay_ack=answer["replay"]))
        elif isinstance(r := answer.get("refused"), dict) and type(r.get("code")) is str \
                and type(r.get("message")) is str:
            out.append(Answered(error=rejected(r["code"][:64], r["message"][:500])))
        else:
            raise ValueError("a bundle answer is ok, replay or refused")
    return out
