"""TwinRecord: what the phonebook says about one twin, signed by that twin.

The signature covers a deterministic CBOR encoding of every field except the
phonebook-assigned ``id`` and the signature itself. So a record carries its own
proof: whoever stored it, the key inside signed the name, endpoints and mail
domains next to it. ``seq`` only grows, so an old record cannot be replayed over
a newer one; ``valid_until`` bounds how long a stale copy is believed.

Records that come from a chain (``source="tfchain"``) have no signature of
their own: the chain's extrinsic signature by the account is their proof, and
the tfchain backend is trusted to have read them from the chain.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from typing import Any

import cbor2
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from phonebook import cbor
from phonebook.errors import RecordInvalid

NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*"
                       r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
MAX_ENDPOINTS = 8
MAX_DOMAINS = 16
SIGNATURE_CONTEXT = b"twin-phonebook-record-v1\x00"
# a record is one flat map with two short lists; 8 KiB of it is already generous
RECORD_LIMITS = cbor.Limits(max_depth=2, max_items=2 * 16 + MAX_ENDPOINTS + MAX_DOMAINS + 8)
MAX_RECORD = 8192


@dataclass(frozen=True)
class TwinRecord:
    name: str
    public_key: bytes
    endpoints: tuple[str, ...] = ()
    mail_domains: tuple[str, ...] = ()
    valid_until: int = 0
    seq: int = 1
    id: int = 0
    signature: bytes | None = None
    key_type: str = "ed25519"
    source: str = "local"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    # -- canonical bytes and signing

    def signed_fields(self) -> dict[str, Any]:
        """Every field the signature covers: the one list, so that the stored and JSON
        forms below are built from it and a field added here is signed everywhere."""
        return {
            "name": self.name,
            "public_key": self.public_key,
            "key_type": self.key_type,
            "endpoints": list(self.endpoints),
            "mail_domains": list(self.mail_domains),
            "valid_until": self.valid_until,
            "seq": self.seq,
        }

    def signed_bytes(self) -> bytes:
        return SIGNATURE_CONTEXT + cbor2.dumps(self.signed_fields(), canonical=True)

    def signed_by(self, key: SigningKey) -> TwinRecord:
        if bytes(key.verify_key) != self.public_key:
            raise RecordInvalid("a record can only be signed by its own key")
        sig = key.sign(self.signed_bytes()).signature
        return replace(self, signature=bytes(sig))

    def check_shape(self) -> None:
        if self.source == "tfchain":
            # A chain twin has no name field: its name is its relay domain or
            # "twin-<id>" (phonebook/tfchain_relay.py), so dots are allowed.
            if not DOMAIN_RE.match(self.name):
                raise RecordInvalid(f"bad TFChain twin name {self.name!r} (a domain or twin-ID)")
        elif not NAME_RE.match(self.name):
            raise RecordInvalid(f"bad twin name {self.name!r} (a-z, 0-9 and -, at most 63)")
        if len(self.public_key) != 32:
            raise RecordInvalid(f"twin {self.name!r}: public key must be 32 bytes")
        if len(self.endpoints) > MAX_ENDPOINTS or len(self.mail_domains) > MAX_DOMAINS:
            raise RecordInvalid(f"twin {self.name!r}: too many endpoints or domains")
        for url in self.endpoints:
            if not url.startswith(("https://", "http://")) or len(url) > 512:
                raise RecordInvalid(f"twin {self.name!r}: bad endpoint {url!r}")
        for domain in self.mail_domains:
            if not DOMAIN_RE.match(domain):
                raise RecordInvalid(f"twin {self.name!r}: bad mail domain {domain!r}")

    def verify(self, now: float | None = None) -> TwinRecord:
        """Check shape, signature and validity; returns self so calls chain."""
        self.check_shape()
        if self.source == "local":
            if self.signature is None:
                raise RecordInvalid(f"twin {self.name!r}: record is not signed")
            try:
                VerifyKey(self.public_key).verify(self.signed_bytes(), self.signature)
            except (BadSignatureError, ValueError, TypeError):  # ValueError: not 64 bytes
                raise RecordInvalid(
                    f"twin {self.name!r}: record signature does not verify (tampered?)"
                ) from None
            if self.valid_until and self.valid_until < (now or time.time()):
                raise RecordInvalid(f"twin {self.name!r}: record expired, the twin must republish")
        return self

    # -- storage form

    def to_bytes(self) -> bytes:
        return cbor2.dumps({"v": 1, **self.signed_fields(), "signature": self.signature},
                           canonical=True)

    @classmethod
    def from_bytes(cls, data: bytes, *, id: int = 0) -> TwinRecord:
        """Decode a stored record, checking every field's type and size first.

        The bytes may come from a shared phonebook file another twin writes,
        so they are decoded by the bounded decoder and nothing is converted
        before its type is known (``bytes(n)`` of a forged integer would
        allocate n zero bytes).
        """
        if len(data) > MAX_RECORD:
            raise RecordInvalid(f"phonebook record over {MAX_RECORD} bytes")
        try:
            raw = cbor.loads(data, RECORD_LIMITS)
        except ValueError as exc:
            raise RecordInvalid(f"undecodable phonebook record: {exc}") from exc
        if not isinstance(raw, dict):
            raise RecordInvalid("undecodable phonebook record: not a map")
        signature = raw.get("signature")
        fields = (
            _typed(raw, "name", str), _typed(raw, "public_key", bytes),
            _typed(raw, "endpoints", list), _typed(raw, "mail_domains", list),
            _typed(raw, "valid_until", int), _typed(raw, "seq", int),
        )
        name, public_key, endpoints, mail_domains, valid_until, seq = fields
        key_type = raw.get("key_type", "ed25519")
        if not isinstance(key_type, str) or len(key_type) > 16:
            raise RecordInvalid("undecodable phonebook record: bad key_type")
        if not all(isinstance(u, str) for u in endpoints) \
                or not all(isinstance(d, str) for d in mail_domains):
            raise RecordInvalid("undecodable phonebook record: endpoints/domains not text")
        if signature is not None and (not isinstance(signature, bytes) or len(signature) != 64):
            raise RecordInvalid("undecodable phonebook record: signature is not 64 bytes")
        if not (0 <= valid_until < 2**63 and 0 <= seq < 2**63):
            raise RecordInvalid("undecodable phonebook record: seq/valid_until out of range")
        return cls(
            name=name, public_key=public_key, key_type=key_type,
            endpoints=tuple(endpoints), mail_domains=tuple(mail_domains),
            valid_until=valid_until, seq=seq, signature=signature or None, id=id,
        )

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, **self.signed_fields(), "public_key": self.public_key.hex(),
                "source": self.source}


def _typed(raw: dict[Any, Any], key: str, kind: type) -> Any:
    """``raw[key]`` if it is exactly of ``kind`` (bool is not an int here)."""
    value = raw.get(key)
    if type(value) is not kind:
        raise RecordInvalid(f"undecodable phonebook record: {key!r} is not {kind.__name__}")
    return value
