"""Twins on the real TFChain runtime (spec 144 under chopsticks, tests/phonebook/chopsticks.py).

One chain for the module, used in order: two twins made with `twin init` and the
tfchain backend publish with the default settings once //Alice funds them, find
each other and exchange a native message and an SMTP mail; then the errors, on
the same real runtime: unfunded account, duplicate create, relay that is not a
bare domain, a pk that disagrees with the account key, a hung node, a stopped
node, a restarted node. Figures go to the log (``-s`` shows them).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiosmtplib
import pytest

from core import identity as ident
from phonebook.pins import GuardedPhonebook, PinStore
from phonebook.tfchain import (
    MIN_FUNDS,
    TFT,
    TfchainPhonebook,
    TwinExists,
    keypair_from_seed,
)
from phonebook.tfchain_relay import RelayInvalid, x25519_of
from tests.e2e.test_mail_quarantine import imap_subjects
from tests.phonebook.chopsticks import Chopsticks, free_port
from tests.protocols.smtp.helpers import submit
from tests.twins import TwinProcess, twin_cli

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@dataclass
class Chain:
    node: Chopsticks
    root: Path
    twins: dict[str, TwinProcess]
    figures: dict[str, object]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    root = tmp_path_factory.mktemp("tfchain")
    node = Chopsticks(root).start()
    state = Chain(node, root, {}, {})
    try:
        yield state
    finally:
        for twin in state.twins.values():
            twin.stop()
        node.stop()
        print("\nTFChain figures:", json.dumps(state.figures, indent=1))


def chain_sets(node: Chopsticks) -> list[str]:
    """The tfchain backend on the test node; answers may be slow on a loaded 2-core machine."""
    return ["phonebook.backend=tfchain", f"phonebook.url={node.url}",
            "phonebook.tfchain_timeout=20", "phonebook.publish_retry=0.5",
            "log.level=debug"]  # the per-message lines the tests wait for are at debug


def init(chain: Chain, name: str, http_port: int, peer_port: int) -> TwinProcess:
    sets = [*chain_sets(chain.node), f"http.port={http_port}",
            f'peer.hosts=["{"bob" if name == "alice" else "alice"}.localhost='
            f'127.0.0.1:{peer_port}"]']
    args = [a for s in sets for a in ("--set", s)]
    data = chain.root / name
    started = time.monotonic()
    done = twin_cli(data, *args, "init", "--name", name, "--json", timeout=120)
    out = json.loads(done.stdout)
    chain.figures[f"init {name} (unfunded)"] = f"{time.monotonic() - started:.1f} s"
    assert out["mnemonic"] and out["password"] and out["twin_id"] is None
    assert "not published on TFChain yet" in done.stderr and out["account"] in done.stderr
    assert "holds 0.0000000 TFT" in done.stderr  # refused locally: nothing was submitted
    assert (data / ident.KEY_FILE).exists()
    toml = (data / "twin.toml").read_text()  # --set given to init is kept
    assert f'url = "{chain.node.url}"' in toml and "tfchain_timeout = 20.0" in toml
    twin = TwinProcess(data, name, out["login"], out["password"], out["mnemonic"],
                       [f"http.port={http_port}"])
    twin.account = out["account"]  # type: ignore[attr-defined]
    chain.twins[name] = twin
    return twin


def status(twin: TwinProcess) -> str:
    return twin_cli(twin.data, "status", check=False).stdout


def wait_for(what: str, check: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def test_unfunded_twins_serve_then_publish_with_defaults(chain: Chain) -> None:
    """`twin init` keeps the words and the twin when the account is empty; `twin serve`
    starts anyway and publishes once funded; the default terms are accepted."""
    ports = {"alice": free_port(), "bob": free_port()}
    with ThreadPoolExecutor(2) as pool:  # two processes at once: half the wait
        made = [pool.submit(init, chain, name, ports[name], ports[other])
                for name, other in (("alice", "bob"), ("bob", "alice"))]
        alice, bob = (f.result() for f in made)
        assert chain.node.free(alice.account) == 0  # type: ignore[attr-defined]  # no fee
        for started in [pool.submit(twin.start, timeout=60) for twin in (alice, bob)]:
            started.result()
    # "NOT published yet ... not tried yet" comes first; the reason once it has tried
    wait_for("status says why", lambda: "holds 0.0000000 TFT" in status(alice))
    assert "NOT published yet" in status(alice) and "healthy" in status(alice)
    funding = 1  # TFT, enough for a few extrinsics
    for twin in (alice, bob):
        chain.node.fund(twin.account, funding)  # type: ignore[attr-defined]
    started = time.monotonic()
    wait_for("alice published", lambda: "published (id" in status(alice), timeout=90)
    wait_for("bob published", lambda: "published (id" in status(bob), timeout=90)
    chain.figures["publish after funding, both twins (incl. retry wait)"] = \
        f"{time.monotonic() - started:.1f} s"
    left = chain.node.free(alice.account)  # type: ignore[attr-defined]
    paid = funding * TFT - left
    assert 0 < paid < MIN_FUNDS  # two extrinsics: user_accept_tc + create_twin
    chain.figures["publish on a fresh account"] = (
        f"2 extrinsics (user_accept_tc, create_twin), fees {paid / TFT:.7f} TFT")
    assert "user_accept_tc" in alice.log() and "create_twin" in alice.log()
    chain.figures["publish on a fresh account, first submit to twin stored"] = \
        f"{log_span(alice.log(), 'submitting TfgridModule', 'published twin'):.1f} s"


def log_span(log: str, first: str, last: str) -> float:
    """Seconds between the first line holding ``first`` and the last holding ``last``."""
    def at(line: str) -> float:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    lines = log.splitlines()
    return at([ln for ln in lines if last in ln][-1]) - at(next(ln for ln in lines
                                                                 if first in ln))


def test_resolve_cold_and_cached_then_message_and_mail(chain: Chain) -> None:
    alice, bob = chain.twins["alice"], chain.twins["bob"]
    started = time.monotonic()
    cold = twin_cli(alice.data, "phonebook", "resolve", "bob.localhost", "--json")
    cold_s = time.monotonic() - started
    record = json.loads(cold.stdout)
    assert record["name"] == "bob.localhost" and "cached" not in record
    bob_key = bytes.fromhex(ident.load(bob.data).public_key.hex())
    assert record["public_key"] == bob_key.hex()
    assert record["pk"] == x25519_of(bob_key).hex()  # type: ignore[union-attr]
    started = time.monotonic()
    warm = json.loads(twin_cli(alice.data, "phonebook", "resolve", "bob.localhost",
                               "--json").stdout)
    chain.figures["CLI resolve cold / cached"] = \
        f"{cold_s:.2f} s / {time.monotonic() - started:.2f} s (process start included)"
    assert warm["cached"].endswith("s old") and warm["public_key"] == record["public_key"]
    # the same in one process: the chain's answer, then the on-disk cache's
    guarded = GuardedPhonebook(TfchainPhonebook(chain.node.url, timeout=20),
                               PinStore(chain.root / "pins-measure.db"), ttl=600)
    try:
        started = time.monotonic()
        guarded.resolve("bob.localhost")
        cold_s = time.monotonic() - started
        started = time.monotonic()
        assert "cache_age" not in guarded.resolve("bob.localhost").extra  # its own memory
        memory_s = time.monotonic() - started
    finally:
        guarded.close()
    other = GuardedPhonebook(TfchainPhonebook(chain.node.url, timeout=20),
                             PinStore(chain.root / "pins-measure.db"), ttl=600)
    try:  # another process of the twin: the answer on disk
        started = time.monotonic()
        assert "cache_age" in other.resolve("bob.localhost").extra
        chain.figures["resolve in process: cold (connect incl.) / memory / disk cache"] = \
            f"{cold_s:.3f} s / {memory_s:.5f} s / {time.monotonic() - started:.4f} s"
    finally:
        other.close()
    # a native message, alice -> bob, through the running twins
    twin_cli(alice.data, "send", "bob.localhost", "hello over tfchain")
    wait_for("message arrives", lambda: "hello over tfchain" in twin_cli(
        bob.data, "inbox").stdout, timeout=60)
    # an SMTP mail, alice's submission port -> bob's inbox, twin to twin
    msg = (f"From: <{alice.login}>\r\nTo: <{bob.login}>\r\nSubject: over tfchain\r\n"
           f"\r\nHi Bob\r\n").encode()
    asyncio.run(submit(alice, alice.login, [bob.login], msg))
    wait_for("mail arrives in bob's Inbox", lambda: any(
        b"over tfchain" in subject for subject in imap_subjects(bob, 1, timeout=5)), timeout=60)


def test_chain_refusals_are_caught_before_paying(chain: Chain) -> None:
    """Duplicate create is the chain's refusal (fee paid); a bad relay never leaves."""
    bob = chain.twins["bob"]
    book = TfchainPhonebook(chain.node.url, ident.load(bob.data).seed, timeout=20)
    try:
        before = book.balance()
        with pytest.raises(RelayInvalid):
            book.publish_twin("https://bob.localhost:8443", None)
        with pytest.raises(RelayInvalid):
            book.publish_twin("127.0.0.1:8443", None)
        assert book.balance() == before and book.fees_paid == []  # refused locally
        with pytest.raises(TwinExists):
            book.create_twin("bob.localhost", None)  # the runtime: TwinWithPubkeyExists
        assert [f for f, _ in book.fees_paid] == ["create_twin"]
        assert book.balance() < before  # a refused extrinsic still pays
        # the chain already agrees: publishing again submits nothing
        again = book.publish_twin("bob.localhost", x25519_of(book.keypair.public_key))
        assert again.name == "bob.localhost" and len(book.fees_paid) == 1
    finally:
        book.close()


