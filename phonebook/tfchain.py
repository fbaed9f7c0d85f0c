"""The TFChain phonebook: twins found on ThreeFold's Substrate chain.

Reads ``TfgridModule.Twins`` / ``TwinIdByAccountID`` through substrate-interface
and maps each chain twin to a ``TwinRecord`` (``tfchain_relay`` holds the
mapping: relay domain = name, mail domains and endpoint). Publishing signs
``user_accept_tc`` (once), ``create_twin`` or ``update_twin`` with the twin's
own account: the ed25519 key of its mnemonic, so the same words are the same
chain account.

Trust: the chain's extrinsic signature by the account is the proof of a chain
record (they carry no signature of their own); ``GuardedPhonebook`` in front of
this backend pins the key per name and serves its cache when the chain is down.
Connection failures raise ``PhonebookUnavailable`` for exactly that reason;
nothing here ever invents a key.

Resolving by domain needs a scan of ``Twins`` (``query_map``), kept as a
domain -> lowest twin id index refreshed after ``cache_ttl`` seconds (or on a
miss once it is ``min_rescan`` old). When several twins claim a domain the
lowest id wins: ids only grow and twins are never deleted, so a later claim
cannot take over a domain (it is logged).

All calls are synchronous and serialised by one lock (a substrate-interface
connection is not thread-safe); core runs them in its thread pool. Every call is
bounded: ``connect_timeout`` for the websocket handshake, ``timeout`` for each
answer, ``submit_timeout`` for an extrinsic's inclusion (a node that accepts
connections but never answers costs at most these, never a hang). After a
failure the node is not asked again for ``retry_after`` seconds (callers get
``PhonebookUnavailable`` at once and serve their cache). A connection that
broke since its last use (the node restarted: "Broken pipe") is reopened and
the read retried once.

What the runtime refuses is refused here first, before anything is signed: a
refused extrinsic is still included and pays its fee (``check_relay``,
``check_terms``, ``check_funds``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from scalecodec.utils.ss58 import ss58_decode, ss58_encode
from substrateinterface import Keypair, KeypairType, SubstrateInterface
from substrateinterface.exceptions import SubstrateRequestException
from websocket import WebSocketException

from phonebook.errors import PhonebookError, PhonebookUnavailable, RecordInvalid, TwinNotFound
from phonebook.record import DOMAIN_RE, TwinRecord
from phonebook.tfchain_relay import (
    DEFAULT_PORT,
    DEFAULT_TERMS_HASH,
    DEFAULT_TERMS_LINK,
    MAX_PK,
    RelayInvalid,
    check_relay,
    domains_to_relay,
    twin_to_record,
    x25519_of,
)

log = logging.getLogger("twin.phonebook.tfchain")
T = TypeVar("T")

PALLET = "TfgridModule"
SS58_FORMAT = 42
TFT = 10**7  # TFT has 7 decimals
MIN_FUNDS = TFT // 100  # 0.01 TFT: a twin extrinsic costs about 0.001 TFT
HEX_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
TWIN_ID = re.compile(r"^(?:twin-)?([0-9]{1,10})$")
TERMS_LINK_LIMITS = (1, 2048)  # bytes, as the spec-144 runtime checks them
TERMS_HASH_LIMITS = (1, 50)
Events = list[dict[str, Any]]  # decoded events of one extrinsic
MAX_SCAN = 200_000  # twins indexed at most (mainnet has tens of thousands)


class ChainRejected(PhonebookError):
    """TFChain refused an extrinsic (it was still included and paid its fee)."""


class InsufficientFunds(ChainRejected):
    """The twin's account cannot pay the fee: send it some TFT first."""


class TermsNotAccepted(ChainRejected):
    """The account has not accepted the grid's terms and conditions."""


class TwinExists(ChainRejected):
    """The account already has a twin (one per account; use update_twin)."""


class TermsInvalid(RecordInvalid):
    """A terms link or hash the runtime would refuse (checked before anything is paid)."""


