"""The TFChain phonebook against a fake node answering from real recorded chain data.

Every test runs substrate-interface over a real websocket (tests/phonebook/
chain_server.py) fed with the spec-144 metadata, raw storage and JSON-RPC
sessions recorded from the real runtime in fixtures/ (copied from the steering repo).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from substrateinterface import Keypair, KeypairType

from core.identity import Identity
from phonebook import PhonebookUnavailable, TwinNotFound
from phonebook.errors import KeyChanged, RecordInvalid
from phonebook.pins import GuardedPhonebook, PinStore
from phonebook.record import TwinRecord
from phonebook.signatures import verify_signature
from phonebook.tfchain import (
    CHAIN_ERRORS,
    InsufficientFunds,
    TermsInvalid,
    TermsNotAccepted,
    TfchainPhonebook,
    TwinExists,
    _chain_error,
    check_terms,
    keypair_from_seed,
)
from phonebook.tfchain_relay import (
    DEFAULT_TERMS_HASH,
    DEFAULT_TERMS_LINK,
    RelayInvalid,
    check_relay,
    x25519_of,
)
from tests.phonebook.chain_server import (
    SUBMIT,
    ChainServer,
    Replay,
    State,
    decode_extrinsic,
    encode_twin,
    fixture,
    session_lines,
    system_account_key,
    terms_key,
    twin_by_account_key,
    twin_key,
)

SESSION_C = "evolve wink increase pill edit false kangaroo leg catalog front grab mask"
TERMS_HASH = "a58548327c4f0918b5162d839ca6e1f1"
ALICE = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
BOB = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
DAVE = "5DAAnrj7VHTznn2AWBemMuyBwZWs6FNFjdyVXUeYum3PTXFy"
ED_C = "5H689f8ZtxDFsS5a8Ne79eZnJLd1D8xj5iKtpoa5sRhqPJvt"
ED_C_HEX = "de42309f953ec94d75bb75562cd34a6ad438996d4725c9ad63538dcca0b18a49"


def fixture_pk(name: str) -> bytes:
    return hashlib.sha256(f"tfchain-fixture-pk:{name}".encode()).digest()


def signature_checks(hex_data: str, public_key: bytes) -> bool:
    """Check an immortal extrinsic's signature as the runtime does (spec 144, tx 2)."""
    raw = bytes.fromhex(hex_data.removeprefix("0x"))
    body = raw[2:] if raw[0] & 3 == 1 else raw[1:]  # drop the compact length (2 bytes here)
    assert body[0] == 0x84 and body[1] == 0  # signed, v4, MultiAddress::Id
    kind, signature, rest = body[34], body[35:99], body[99:]
    decoded = decode_extrinsic(hex_data)
    assert rest[0] == 0 and decoded["nonce"] < 64 and decoded["tip"] == 0  # immortal, small
    extra, call = rest[:3], rest[3:]
    genesis = bytes.fromhex(fixture("metadata.json")["genesis_hash"][2:])
    payload = call + extra + (144).to_bytes(4, "little") + (2).to_bytes(4, "little") + genesis * 2
    if len(payload) > 256:
        payload = hashlib.blake2b(payload, digest_size=32).digest()
    crypto = {0: KeypairType.ED25519, 1: KeypairType.SR25519}[kind]
    return bool(Keypair(public_key=public_key, crypto_type=crypto, ss58_format=42)
                .verify(payload, signature))


def recorded_submits(session: str) -> list[str]:
    return [line["msg"]["params"][0] for line in session_lines(session)
            if line["dir"] == "req" and line["msg"]["method"] == SUBMIT]


@pytest.fixture
def state() -> Iterator[tuple[State, ChainServer]]:
    chain = State()
    with ChainServer(chain) as server:
        yield chain, server


@pytest.fixture
def book(state: tuple[State, ChainServer]) -> Iterator[TfchainPhonebook]:
    pb = TfchainPhonebook(state[1].url, min_rescan=0)
    yield pb
    pb.close()


