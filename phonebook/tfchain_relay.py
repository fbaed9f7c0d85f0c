"""How a TFChain twin becomes a ``TwinRecord``, and a twin's domain becomes ``relay``.

The chain stores only ``{id, account_id, relay, entities, pk}`` per twin. The
mapping (also in docs/tfchain.md):

- ``relay`` holds the twin's own domain(s): one bare domain, or up to 4 joined
  by ``_`` (the runtime allows only ``[A-Za-z0-9-_.]``, so no URL, no port).
  The first domain is the twin's *name*; all of them are its mail domains.
- The peer API of a twin is ``https://{first relay domain}`` on port 443 (or
  the deployment-wide ``port``), under ``/twin/v1/`` as on every twin.
- ``public_key`` is the account's 32-byte key. The chain does not record whether
  an account signs with ed25519 or sr25519 (``MultiSignature`` accepts both for
  any account), so ``key_type`` is a label: ``ed25519`` when the twin's ``pk`` is
  the X25519 form of the account key (every twin of ours) or the key is a valid
  prime-order Edwards point; else ``sr25519``. Verification never relies on the
  label alone (see ``phonebook.signatures``).
- ``pk`` (the twin's X25519 encryption key) goes to ``extra["pk"]``.
- A twin whose relay holds no usable domain is named ``twin-<id>`` and has no
  endpoint: it can be found by id or account, but not reached.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

from nacl.bindings import crypto_core_ed25519_is_valid_point
from nacl.exceptions import CryptoError
from nacl.signing import VerifyKey

from phonebook.errors import RecordInvalid
from phonebook.record import DOMAIN_RE, TwinRecord

RELAY_CHARS = re.compile(r"^[A-Za-z0-9\-_.]+$")
MAX_RELAY = 1024  # bytes, the runtime's bound on ``relay``
MAX_RELAY_DOMAINS = 4
MAX_PK = 128  # bytes, the runtime's bound on ``pk``
DEFAULT_PORT = 443
DEFAULT_TERMS_LINK = "https://library.threefold.me/info/legal/#/"
# The runtime refuses an empty hash (``DocumentHashInputTooShort``, after charging the fee).
# The default is the MD5 of the link's own text: fixed, documented, accepted by the runtime.
DEFAULT_TERMS_HASH = hashlib.md5(DEFAULT_TERMS_LINK.encode(), usedforsecurity=False).hexdigest()


class RelayInvalid(RecordInvalid):
    """A relay string the runtime (or this mapping) would refuse."""


def domains_to_relay(domains: Iterable[str]) -> str:
    """The relay string for a twin serving ``domains`` (first = its name)."""
    unique: list[str] = []
    for domain in domains:
        d = domain.strip().lower().rstrip(".")
        if d not in unique:
            unique.append(d)
    relay = "_".join(unique)
    check_relay(relay)
    return relay


def check_relay(relay: str) -> list[str]:
    """Validate a relay BEFORE it is submitted (a refused extrinsic still pays)."""
    if not relay:
        raise RelayInvalid("relay is empty: a twin on TFChain needs its domain there")
    if len(relay.encode()) > MAX_RELAY:
        raise RelayInvalid(f"relay is longer than {MAX_RELAY} bytes")
    if not RELAY_CHARS.match(relay):
        raise RelayInvalid(
            f"relay {relay!r}: only A-Z a-z 0-9 - _ . are allowed (a bare domain, not a URL)")
    domains = relay.lower().split("_")
    if len(domains) > MAX_RELAY_DOMAINS:
        raise RelayInvalid(f"relay {relay!r}: at most {MAX_RELAY_DOMAINS} domains")
    for domain in domains:
        if not DOMAIN_RE.match(domain):
            raise RelayInvalid(f"relay {relay!r}: {domain!r} is not a domain name")
    return domains


def relay_domains(relay: str | None) -> list[str]:
    """The usable domains of a relay read from the chain (tolerant: skips bad ones)."""
    if not relay or len(relay) > MAX_RELAY or not RELAY_CHARS.match(relay):
        return []
    found = [d for d in relay.lower().split("_") if DOMAIN_RE.match(d)]
    return list(dict.fromkeys(found))[:MAX_RELAY_DOMAINS]


def endpoint_for(domain: str, port: int = DEFAULT_PORT) -> str:
    """Base URL of the peer API of the twin at ``domain`` (paths go under /twin/v1/)."""
    return f"https://{domain}" if port == DEFAULT_PORT else f"https://{domain}:{port}"


def x25519_of(ed25519_key: bytes) -> bytes | None:
    try:
        return bytes(VerifyKey(ed25519_key).to_curve25519_public_key())
    except (CryptoError, ValueError):
        return None


def key_type_of(account: bytes, pk: bytes | None) -> str:
    if pk is not None and pk == x25519_of(account):
        return "ed25519"
    return "ed25519" if crypto_core_ed25519_is_valid_point(account) else "sr25519"


def parse_hex(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    text = str(value)
    try:
        return bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        return text.encode()  # substrate-interface gives printable bytes as text


def twin_to_record(twin: dict[str, Any], account: bytes, *, port: int = DEFAULT_PORT,
                   valid_until: int = 0) -> TwinRecord:
    """A chain twin (as substrate-interface decodes it) as a ``TwinRecord``."""
    twin_id = int(twin["id"])
    pk = parse_hex(twin.get("pk"))
    domains = relay_domains(twin.get("relay"))
    return TwinRecord(
        name=domains[0] if domains else f"twin-{twin_id}",
        public_key=account,
        endpoints=tuple(endpoint_for(d, port) for d in domains[:1]),
        mail_domains=tuple(domains),
        valid_until=valid_until,
        seq=1,
        id=twin_id,
        key_type=key_type_of(account, pk),
        source="tfchain",
        extra={"pk": pk, "relay": twin.get("relay"), "account_id": twin.get("account_id")},
    )
