"""A twin's identity is substrate's ed25519 account for the same words."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat

import pytest
from nacl.public import Box
from nacl.signing import VerifyKey
from substrateinterface import Keypair, KeypairType

from core import identity as ident
from core.errors import Invalid

# Fixed mnemonics from tests/phonebook/fixtures/README.md with the public keys and
# SS58 addresses the real chain recorded for them.
VECTORS = [
    ("evolve wink increase pill edit false kangaroo leg catalog front grab mask",
     "de42309f953ec94d75bb75562cd34a6ad438996d4725c9ad63538dcca0b18a49",
     "5H689f8ZtxDFsS5a8Ne79eZnJLd1D8xj5iKtpoa5sRhqPJvt"),
    ("search stool weapon stuff aunt aspect float install ostrich series phrase volcano",
     "aaa5eb0c8ecf935ca8837a3465e90e59c844f6c8917642362980bc778e22ba5e",
     "5FvTHWqgfh5iUevGcGtbzDkJDUQaMKC8e8dLNtZCLT4aM1hD"),
]


@pytest.mark.parametrize(("words", "public_hex", "address"), VECTORS)
def test_same_words_give_the_chain_account(words: str, public_hex: str, address: str) -> None:
    twin = ident.Identity.from_mnemonic(words)
    chain = Keypair.create_from_mnemonic(words, crypto_type=KeypairType.ED25519)
    assert twin.public_key.hex() == public_hex == chain.public_key.hex()
    assert twin.ss58_address == address == chain.ss58_address


@pytest.mark.parametrize(("words", "public_hex", "address"), VECTORS)
def test_signatures_verify_across_libraries(words: str, public_hex: str, address: str) -> None:
    twin = ident.Identity.from_mnemonic(words)
    chain = Keypair.create_from_mnemonic(words, crypto_type=KeypairType.ED25519)
    message = b"twin and chain agree"
    VerifyKey(bytes.fromhex(public_hex)).verify(message, chain.sign(message))
    assert chain.verify(message, twin.sign(message))
    assert not chain.verify(message + b"!", twin.sign(message))


def test_derived_keys_are_fixed_and_separated_by_purpose() -> None:
    twin = ident.Identity.from_mnemonic(VECTORS[0][0])
    keys = {p: twin.derive_key(p) for p in ident.PURPOSES}
    assert len(set(keys.values())) == len(keys)
    assert twin.seed not in keys.values()
    # HKDF-SHA256 (RFC 5869, empty salt) computed by hand: the documented derivation.
    prk = hmac.new(b"\0" * 32, twin.seed, hashlib.sha256).digest()
    okm = hmac.new(prk, b"twin/v1/storage\x01", hashlib.sha256).digest()
    assert keys["storage"] == okm
    assert keys["storage"].hex() == STORAGE_KEY_VECTOR
    with pytest.raises(ValueError):
        twin.derive_key("something-else")


STORAGE_KEY_VECTOR = "a970c6135125d57328cb0225f0cc03fcc01e99b7c1078d5c8113360ba21f9c49"


def test_encryption_key_is_the_x25519_form_of_the_signing_key() -> None:
    alice = ident.Identity.from_mnemonic(VECTORS[0][0])
    bob = ident.Identity.from_mnemonic(VECTORS[1][0])
    sealed = Box(alice.box_key, ident.box_public_key_of(bob.public_key)).encrypt(b"hi bob")
    assert Box(bob.box_key, ident.box_public_key_of(alice.public_key)).decrypt(sealed) == b"hi bob"


def test_a_wrong_word_is_refused() -> None:
    words = VECTORS[0][0].replace("evolve", "abandon")
    with pytest.raises(Invalid, match="mnemonic"):
        ident.Identity.from_mnemonic(words)


def test_key_file_is_private_and_round_trips(tmp_path) -> None:
    twin = ident.Identity.from_mnemonic(ident.new_mnemonic())
    path = ident.save(twin, tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ident.load(tmp_path).public_key == twin.public_key
    assert twin.seed.hex() not in repr(twin)
    with pytest.raises(Invalid, match="refusing to overwrite"):
        ident.save(twin, tmp_path)


def test_a_key_file_readable_by_others_is_refused(tmp_path) -> None:
    path = ident.save(ident.Identity.from_mnemonic(ident.new_mnemonic()), tmp_path)
    os.chmod(path, 0o644)
    with pytest.raises(Invalid, match="readable by others"):
        ident.load(tmp_path)
