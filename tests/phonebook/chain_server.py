"""A fake TFChain node for tests: a real websocket JSON-RPC server on 127.0.0.1:0.

It answers substrate-interface from the data recorded against the real TFChain
runtime in ``fixtures/`` beside this file (see its README); nothing here is invented
except the choice of which recorded answer to give. Two answerers:

``Replay(session)``
    Answers each request from the recording, matched by method + params
    (robust to a client that asks in another order or asks extra things).
    The recording is cut into *segments* at each ``author_submitAndWatchExtrinsic``:
    the chain state only changes when an extrinsic lands, so a request is
    answered from the current segment first, then from an earlier one. A
    submitted extrinsic is matched by its exact bytes (ed25519 signatures are
    deterministic), else by order, and the server checks that it decodes to the
    same call as the recorded one (refusing it otherwise). For sr25519 the
    submitted hex is substituted for the recorded one in later responses, so
    the receipt finds it in ``chain_getBlock``. Storage keys never read in the
    recording come from ``overlay`` (else ``null``: absent).

``State(storage)``
    A small stateful chain built from ``storage.json``: ``state_getStorage``,
    ``state_getKeysPaged`` and ``state_queryStorageAt`` over the real raw
    storage, so any lookup works without a transcript. ``put_twin`` adds or
    changes twins with correctly SCALE-encoded values. It accepts no extrinsics.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

# The recordings are part of the repository (fixtures/README.md says where they come from).
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TWINS_PREFIX = "0x19a2526838feefd7695a3b5715b415b1311378229266fc86f673a3f4cf398e69"
TWIN_BY_ACCOUNT_PREFIX = "0x19a2526838feefd7695a3b5715b415b1aca6514962aa3f0d58aff3524045f9e0"
TWIN_ID_KEY = "0x19a2526838feefd7695a3b5715b415b1f0a47c737494e2f765486518570dbe24"
TERMS_PREFIX = "0x19a2526838feefd7695a3b5715b415b1e334c6916111ab31334321a2719c4da5"
SYSTEM_ACCOUNT_PREFIX = "0x26aa394eea5630e07c48ae0c9558cef7b99d880ec681799c0cf30e8886371da9"
SUBMIT = "author_submitAndWatchExtrinsic"

# Requests whose answer does not depend on chain state: any recorded answer will do.
STATIC = {"system_chain", "rpc_methods", "state_getMetadata", "state_getRuntimeVersion",
          "chain_getBlockHash", "system_properties", "system_name", "system_version",
          "author_unwatchExtrinsic"}


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@cache
def session_lines(session: str) -> tuple[dict[str, Any], ...]:
    path = FIXTURES / f"session-{session}.jsonl"
    return tuple(json.loads(line) for line in path.read_text().splitlines() if line.strip())


def blake2_128_concat(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest() + data.hex()


def twin_key(twin_id: int) -> str:
    return TWINS_PREFIX + blake2_128_concat(twin_id.to_bytes(4, "little"))


def twin_by_account_key(account: bytes) -> str:
    return TWIN_BY_ACCOUNT_PREFIX + blake2_128_concat(account)


def system_account_key(account: bytes) -> str:
    return SYSTEM_ACCOUNT_PREFIX + blake2_128_concat(account)


def terms_key(account: bytes) -> str:
    return TERMS_PREFIX + blake2_128_concat(account)


def _compact(n: int) -> bytes:
    assert n < 1 << 14
    return bytes([n << 2]) if n < 64 else ((n << 2) | 1).to_bytes(2, "little")


def _option_bytes(value: bytes | None) -> bytes:
    return b"\x00" if value is None else b"\x01" + _compact(len(value)) + value


def encode_twin(twin_id: int, account: bytes, relay: str | None, pk: bytes | None) -> str:
    """SCALE of ``Twin {id, account_id, relay, entities: [], pk}`` as the runtime stores it."""
    raw = (twin_id.to_bytes(4, "little") + account
           + _option_bytes(relay.encode() if relay is not None else None)
           + b"\x00" + _option_bytes(pk))
    return "0x" + raw.hex()


@cache
def _runtime() -> tuple[Any, Any]:
    from scalecodec.base import RuntimeConfigurationObject, ScaleBytes
    from scalecodec.type_registry import load_type_registry_preset

    rc = RuntimeConfigurationObject(ss58_format=42)
    rc.update_type_registry(load_type_registry_preset("core"))
    metadata = rc.create_scale_object(
        "MetadataVersioned", data=ScaleBytes(fixture("metadata.json")["metadata_hex"]))
    metadata.decode()
    rc.add_portable_registry(metadata)
    return rc, metadata


def decode_extrinsic(hex_data: str) -> dict[str, Any]:
    """An extrinsic decoded with the real spec-144 metadata (what the runtime would see)."""
    from scalecodec.base import ScaleBytes

    rc, metadata = _runtime()
    ext = rc.create_scale_object("Extrinsic", data=ScaleBytes(hex_data), metadata=metadata)
    return dict(ext.decode())


def _call_of(hex_data: str) -> Any:
    return decode_extrinsic(hex_data)["call"]


@dataclass
class Exchange:
    method: str
    params: str
    response: dict[str, Any]
    notifications: list[dict[str, Any]]
    segment: int
    index: int
    used: int = 0


@dataclass
class Replay:
    """Answers from one recorded session (see the module docstring)."""

    session: str
    start_segment: int = 0
    overlay: dict[str, str | None] = field(default_factory=dict)
    segment: int = 0
    submitted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)
    substitutions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.segment = self.start_segment
        segment = 0
        current: Exchange | None = None
        for line in session_lines(self.session):
            msg = line["msg"]
            if line["dir"] == "req":
                if current is not None and current.method == SUBMIT:
                    segment += 1
                current = None
                pending = (msg["method"], json.dumps(msg["params"]), msg["id"])
            elif "id" in msg:
                method, params, _ = pending
                current = Exchange(method, params, msg, [], segment, len(self.exchanges))
                self.exchanges.append(current)
            elif current is not None:
                current.notifications.append(msg)

    def _pick(self, method: str, params: str) -> Exchange | None:
        same = [e for e in self.exchanges if e.method == method and e.params == params]
        here = [e for e in same if e.segment == self.segment]
        if here:
            fresh = [e for e in here if not e.used]
            return fresh[0] if fresh else here[-1]
        earlier = [e for e in same if e.segment < self.segment]
        if earlier:
            return earlier[-1]
        if method in STATIC:
            return next((e for e in self.exchanges if e.method == method), None)
        if method == "chain_getHead":
            heads = [e for e in self.exchanges if e.method == method]
            before = [e for e in heads if e.segment <= self.segment]
            return (before or heads)[-1]
        if method in ("chain_getHeader", "chain_getBlock") and same:
            return same[0]  # a block's content never changes
        return None

    def _storage(self, key: str) -> Exchange | None:
        """The latest recorded read of ``key`` not after the current segment."""
        reads = [e for e in self.exchanges if e.method == "state_getStorageAt"
                 and json.loads(e.params)[0] == key and e.segment <= self.segment]
        return reads[-1] if reads else None

    def _submit(self, hex_data: str) -> Exchange | None:
        submits = [e for e in self.exchanges if e.method == SUBMIT and not e.used]
        exact = [e for e in submits if json.loads(e.params)[0] == hex_data]
        if exact:
            return exact[0]
        later = [e for e in submits if e.segment >= self.segment]
        if not later:
            return None
        recorded = json.loads(later[0].params)[0]
        if _call_of(recorded) != _call_of(hex_data):
            return None
        self.substitutions[recorded] = hex_data
        return later[0]

    def answer(self, method: str, params: list[Any]) -> tuple[Any, list[dict[str, Any]]]:
        if method == SUBMIT:
            self.submitted.append(params[0])
            ex = self._submit(params[0])
            if ex is None:
                self.refused.append(params[0])
                raise RpcError(1010, "Invalid Transaction",
                               "fake chain: extrinsic does not match the recording")
            ex.used += 1
            self.segment = ex.segment + 1
            return ex.response["result"], ex.notifications
        key = json.dumps(params)
        if method in ("state_getStorage", "state_getStorageAt"):
            ex = self._storage(params[0])
            if ex is None:
                return self.overlay.get(params[0]), []
            ex.used += 1
            return ex.response["result"], []
        ex = self._pick(method, key)
        if ex is None:
            raise RpcError(-32601, f"fake chain: {method} {key[:120]} is not in the recording")
        ex.used += 1
        result = ex.response["result"]
        if self.substitutions and method == "chain_getBlock":
            text = json.dumps(result)
            for old, new in self.substitutions.items():
                text = text.replace(old, new)
            result = json.loads(text)
        return result, []


@dataclass
class State:
    """A stateful fake over raw storage (``storage.json`` by default)."""

    storage: dict[str, str | None] = field(default_factory=dict)
    head: str = ""

    def __post_init__(self) -> None:
        if not self.storage:
            raw = fixture("storage.json")
            self.storage = {**raw["tfgrid_module"], **raw["system_account"]}
            self.head = raw["block_hash"]
        self._static = Replay("errors")
        self._lock = threading.Lock()

    def put(self, key: str, value: str | None) -> None:
        with self._lock:
            self.storage[key] = value

    def put_twin(self, twin_id: int, account: bytes, relay: str | None,
                 pk: bytes | None) -> None:
        """Add or change a twin, as create_twin/update_twin would leave storage."""
        self.put(twin_key(twin_id), encode_twin(twin_id, account, relay, pk))
        self.put(twin_by_account_key(account), "0x" + twin_id.to_bytes(4, "little").hex())
        with self._lock:
            count = int.from_bytes(bytes.fromhex(self.storage[TWIN_ID_KEY][2:]), "little")  # type: ignore[index]
            self.storage[TWIN_ID_KEY] = "0x" + max(count, twin_id).to_bytes(4, "little").hex()

    def answer(self, method: str, params: list[Any]) -> tuple[Any, list[dict[str, Any]]]:
        with self._lock:
            if method == "chain_getHead" or method == "chain_getFinalizedHead":
                return self.head, []
            if method in ("state_getStorage", "state_getStorageAt"):
                return self.storage.get(params[0]), []
            if method == "state_getKeysPaged":
                prefix, count = params[0], int(params[1])
                start = params[2] if len(params) > 2 else None
                keys = sorted(k for k, v in self.storage.items() if k.startswith(prefix)
                              and v is not None and (not start or k > start))
                return keys[:count], []
            if method == "state_queryStorageAt":
                changes = [[k, self.storage.get(k)] for k in params[0]]
                return [{"block": self.head, "changes": changes}], []
        if method == "chain_getHeader":
            header, _ = self._static.answer("chain_getHeader", [self.head])
            return header, []
        if method == SUBMIT:
            raise RpcError(1010, "Invalid Transaction", "fake chain (state): no extrinsics")
        return self._static.answer(method, params)


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


class ChainServer:
    """Runs an answerer behind a websocket on 127.0.0.1:0 in a background thread."""

    def __init__(self, answerer: Replay | State) -> None:
        self.answerer = answerer
        self.requests: list[dict[str, Any]] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="fake-chain")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> ChainServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("fake chain did not start")
        return self

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set_result, None)
            self._thread.join(10)

    def __enter__(self) -> ChainServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = self._loop.create_future()
        async with serve(self._handle, "127.0.0.1", self.port, max_size=None,
                         close_timeout=1) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop
            server.close()

    async def _handle(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._answer_all(ws)

    async def _answer_all(self, ws: ServerConnection) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            self.requests.append(msg)
            try:
                result, notes = self.answerer.answer(msg["method"], msg.get("params", []))
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}))
                for note in notes:
                    await ws.send(json.dumps(note))
            except RpcError as exc:
                error: dict[str, Any] = {"code": exc.code, "message": exc.message}
                if exc.data:
                    error["data"] = exc.data
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "error": error}))