# Chain error names (TfgridModule and friends) -> our error type: the one table.
CHAIN_ERRORS: dict[str, type[PhonebookError]] = {
    "UserDidNotSignTermsAndConditions": TermsNotAccepted,
    "TwinWithPubkeyExists": TwinExists,
    "TwinExists": TwinExists,
    "TwinNotExists": TwinNotFound,
    "RelayTooShort": RelayInvalid,
    "RelayTooLong": RelayInvalid,
    "InvalidRelay": RelayInvalid,
    "InvalidRelayAddress": RelayInvalid,
    "InsufficientBalance": InsufficientFunds,
    "Payment": InsufficientFunds,
    "DocumentLinkInputTooShort": TermsInvalid,
    "DocumentLinkInputTooLong": TermsInvalid,
    "DocumentHashInputTooShort": TermsInvalid,
    "DocumentHashInputTooLong": TermsInvalid,
}
UNREACHABLE = (OSError, WebSocketException, TimeoutError, ConnectionError)


def check_terms(link: str, digest: str) -> None:
    """Refuse, before signing, a terms link or hash the runtime refuses (and charges for)."""
    for what, value, (low, high) in (("phonebook.terms_link", link, TERMS_LINK_LIMITS),
                                     ("phonebook.terms_hash", digest, TERMS_HASH_LIMITS)):
        size = len(value.encode())
        if not low <= size <= high:
            raise TermsInvalid(f"{what} is {size} bytes; TFChain accepts {low} to {high} "
                               f"(it would refuse user_accept_tc and still charge the fee)")


def keypair_from_seed(seed: bytes) -> Keypair:
    """The twin's chain account: ed25519 from its 32-byte mini seed (as its mnemonic gives)."""
    return Keypair.create_from_seed(seed.hex(), crypto_type=KeypairType.ED25519,
                                    ss58_format=SS58_FORMAT)