def storage_value(key: str) -> str:
    raw = fixture("storage.json")
    merged: dict[str, str] = {**raw["tfgrid_module"], **raw["system_account"]}
    return merged[key]


# -- lookups


def test_twin_by_id_sr25519_account(book: TfchainPhonebook) -> None:
    bob = book.resolve(3)
    assert bob.id == 3 and bob.source == "tfchain"
    assert bob.name == "bob.example.org"
    assert bob.public_key == Keypair.create_from_uri("//Bob").public_key
    assert bob.key_type == "sr25519"
    assert bob.endpoints == ("https://bob.example.org",)
    assert bob.mail_domains == ("bob.example.org",)
    assert bob.extra["pk"] == fixture_pk("bob")
    assert bob.extra["account_id"] == BOB
    assert bob.verify() is bob  # shape of a chain record (dotted name) is valid
    assert book.resolve("3") == bob == book.resolve("twin-3")


def test_a_node_answering_with_another_twin_is_refused(
        state: tuple[State, ChainServer], book: TfchainPhonebook) -> None:
    """The record must be the twin asked for: by id its id, by account its key."""
    chain, _ = state
    bob = book.resolve(3)
    chain.put(twin_key(9), encode_twin(3, bob.public_key, "bob.example.org", None))
    with pytest.raises(RecordInvalid, match="not the one asked for"):
        book.resolve(9)
    eve = Keypair.create_from_uri("//Eve").public_key
    chain.put(twin_by_account_key(eve), "0x" + (3).to_bytes(4, "little").hex())
    with pytest.raises(RecordInvalid, match="not the one asked for"):
        book.resolve(eve.hex())


def test_twin_by_account_ed25519(book: TfchainPhonebook) -> None:
    by_ss58 = book.resolve(ED_C)
    assert by_ss58.id == 4 and by_ss58.key_type == "ed25519"
    assert by_ss58.name == "alice-twin-v2.example.org"  # the updated relay
    assert by_ss58.extra["pk"] == fixture_pk("ed25519-session")
    assert book.resolve(ED_C_HEX) == by_ss58 == book.resolve("0x" + ED_C_HEX)
    seed_twin = book.resolve(2)
    assert seed_twin.key_type == "ed25519" and seed_twin.extra["pk"] is None
    assert book.resolve(ALICE).id == 1 and book.resolve(ALICE).key_type == "sr25519"


def test_missing_twins(book: TfchainPhonebook) -> None:
    for missing in (99, "99", DAVE, "nobody.example.org", "alice", "0" * 64):
        with pytest.raises(TwinNotFound):
            book.resolve(missing)
    assert book.by_address("someone@nobody.example.org") is None
    assert book.by_address("not a domain!") is None


def test_by_domain_and_mail_address(book: TfchainPhonebook,
                                    state: tuple[State, ChainServer]) -> None:
    assert book.resolve("bob.example.org").id == 3
    assert book.resolve("Bob.Example.org.").id == 3
    found = book.by_address("x@bob.example.org")
    assert found is not None and found.id == 3
    charlie = book.by_address("charlie.example.org")
    assert charlie is not None and charlie.id == 5
    # one scan of Twins served all of that (the domain index is cached)
    scans = [r for r in state[1].requests if r["method"] == "state_getKeysPaged"]
    assert len(scans) == 2  # one page with 5 twins, one empty page that ends the map


def test_domain_index_refreshes(state: tuple[State, ChainServer]) -> None:
    chain, server = state
    dave = Keypair.create_from_uri("//Dave")
    lazy = TfchainPhonebook(server.url, cache_ttl=3600, min_rescan=3600)
    eager = TfchainPhonebook(server.url, cache_ttl=3600, min_rescan=0)
    try:
        assert lazy.by_address("dave.example.org") is None
        assert eager.by_address("dave.example.org") is None
        chain.put_twin(6, dave.public_key, "dave.example.org", None)
        assert lazy.by_address("dave.example.org") is None  # cached index, not yet refreshed
        found = eager.by_address("dave.example.org")  # a miss on an old index rescans
        assert found is not None and found.id == 6
        # the twin moves to another domain: the stale index entry is checked, not trusted
        chain.put_twin(6, dave.public_key, "dave2.example.org", None)
        assert eager.by_address("dave.example.org") is None
        moved = eager.by_address("dave2.example.org")
        assert moved is not None and moved.id == 6
    finally:
        lazy.close()
        eager.close()


