"""The twin's identity: one Ed25519 key pair from a BIP39 mnemonic.

Derivation is exactly substrate's (and so substrate-interface's and TFChain's)
for an ed25519 account, so the same words give the same chain account:

    entropy    = BIP39 entropy of the words (checksum verified)
    mini seed  = PBKDF2-HMAC-SHA512(password=entropy, salt="mnemonic", 2048)[:32]
    key pair   = Ed25519 from the 32-byte mini seed

(Substrate feeds the *entropy* to PBKDF2, not the sentence as plain BIP39
does; that is why a generic BIP39 library alone gives a different key.)

Every other secret is derived from the mini seed with HKDF-SHA256 and a
distinct ``info`` string per purpose (domain separation), so a twin can be
rebuilt from its words plus its storage backends:

    storage key   = HKDF(seed, info="twin/v1/storage")    wraps per-object keys
    metadata key  = HKDF(seed, info="twin/v1/metadata")   encrypts catalogue backups

The encryption key for envelopes is the X25519 conversion of the Ed25519 key
(libsodium's crypto_sign_ed25519_sk_to_curve25519), so the phonebook needs to
publish only one public key.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from mnemonic import Mnemonic
from nacl.public import PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

from core.errors import Invalid, NotFound

KEY_FILE = "identity.key"
PURPOSES = ("storage", "metadata", "dkim", "outbox", "journal")
_WORDS = Mnemonic("english")


def new_mnemonic(words: int = 12) -> str:
    strength = {12: 128, 15: 160, 18: 192, 21: 224, 24: 256}[words]
    return str(_WORDS.generate(strength=strength))


def mini_seed(mnemonic: str) -> bytes:
    """Substrate's BIP39 mini secret for ``mnemonic`` (no password)."""
    words = " ".join(mnemonic.split())
    if not _WORDS.check(words):
        raise Invalid("not a valid BIP39 mnemonic (a word is wrong or the checksum fails)")
    entropy = bytes(_WORDS.to_entropy(words))
    return hashlib.pbkdf2_hmac("sha512", entropy, b"mnemonic", 2048)[:32]


@dataclass(frozen=True)
class Identity:
    """A twin's keys. Holds the 32-byte seed; everything else is derived."""

    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise Invalid("identity seed must be 32 bytes")

    def __repr__(self) -> str:  # never print the seed
        return f"Identity(public_key={self.public_key.hex()})"

    @classmethod
    def from_mnemonic(cls, mnemonic: str) -> Identity:
        return cls(mini_seed(mnemonic))

    @cached_property
    def signing_key(self) -> SigningKey:
        return SigningKey(self.seed)

    @cached_property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def verify_key(self) -> VerifyKey:
        return self.signing_key.verify_key

    def sign(self, data: bytes) -> bytes:
        """Detached 64-byte Ed25519 signature."""
        return bytes(self.signing_key.sign(data).signature)

    @cached_property
    def box_key(self) -> PrivateKey:
        """X25519 private key for envelope encryption."""
        return self.signing_key.to_curve25519_private_key()

    @property
    def box_public_key(self) -> PublicKey:
        return self.box_key.public_key

    def derive_key(self, purpose: str, length: int = 32) -> bytes:
        """A key for one purpose, independent of every other purpose's key."""
        if purpose not in PURPOSES:
            raise ValueError(f"unknown key purpose {purpose!r}")
        hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None,
                    info=f"twin/v1/{purpose}".encode())
        return hkdf.derive(self.seed)

    @cached_property
    def ss58_address(self) -> str:
        """The TFChain (SS58 format 42) account address of this key."""
        from scalecodec.utils.ss58 import ss58_encode

        return str(ss58_encode(self.public_key, ss58_format=42))


def box_public_key_of(ed25519_public_key: bytes) -> PublicKey:
    """The X25519 public key another twin encrypts to, from its Ed25519 key."""
    return VerifyKey(ed25519_public_key).to_curve25519_public_key()


def save(identity: Identity, data_dir: Path) -> Path:
    """Write the key file, 0600, atomically. Refuses to overwrite an identity."""
    path = Path(data_dir) / KEY_FILE
    if path.exists():
        raise Invalid(f"{path} exists: refusing to overwrite a twin's identity")
    body = json.dumps({
        "version": 1,
        "type": "ed25519",
        "seed": identity.seed.hex(),
        "public_key": identity.public_key.hex(),
    })
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(body + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load(data_dir: Path) -> Identity:
    path = Path(data_dir) / KEY_FILE
    try:
        mode = path.stat().st_mode & 0o777
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotFound(f"no identity in {data_dir} (run `twin init`)") from None
    except (OSError, ValueError) as exc:
        raise Invalid(f"{path}: unreadable identity file: {exc}") from exc
    if mode & 0o077:
        raise Invalid(f"{path} is readable by others (mode {mode:o}); run chmod 600 {path}")
    identity = Identity(bytes.fromhex(raw["seed"]))
    if identity.public_key.hex() != raw.get("public_key"):
        raise Invalid(f"{path}: public key does not match the seed; the file is damaged")
    return identity