class TfchainPhonebook:
    """``Phonebook`` on TFChain (see the module docstring)."""

    def __init__(self, url: str, identity_seed: bytes | None = None, *,
                 keypair: Keypair | None = None, cache_ttl: float = 600.0,
                 min_rescan: float = 10.0, port: int = DEFAULT_PORT,
                 timeout: float = 5.0, connect_timeout: float = 3.0,
                 submit_timeout: float = 30.0, retry_after: float = 3.0,
                 terms_link: str = DEFAULT_TERMS_LINK,
                 terms_hash: str = DEFAULT_TERMS_HASH) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise PhonebookError(f"phonebook.url {url!r}: a TFChain node websocket (ws:// or wss://)")
        self.url = url
        self.keypair = keypair or (keypair_from_seed(identity_seed) if identity_seed else None)
        self.cache_ttl = cache_ttl
        self.min_rescan = min_rescan
        self.port = port
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.submit_timeout = submit_timeout
        self.retry_after = retry_after
        self.terms = (terms_link, terms_hash)
        self._lock = threading.RLock()
        self._chain: SubstrateInterface | None = None
        self._down_until = float("-inf")  # no new attempt before (monotonic)
        self._down_reason = ""
        self.fees_paid: list[tuple[str, int]] = []  # (extrinsic, fee) submitted by this object
        self._index: dict[str, int] = {}
        self._index_at = float("-inf")

    # -- connection

    def _connect(self) -> SubstrateInterface:
        if self._chain is None:
            chain = SubstrateInterface(url=self.url, ss58_format=SS58_FORMAT,
                                       ws_options={"timeout": self.connect_timeout},
                                       auto_reconnect=False)
            chain.websocket.settimeout(self.timeout)  # each answer, from now on
            self._chain = chain
            log.info("connected to TFChain at %s (%s)", self.url, chain.chain)
        return self._chain

    def _use(self, what: str, fn: Callable[[SubstrateInterface], T], *,
             retry: Callable[[], bool] = lambda: True) -> T:
        """Run ``fn`` on the connection; an unreachable chain is PhonebookUnavailable.

        A connection that was open before this call may have died with the node
        (a restart): it is reopened and ``fn`` tried once more when ``retry()``
        says so (reads always; a submission only if its extrinsic was not sent).
        """
        with self._lock:
            if time.monotonic() < self._down_until:
                raise PhonebookUnavailable(
                    f"TFChain node {self.url} unreachable ({self._down_reason}); "
                    f"not asked again for {self._down_until - time.monotonic():.1f} s")
            reused = self._chain is not None
            try:
                try:
                    return fn(self._connect())
                except UNREACHABLE as exc:
                    self._drop()
                    if not (reused and retry()):
                        raise
                    log.info("TFChain connection to %s broke (%s); reconnecting", self.url, exc)
                    return fn(self._connect())
            except UNREACHABLE as exc:
                self._drop()
                self._down_until = time.monotonic() + self.retry_after
                self._down_reason = f"{what}: {exc or type(exc).__name__}"
                log.warning("TFChain at %s unreachable while %s: %s", self.url, what,
                            exc or type(exc).__name__)
                raise PhonebookUnavailable(
                    f"TFChain node {self.url} unreachable ({what}): "
                    f"{exc or type(exc).__name__}") from exc
            except SubstrateRequestException as exc:
                raise _request_error(what, exc) from exc

    def _drop(self) -> None:
        if self._chain is not None:
            with contextlib.suppress(Exception):  # a broken socket may fail to close
                self._chain.close()
        self._chain = None

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -- reads

    def _query(self, what: str, storage: str, params: list[Any]) -> Any:
        return self._use(what, lambda c: c.query(PALLET, storage, params).value)

    def _twin(self, twin_id: int) -> TwinRecord | None:
        twin = self._query(f"reading twin {twin_id}", "Twins", [twin_id])
        return self._record(twin) if twin else None

    def _record(self, twin: dict[str, Any]) -> TwinRecord:
        account = bytes.fromhex(ss58_decode(twin["account_id"]))
        return twin_to_record(twin, account, port=self.port)

    def twin_id_of(self, account: bytes) -> int | None:
        address = ss58_encode(account, ss58_format=SS58_FORMAT)
        found = self._query(f"looking up account {address}", "TwinIdByAccountID", [address])
        return int(found) if found else None

    def resolve(self, name_or_id: str | int) -> TwinRecord:
        key = str(name_or_id).strip()
        record: TwinRecord | None = None
        id_match = TWIN_ID.match(key)
        account = _account_bytes(key)
        if isinstance(name_or_id, int) or id_match:
            number = name_or_id if isinstance(name_or_id, int) else int(key.removeprefix("twin-"))
            record = self._twin(number) if 0 < number < 2**32 else None
        elif account is not None:
            twin_id = self.twin_id_of(account)
            record = self._twin(twin_id) if twin_id else None
        elif DOMAIN_RE.match(key.lower().rstrip(".")):
            record = self._by_domain(key.lower().rstrip("."))
        if record is not None and not _answers(record, key, account):
            raise RecordInvalid(f"TFChain answered {key!r} with twin {record.id} "
                                f"({record.name}), which is not the one asked for: refused")
        if record is None:
            raise TwinNotFound(f"no twin {name_or_id!r} on TFChain ({self.url}); a TFChain twin is "
                               "found by id, account (SS58 or hex key) or relay domain")
        return record

    def by_address(self, address: str) -> TwinRecord | None:
        domain = address.rpartition("@")[2].strip().lower().rstrip(".")
        if not DOMAIN_RE.match(domain):
            return None
        return self._by_domain(domain)

    def _by_domain(self, domain: str) -> TwinRecord | None:
        twin_id: int | None = self._domain_index().get(domain)
        if twin_id is None and time.monotonic() - self._index_at > self.min_rescan:
            twin_id = self._domain_index(force=True).get(domain)
        if twin_id is None:
            return None
        record = self._twin(twin_id)
        if record is None or domain not in record.mail_domains:
            # The twin moved to another domain since the scan: rescan once.
            twin_id = self._domain_index(force=True).get(domain)
            record = self._twin(twin_id) if twin_id else None
        return record if record is not None and domain in record.mail_domains else None

    def _domain_index(self, *, force: bool = False) -> dict[str, int]:
        with self._lock:
            if force or time.monotonic() - self._index_at > self.cache_ttl:
                index: dict[str, int] = {}
                for record in self._scan():
                    for domain in record.mail_domains:
                        first = index.setdefault(domain, record.id)
                        if first != record.id:
                            log.warning("domain %s is claimed by twins %d and %d on TFChain; "
                                        "the first claim (lowest id) wins", domain,
                                        min(first, record.id), max(first, record.id))
                            index[domain] = min(first, record.id)
                self._index, self._index_at = index, time.monotonic()
                log.info("indexed %d domains of TFChain twins", len(index))
            return self._index

    def _scan(self) -> list[TwinRecord]:
        def scan(chain: SubstrateInterface) -> list[TwinRecord]:
            out = []
            for _key, twin in chain.query_map(PALLET, "Twins", page_size=100,
                                              max_results=MAX_SCAN):
                try:
                    out.append(self._record(twin.value))
                except (ValueError, KeyError, RecordInvalid) as exc:
                    log.debug("skipping undecodable twin: %s", exc)
            return out
        return self._use("scanning twins", scan)

    def list(self) -> list[TwinRecord]:
        return sorted(self._scan(), key=lambda r: r.id)

    # -- publish

    def publish(self, record: TwinRecord, *, replace_key: bool = False) -> TwinRecord:
        """Put this twin's domain(s) and encryption key on chain (create or update)."""
        if self.keypair is None:
            raise PhonebookError("publishing on TFChain needs the twin's own account key")
        if record.public_key != self.keypair.public_key:
            raise RecordInvalid(
                f"twin {record.name!r}: only the account's own twin can be published "
                f"(record key {record.public_key.hex()} is not {self.keypair.ss58_address})")
        relay = domains_to_relay(record.mail_domains)
        pk = record.extra.get("pk") or x25519_of(record.public_key)
        return self.publish_twin(relay, pk)

    def publish_twin(self, relay: str, pk: bytes | None) -> TwinRecord:
        """Create or update this account's twin; no extrinsic when nothing changed."""
        keypair = self._own_keypair()
        check_relay(relay)
        if pk is not None and len(pk) > MAX_PK:
            raise RecordInvalid(f"pk is {len(pk)} bytes; TFChain allows at most {MAX_PK}")
        check_terms(*self.terms)
        twin_id = self.twin_id_of(keypair.public_key)
        if twin_id is not None:
            current = self._twin(twin_id)
            if current and current.extra.get("relay") == relay and current.extra.get("pk") == pk:
                log.info("twin %d on TFChain is up to date (relay %s)", twin_id, relay)
                return current
            self.check_funds()
            events = self._submit("update_twin", {"relay": relay, "pk": _hex(pk)})
        else:
            self.check_funds()
            if not self.terms_accepted():
                self.accept_terms()
            try:
                events = self.create_twin(relay, pk)
            except TermsNotAccepted:
                log.warning("TFChain says the terms are not accepted; accepting and retrying once")
                self.accept_terms()
                events = self.create_twin(relay, pk)
        self._index_at = float("-inf")
        record = self._stored_twin(events)
        log.info("published twin %d on TFChain: relay %s", record.id, relay)
        return record

    def _stored_twin(self, events: Events) -> TwinRecord:
        """The twin as the chain's TwinStored/TwinUpdated event states it (else read back)."""
        for event in events:
            if (event.get("module_id") == PALLET
                    and event.get("event_id") in ("TwinStored", "TwinUpdated")):
                return self._record(event["attributes"])
        twin_id = self.twin_id_of(self._own_keypair().public_key)
        record = self._twin(twin_id) if twin_id else None
        if record is None:
            raise ChainRejected("the twin extrinsic was included but no twin is stored")
        return record

    def create_twin(self, relay: str, pk: bytes | None) -> Events:
        """Submit ``create_twin`` as is (``publish_twin`` decides when); returns its events."""
        check_relay(relay)
        return self._submit("create_twin", {"relay": relay, "pk": _hex(pk)})

    def terms_accepted(self) -> bool:
        address = self._own_keypair().ss58_address
        accepted = self._query("reading terms", "UsersTermsAndConditions", [address])
        return bool(accepted)

    def accept_terms(self) -> None:
        link, digest = self.terms
        check_terms(link, digest)
        self._submit("user_accept_tc", {"document_link": link, "document_hash": digest})

    def balance(self) -> int:
        """Spendable balance of the twin's account in units of 1e-7 TFT."""
        address = self._own_keypair().ss58_address
        info = self._use("reading the balance",
                         lambda c: c.query("System", "Account", [address]).value)
        data = info["data"]
        return int(data["free"]) - int(data.get("frozen", data.get("misc_frozen", 0)))

    def check_funds(self) -> None:
        spendable = self.balance()
        if spendable < MIN_FUNDS:
            raise InsufficientFunds(
                f"TFChain account {self._own_keypair().ss58_address} holds "
                f"{spendable / TFT:.7f} TFT; publishing a twin pays a fee (about 0.001 TFT per "
                f"extrinsic): send at least {MIN_FUNDS / TFT} TFT to it first")

    def _own_keypair(self) -> Keypair:
        if self.keypair is None:
            raise PhonebookError("publishing on TFChain needs the twin's own account key")
        return self.keypair

    def _submit(self, function: str, params: dict[str, Any]) -> Events:
        """Sign, submit, wait for inclusion; a failed dispatch becomes our error type."""
        keypair = self._own_keypair()

        sent = False

        def submit(chain: SubstrateInterface) -> tuple[bool, Any, Events, int]:
            nonlocal sent
            call = chain.compose_call(PALLET, function, params)
            extrinsic = chain.create_signed_extrinsic(call=call, keypair=keypair)
            sent = True
            chain.websocket.settimeout(self.submit_timeout)  # a block may take a while
            try:
                receipt = chain.submit_extrinsic(extrinsic, wait_for_inclusion=True)
                events = [dict(e.value) for e in receipt.triggered_events]
                fee = int(receipt.total_fee_amount or 0)
            finally:
                if chain.websocket is not None:
                    chain.websocket.settimeout(self.timeout)
            return bool(receipt.is_success), receipt.error_message, events, fee

        log.info("submitting %s.%s as %s", PALLET, function, keypair.ss58_address)
        ok, error, events, fee = self._use(f"submitting {function}", submit,
                                           retry=lambda: not sent)
        self.fees_paid.append((function, fee))
        if not ok:
            log.warning("TFChain refused %s.%s (fee %d): %s", PALLET, function, fee, error)
            raise _chain_error(function, error)
        log.info("TFChain included %s.%s (fee %.7f TFT)", PALLET, function, fee / TFT)
        return events