def test_first_claim_of_a_domain_wins(book: TfchainPhonebook,
                                      state: tuple[State, ChainServer],
                                      caplog: pytest.LogCaptureFixture) -> None:
    dave = Keypair.create_from_uri("//Dave")
    state[0].put_twin(6, dave.public_key, "bob.example.org", None)
    with caplog.at_level(logging.WARNING, logger="twin.phonebook.tfchain"):
        found = book.by_address("bob.example.org")
    assert found is not None and found.id == 3
    assert "claimed by twins 3 and 6" in caplog.text


def test_list_all_twins(book: TfchainPhonebook) -> None:
    twins = book.list()
    assert [t.id for t in twins] == [1, 2, 3, 4, 5]
    expected = {t["id"]: t for t in fixture("twins.json")}
    for t in twins:
        assert t.public_key.hex() == expected[t.id]["account_public_key_hex"][2:]
        assert t.key_type == expected[t.id]["key_type"]
        assert t.extra["relay"] == expected[t.id]["relay"]


def test_sr25519_and_ed25519_signatures(book: TfchainPhonebook) -> None:
    message = b"twin envelope body"
    ed = Keypair.create_from_mnemonic(SESSION_C, crypto_type=KeypairType.ED25519)
    bob = Keypair.create_from_uri("//Bob")
    twin4, twin3 = book.resolve(4), book.resolve(3)
    assert verify_signature(twin4, message, ed.sign(message))
    assert verify_signature(twin3, message, bob.sign(message))
    assert not verify_signature(twin4, message + b"!", ed.sign(message))
    assert not verify_signature(twin3, message + b"!", bob.sign(message))
    assert not verify_signature(twin4, message, bob.sign(message))
    assert not verify_signature(twin3, message, ed.sign(message))
    assert not verify_signature(twin3, message, b"\x00" * 10)
    # a local record verifies ed25519 only (its key is a twin's own signing key)
    local = TwinRecord(name="edc", public_key=ed.public_key)
    assert verify_signature(local, message, ed.sign(message))
    assert not verify_signature(TwinRecord(name="bob", public_key=bob.public_key,
                                           key_type="sr25519"), message, bob.sign(message))


def test_record_names_from_the_chain_only() -> None:
    key = b"\x01" * 32
    TwinRecord(name="bob.example.org", public_key=key, source="tfchain").check_shape()
    TwinRecord(name="twin-7", public_key=key, source="tfchain").check_shape()
    with pytest.raises(RecordInvalid):
        TwinRecord(name="bob.example.org", public_key=key).check_shape()
    with pytest.raises(RecordInvalid):
        TwinRecord(name="bad name!", public_key=key, source="tfchain").check_shape()


# -- pinning and an unreachable chain, through GuardedPhonebook


def test_key_change_on_chain_is_surfaced(state: tuple[State, ChainServer],
                                         tmp_path: Path) -> None:
    chain, server = state
    guarded = GuardedPhonebook(TfchainPhonebook(server.url, min_rescan=0),
                               PinStore(tmp_path / "pins.db"), ttl=0)
    try:
        assert guarded.resolve("bob.example.org").id == 3  # pinned: Bob's account key
        dave = Keypair.create_from_uri("//Dave")
        chain.put_twin(3, bytes.fromhex("8eaf04151687736326c9fea17e25fc5287613693c912909cb226"
                                        "aa4794f26a48"), "bob-moved.example.org", None)
        chain.put_twin(6, dave.public_key, "bob.example.org", None)
        with pytest.raises(KeyChanged):
            guarded.resolve("bob.example.org")
        with pytest.raises(KeyChanged):
            guarded.by_address("mail@bob.example.org")
        guarded.pins.repin("bob.example.org")
        assert guarded.resolve("bob.example.org").public_key == dave.public_key
    finally:
        guarded.close()