def test_pk_that_is_not_the_account_key_is_refused(chain: Chain) -> None:
    alice, bob = chain.twins["alice"], chain.twins["bob"]
    book = TfchainPhonebook(chain.node.url, ident.load(bob.data).seed, timeout=20)
    try:
        book.publish_twin("bob.localhost", b"\x01" * 32)  # update_twin with a foreign pk
    finally:
        book.close()
    twin_cli(alice.data, "phonebook", "repin", "bob.localhost")  # drops the cached answer
    shown = twin_cli(alice.data, "phonebook", "resolve", "bob.localhost")
    assert "not the X25519 form of its account key" in shown.stderr
    refused = twin_cli(alice.data, "send", "bob.localhost", "secret", check=False)
    assert refused.returncode == 2 and "refusing to encrypt" in refused.stderr
    book = TfchainPhonebook(chain.node.url, ident.load(bob.data).seed, timeout=20)
    try:  # put it back for the tests below
        book.publish_twin("bob.localhost", x25519_of(book.keypair.public_key))
    finally:
        book.close()
    twin_cli(alice.data, "phonebook", "repin", "bob.localhost")
    twin_cli(alice.data, "phonebook", "resolve", "bob.localhost")


def test_hung_node_costs_bounded_time(chain: Chain) -> None:
    """SIGSTOP: the node accepts connections and never answers."""
    alice, bob = chain.twins["alice"], chain.twins["bob"]
    fast = ["--set", "phonebook.tfchain_timeout=3", "--set", "phonebook.tfchain_connect_timeout=3"]
    chain.node.pause()
    try:
        started = time.monotonic()
        cached = twin_cli(alice.data, *fast, "phonebook", "resolve", "bob.localhost")
        chain.figures["CLI resolve, node hung, cached"] = f"{time.monotonic() - started:.2f} s"
        assert "s old" in cached.stdout
        started = time.monotonic()
        unknown = twin_cli(alice.data, *fast, "phonebook", "resolve", "99", check=False)
        took = time.monotonic() - started
        chain.figures["CLI resolve, node hung, not cached"] = f"{took:.2f} s"
        assert unknown.returncode == 2 and "unreachable" in unknown.stderr
        assert "Traceback" not in unknown.stderr and took < 15
        msg = (f"From: <{alice.login}>\r\nTo: <{bob.login}>\r\nSubject: while hung\r\n"
               f"\r\nstill\r\n").encode()
        started = time.monotonic()
        asyncio.run(submit(alice, alice.login, [bob.login], msg))  # bob: known, cached
        chain.figures["SMTP submission, node hung, recipient twin cached"] = \
            f"{time.monotonic() - started:.2f} s"
        started = time.monotonic()
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            other = f"From: <{alice.login}>\r\nTo: <x@new.example>\r\n\r\nx\r\n".encode()
            asyncio.run(submit(alice, alice.login, ["x@new.example"], other))
        took = time.monotonic() - started
        assert refused.value.code == 451  # try again later: nothing known, nothing lost
        chain.figures["SMTP submission, node hung, domain never looked up (451)"] = \
            f"{took:.2f} s"
        assert took < 10  # phonebook.mail_wait (2 s) bounds it, not the chain
    finally:
        chain.node.resume()
    wait_for("mail arrives", lambda: alice.log().count("1 twin(s)") >= 2, timeout=60)


