"""Checking a signature against a phonebook record, whatever its key type.

Local records are ed25519 (a twin's own key). A TFChain account is an
``AccountId32`` that may sign with ed25519 or sr25519: the runtime's
``MultiSignature`` accepts either for any account, and the chain does not
record which one an account uses. So for ``source="tfchain"`` records the
labelled type is tried first and the other second, which accepts exactly what
the chain itself would accept from that account, and nothing more.
"""

from __future__ import annotations

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import VerifyKey

from phonebook.record import TwinRecord

KEY_TYPES = ("ed25519", "sr25519")


def _ed25519(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        VerifyKey(public_key).verify(message, signature)
    except (BadSignatureError, CryptoError, ValueError, TypeError):
        return False
    return True


def _sr25519(public_key: bytes, message: bytes, signature: bytes) -> bool:
    from substrateinterface import Keypair, KeypairType

    try:
        keypair = Keypair(public_key=public_key, crypto_type=KeypairType.SR25519, ss58_format=42)
        return bool(keypair.verify(message, signature))
    except (ValueError, TypeError):
        return False


CHECKS = {"ed25519": _ed25519, "sr25519": _sr25519}


def verify_signature(record: TwinRecord, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` over ``message`` was made by ``record``'s key."""
    if len(signature) != 64 or len(record.public_key) != 32:
        return False
    if record.key_type not in CHECKS:
        return False
    if record.source != "tfchain":
        return record.key_type == "ed25519" and _ed25519(record.public_key, message, signature)
    order = [record.key_type] + [t for t in KEY_TYPES if t != record.key_type]
    return any(CHECKS[t](record.public_key, message, signature) for t in order)
