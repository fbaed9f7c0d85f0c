"""Two real twins configured with the tfchain phonebook find each other on the chain
and exchange a signed, encrypted envelope.

The chain is the fake node of tests/phonebook/chain_server.py over the real
recorded storage, holding both twins as ``create_twin`` would have stored them
(relay = the twin's domain, pk = its X25519 key). A relay holds no port, so the
two twins listen on two loopback addresses with one common HTTPS port
(``phonebook.tfchain_port``), and each twin's name and domain are its address:
the name a twin signs envelopes with is the one the chain knows it by.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from core.identity import Identity
from tests.phonebook.chain_server import ChainServer, State
from tests.twins import TwinProcess, twin_cli

HOSTS = {"alice": "127.0.0.2", "bob": "127.0.0.3"}


def common_free_port() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind((HOSTS["alice"], 0))
            port = int(s.getsockname()[1])
        try:
            with socket.socket() as s:
                s.bind((HOSTS["bob"], port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free on both loopback addresses")


@pytest.fixture
def chain() -> Iterator[tuple[State, ChainServer]]:
    state = State()
    with ChainServer(state) as server:
        yield state, server


def test_two_twins_find_each_other_on_tfchain(
        twins: Callable[..., TwinProcess], chain: tuple[State, ChainServer]) -> None:
    state, server = chain
    port = common_free_port()
    made: dict[str, TwinProcess] = {}
    for twin_id, name in ((6, "alice"), (7, "bob")):
        host = HOSTS[name]
        twin = twins(name, start=False, sets=[
            "phonebook.backend=tfchain", f"phonebook.url={server.url}",
            f"phonebook.tfchain_port={port}", f"listen.host={host}", f"http.port={port}",
            f"twin.domain={host}", "peer.retry_schedule=[0.2,0.5,1]"])
        identity = Identity.from_mnemonic(twin.mnemonic)
        state.put_twin(twin_id, identity.public_key, host, bytes(identity.box_public_key))
        made[name] = twin.start()
    alice, bob = made["alice"], made["bob"]
    sets = [a for s in alice.extra_sets for a in ("--set", s)]
    bob_sets = [a for s in bob.extra_sets for a in ("--set", s)]

    # alice finds bob on the chain: by his domain, his mail address and his twin id
    shown = json.loads(twin_cli(alice.data, *sets, "phonebook", "resolve",
                                f"bob@{HOSTS['bob']}", "--json").stdout)
    assert shown["id"] == 7 and shown["endpoints"] == [f"https://{HOSTS['bob']}:{port}"]
    assert shown["key_type"] == "ed25519" and shown["source"] == "tfchain"

    # and sends him a signed, encrypted message, which he verifies against the chain
    twin_cli(alice.data, *sets, "send", HOSTS["bob"], "hello over tfchain")
    deadline = time.monotonic() + 30
    messages: list[dict[str, object]] = []
    while time.monotonic() < deadline and not messages:
        messages = json.loads(twin_cli(bob.data, *bob_sets, "inbox", "--json").stdout)
        time.sleep(0.2)
    assert [(m["from"], m["text"]) for m in messages] == [(HOSTS["alice"], "hello over tfchain")], \
        alice.log()[-3000:]
    # nothing was submitted: both twins were already on chain as they would publish
    assert not [r for r in server.requests if r["method"] == "author_submitAndWatchExtrinsic"]