def test_stopped_then_restarted_node(chain: Chain) -> None:
    """Stopped: the cache answers with its age, commands fail in one line. Started again:
    a connection opened before meets a dead socket ("Broken pipe") and reconnects once."""
    alice = chain.twins["alice"]
    book = TfchainPhonebook(chain.node.url, keypair=keypair_from_seed(b"\x07" * 32),
                            timeout=20)
    assert book.balance() == 0  # connected
    chain.node.stop()
    try:
        twin_cli(alice.data, "phonebook", "repin", "bob.localhost")  # stale from now on
        shown = twin_cli(alice.data, "phonebook", "resolve", "bob.localhost")
        assert "(phonebook unreachable)" in shown.stdout and "s old" in shown.stdout
        sent = twin_cli(alice.data, "send", "bob.localhost", "queued while the chain is down")
        assert sent.stdout.startswith("queued ")  # resolved from the shared cache
        listed = twin_cli(alice.data, "phonebook", "list", check=False)
        assert listed.returncode == 2 and "Traceback" not in listed.stderr
        assert listed.stderr.splitlines()[-1].startswith("twin: TFChain node")
    finally:
        chain.node.start()  # the same port, a fresh chain (no db is kept)
    try:
        assert book.balance() == 0  # reached again without an error
    finally:
        book.close()