def test_unreachable_chain_serves_cache_never_new_keys(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    server = ChainServer(State()).start()
    guarded = GuardedPhonebook(TfchainPhonebook(server.url, timeout=5),
                               PinStore(tmp_path / "pins.db"), ttl=0)
    try:
        bob = guarded.resolve(3)
        server.stop()
        with caplog.at_level(logging.WARNING):
            stale = guarded.resolve(3)  # stale cache, with a warning and its age
        assert stale == bob and stale.extra["stale"] and stale.extra["cache_age"] >= 0
        assert "using the cached answer for 3" in caplog.text
        with pytest.raises(PhonebookUnavailable):
            guarded.resolve(5)  # never seen: no answer rather than an unverified one
    finally:
        guarded.close()
        server.stop()


def test_resolve_cache_is_on_disk_for_every_process(tmp_path: Path) -> None:
    """Another process of the twin (a new GuardedPhonebook on the same pins.db) gets the
    answer the first one verified, with its age, while the chain is down."""
    server = ChainServer(State()).start()
    first = GuardedPhonebook(TfchainPhonebook(server.url), PinStore(tmp_path / "pins.db"),
                             ttl=600)
    try:
        bob = first.resolve("bob.example.org")
        assert first.by_address("x@nobody.example") is None  # a miss is cached too
    finally:
        first.close()
        server.stop()
    second = GuardedPhonebook(TfchainPhonebook(server.url, connect_timeout=1),
                              PinStore(tmp_path / "pins.db"), ttl=600)
    try:
        again = second.resolve("bob.example.org")  # fresh in the cache: no chain call
        assert again == bob and again.extra["pk"] == bob.extra["pk"]
        assert 0 <= again.extra["cache_age"] < 600 and "stale" not in again.extra
        assert second.by_address("y@nobody.example") is None
        second.invalidate()  # now only good while the chain is unreachable
        stale = second.resolve("bob.example.org")
        assert stale == bob and stale.extra["stale"]
    finally:
        second.close()


def test_terms_the_runtime_refuses_are_refused_before_paying() -> None:
    """The runtime refuses an empty hash or link with a fee (DocumentHashInputTooShort)."""
    assert CHAIN_ERRORS["DocumentHashInputTooShort"] is TermsInvalid
    check_terms(DEFAULT_TERMS_LINK, DEFAULT_TERMS_HASH)  # the defaults are accepted
    for link, digest in (("", DEFAULT_TERMS_HASH), (DEFAULT_TERMS_LINK, ""),
                         (DEFAULT_TERMS_LINK, "a" * 51), ("h" * 2049, DEFAULT_TERMS_HASH)):
        with pytest.raises(TermsInvalid):
            check_terms(link, digest)


def test_closed_port_is_unavailable() -> None:
    server = ChainServer(State()).start()
    url = server.url
    server.stop()
    book = TfchainPhonebook(url, timeout=5)
    with pytest.raises(PhonebookUnavailable, match="unreachable"):
        book.resolve(1)
    book.close()


# -- the twin's account


def test_identity_is_the_chain_account() -> None:
    identity = Identity.from_mnemonic(SESSION_C)
    keypair = keypair_from_seed(identity.seed)
    reference = Keypair.create_from_mnemonic(SESSION_C, crypto_type=KeypairType.ED25519)
    assert keypair.ss58_address == reference.ss58_address == ED_C == identity.ss58_address
    assert keypair.public_key == identity.public_key


# -- publish: extrinsics compared with the recorded ones


def test_publish_ed25519_gives_the_recorded_extrinsics() -> None:
    """Session (c): user_accept_tc, create_twin, update_twin, byte-identical to the recording."""
    replay = Replay("create-twin-ed25519", start_segment=1)  # after Alice funded the account
    seed = Identity.from_mnemonic(SESSION_C).seed
    pk = fixture_pk("ed25519-session")
    with ChainServer(replay) as server:
        book = TfchainPhonebook(server.url, seed, terms_hash=TERMS_HASH)
        created = book.publish_twin("alice-twin.example.org", pk)
        assert (created.id, created.name, created.key_type) == (4, "alice-twin.example.org",
                                                                "ed25519")
        updated = book.publish_twin("alice-twin-v2.example.org", pk)
        assert updated.id == 4 and updated.mail_domains == ("alice-twin-v2.example.org",)
        assert book.resolve(4) == updated
        book.close()
    assert replay.submitted == recorded_submits("create-twin-ed25519")[1:]
    calls = [decode_extrinsic(x) for x in replay.submitted]
    assert [c["call"]["call_function"] for c in calls] == ["user_accept_tc", "create_twin",
                                                           "update_twin"]
    for c, hex_data in zip(calls, replay.submitted, strict=True):
        assert c["call"]["call_module"] == "TfgridModule"
        assert c["address"] == ED_C and "Ed25519" in c["signature"]
        assert signature_checks(hex_data, bytes.fromhex(ED_C_HEX))
    assert calls[1]["call"]["call_args"] == [
        {"name": "relay", "type": "RelayInput", "value": "alice-twin.example.org"},
        {"name": "pk", "type": "PkInput", "value": "0x" + pk.hex()}]
    assert calls[2]["call"]["call_args"][0]["value"] == "alice-twin-v2.example.org"
    assert [c["nonce"] for c in calls] == [0, 1, 2]


def test_publish_sr25519_account() -> None:
    """Session (b): //Bob accepts the terms and creates twin 3."""
    bob = Keypair.create_from_uri("//Bob")
    overlay = {system_account_key(bob.public_key):
               storage_value(system_account_key(bob.public_key))}
    replay = Replay("create-twin-sr25519", overlay=overlay)
    with ChainServer(replay) as server:
        book = TfchainPhonebook(server.url, keypair=bob, terms_hash=TERMS_HASH)
        twin = book.publish_twin("bob.example.org", fixture_pk("bob"))
        book.close()
    assert (twin.id, twin.name, twin.key_type) == (3, "bob.example.org", "sr25519")
    assert not replay.refused
    calls = [decode_extrinsic(x) for x in replay.submitted]
    assert [c["call"]["call_function"] for c in calls] == ["user_accept_tc", "create_twin"]
    assert all(c["address"] == BOB and "Sr25519" in c["signature"] for c in calls)
    assert all(signature_checks(x, bob.public_key) for x in replay.submitted)
    assert not signature_checks(replay.submitted[0],
                                Keypair.create_from_uri("//Dave").public_key)
    assert calls[1]["call"]["call_args"][0]["value"] == "bob.example.org"
    assert calls[1]["call"]["call_args"][1]["value"] == "0x" + fixture_pk("bob").hex()


def test_chain_errors_become_clear_errors() -> None:
    """Session (d): terms not accepted (accept, retry once), then 'twin exists'."""
    charlie = Keypair.create_from_uri("//Charlie")
    # The terms storage says "accepted" (as at the final head), the runtime says not:
    # publish must handle the error, accept and retry once, exactly as recorded.
    overlay = {k: storage_value(k) for k in (system_account_key(charlie.public_key),
                                             terms_key(charlie.public_key))}
    replay = Replay("errors", overlay=overlay)
    with ChainServer(replay) as server:
        book = TfchainPhonebook(server.url, keypair=charlie, terms_hash=TERMS_HASH)
        twin = book.publish_twin("charlie.example.org", fixture_pk("charlie"))
        assert (twin.id, twin.key_type) == (5, "sr25519")
        with pytest.raises(TwinExists, match=r"TwinWithPubkeyExists.*already has a twin"):
            book.create_twin("charlie-again.example.org", None)
        assert book.resolve(charlie.ss58_address).name == "charlie.example.org"
        book.close()
    assert not replay.refused
    assert [decode_extrinsic(x)["call"]["call_function"] for x in replay.submitted] == [
        "create_twin", "user_accept_tc", "create_twin", "create_twin"]


def test_error_table() -> None:
    error = {"type": "Module", "name": "UserDidNotSignTermsAndConditions", "docs": []}
    assert isinstance(_chain_error("create_twin", error), TermsNotAccepted)
    assert isinstance(_chain_error("create_twin", {"name": "InvalidRelay"}), RelayInvalid)


def test_no_funds_is_refused_before_submitting(state: tuple[State, ChainServer]) -> None:
    _, server = state
    book = TfchainPhonebook(server.url, keypair=Keypair.create_from_uri("//Dave"))
    with pytest.raises(InsufficientFunds, match=f"{DAVE} holds 0.0000000 TFT"):
        book.publish_twin("dave.example.org", None)
    book.close()
    assert not [r for r in server.requests if r["method"] == SUBMIT]


@pytest.mark.parametrize("relay", [
    "https://bob.example.org/", "bob.example.org:8443", "", "a.b_c.d_e.f_g.h_i.j",
    "bad..domain", "white space.org", "x" * 1100])
def test_bad_relay_refused_locally(relay: str, state: tuple[State, ChainServer]) -> None:
    book = TfchainPhonebook(state[1].url, Identity.from_mnemonic(SESSION_C).seed)
    with pytest.raises(RelayInvalid):
        book.publish_twin(relay, None)
    assert state[1].requests == []  # refused before a byte went to the chain
    book.close()


def test_good_relays() -> None:
    assert check_relay("bob.example.org") == ["bob.example.org"]
    assert check_relay("a.org_B.org_c.org_d.org") == ["a.org", "b.org", "c.org", "d.org"]
    assert check_relay("127.0.0.2") == ["127.0.0.2"]


def test_publish_own_record_is_a_noop_when_the_chain_agrees(
        state: tuple[State, ChainServer]) -> None:
    chain, server = state
    identity = Identity(hashlib.sha256(b"publish-noop").digest())
    pk = x25519_of(identity.public_key)
    chain.put_twin(6, identity.public_key, "me.example.org", pk)
    book = TfchainPhonebook(server.url, identity.seed)
    record = TwinRecord(name="me", public_key=identity.public_key,
                        endpoints=("https://127.0.0.1:8443",), mail_domains=("me.example.org",))
    stored = book.publish(record)
    assert (stored.id, stored.name, stored.key_type) == (6, "me.example.org", "ed25519")
    assert stored.extra["pk"] == bytes(identity.box_public_key)
    with pytest.raises(RecordInvalid, match="only the account's own twin"):
        book.publish(TwinRecord(name="other", public_key=b"\x02" * 32))
    book.close()
    assert not [r for r in server.requests if r["method"] == SUBMIT]


# -- the CLI with the tfchain backend


def test_cli_resolve_and_publish_with_tfchain(state: tuple[State, ChainServer],
                                              tmp_path: Path) -> None:
    from tests.twins import twin_cli

    chain, server = state
    data = tmp_path / "me"
    out = json.loads(twin_cli(data, "init", "--name", "me", "--domain", "me.example.org",
                              "--json").stdout)
    chain_sets = ["--set", "phonebook.backend=tfchain", "--set", f"phonebook.url={server.url}"]
    done = twin_cli(data, *chain_sets, "phonebook", "resolve", "x@bob.example.org", "--json")
    shown = json.loads(done.stdout)
    assert shown["id"] == 3 and shown["account_id"] == BOB
    assert shown["pk"] == fixture_pk("bob").hex()
    # no funds yet: a clear error, nothing submitted
    failed = twin_cli(data, *chain_sets, "phonebook", "publish", check=False)
    assert failed.returncode == 2
    assert f"TFChain account {out['account']} holds 0.0000000 TFT" in failed.stderr
    # the chain already holds this twin as it would publish it: nothing to pay for
    identity = Identity.from_mnemonic(out["mnemonic"])
    chain.put_twin(6, identity.public_key, "me.example.org", bytes(identity.box_public_key))
    done = twin_cli(data, *chain_sets, "phonebook", "publish")
    assert f"published me.example.org (id 6) on TFChain as {out['account']}" in done.stdout
    assert not [r for r in server.requests if r["method"] == SUBMIT]
