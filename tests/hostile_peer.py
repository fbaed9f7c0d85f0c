"""What a hostile twin sends: envelopes with payloads it encodes itself.

A real peer encodes its payload with cbor2's canonical encoder; a hostile one
signs and encrypts whatever bytes it likes. These helpers build those bytes
(tests and ``bench/peer_hostile.py`` use them).
"""

from __future__ import annotations

from typing import Any

from core.identity import Identity
from core.peer import envelope as env


class RawBoxes(env.Boxes):
    """Encrypts the given bytes as they are: the payload a hostile peer chose."""

    def encrypt(self, peer_public_key: bytes, value: Any, nonce: bytes | None = None) -> bytes:
        assert isinstance(value, bytes)
        return bytes(self.box(peer_public_key).encrypt(value, nonce))


def seal_raw(identity: Identity, *, sender: str, recipient: str, recipient_key: bytes,
             plain: bytes, kind: str = "ping", ttl: int = 600, **kw: Any) -> bytes:
    """A correctly signed envelope whose encrypted payload is ``plain`` verbatim."""
    return env.seal(identity, RawBoxes(identity), sender=sender, recipient=recipient,
                    recipient_key=recipient_key, kind=kind, value=plain, ttl=ttl, **kw)


def _uint(n: int) -> bytes:
    return bytes([n]) if n < 24 else bytes([0x18, n]) if n < 256 else b"\x19" + n.to_bytes(2)


def shared_ref_bomb(levels: int) -> bytes:
    """CBOR of a flat array whose item k is a shared pair of item k-1 (tags 28/29).

    It decodes (with sharing) into a few hundred objects; re-encoded without
    sharing, item k holds 2^k leaves, so the whole is 2^levels items.
    """
    out = bytearray(b"\x98" + bytes([levels]))
    out += b"\xd8\x1c\x82\x00\x00"  # 28([0, 0]), shareable index 0
    for k in range(1, levels):
        ref = b"\xd8\x1d" + _uint(k - 1)  # 29(k-1)
        out += b"\xd8\x1c\x82" + ref + ref
    return bytes(out)