def _answers(record: TwinRecord, key: str, account: bytes | None) -> bool:
    """Whether the chain's record is the twin asked for, by its own fields: the id
    asked, the account asked, or a relay domain it claims."""
    id_match = TWIN_ID.match(key)
    if id_match or key.isdigit():
        return record.id == int(key.removeprefix("twin-"))
    if account is not None:
        return record.public_key == account
    return key.lower().rstrip(".") in record.mail_domains


def _hex(value: bytes | None) -> str | None:
    return None if value is None else "0x" + value.hex()


def _account_bytes(key: str) -> bytes | None:
    if HEX_KEY.match(key):
        return bytes.fromhex(key.removeprefix("0x"))
    if 46 <= len(key) <= 50 and key.isalnum():
        try:
            return bytes.fromhex(ss58_decode(key, valid_ss58_format=SS58_FORMAT))
        except ValueError:
            return None
    return None


def _chain_error(function: str, error: Any) -> PhonebookError:
    name = error.get("name") if isinstance(error, dict) else None
    name = name or (error.get("type") if isinstance(error, dict) else None) or str(error)
    kind = CHAIN_ERRORS.get(str(name), ChainRejected)
    hints = {
        TermsNotAccepted: "the account must accept the terms and conditions (user_accept_tc)",
        TermsInvalid: "phonebook.terms_link and terms_hash must not be empty",
        TwinExists: "this account already has a twin; it can only be updated",
        InsufficientFunds: "the account cannot pay the fee; send it some TFT",
        RelayInvalid: "the relay must be bare domain(s) of A-Z a-z 0-9 - . joined by _",
    }
    hint = hints.get(kind, "see the TFChain runtime's TfgridModule errors")
    return kind(f"TFChain refused {function}: {name} ({hint})")


def _request_error(what: str, exc: SubstrateRequestException) -> PhonebookError:
    detail = exc.args[0] if exc.args else {}
    text = str(detail)
    if "Inability to pay" in text or "balance too low" in text:
        return InsufficientFunds(f"TFChain refused {what}: the account cannot pay the fee "
                                 f"({text}); send it some TFT")
    return ChainRejected(f"TFChain refused {what}: {text}")
