"""Fuzz the twin's decoders of hostile input: one JSON line per target.

Every target is a function ``bytes -> None`` that feeds one input to one
parser the way the running twin does, plus the exceptions that parser is
allowed to answer with (its clean refusals). Anything else is a **crash**;
an input that takes longer than ``HANG`` seconds is a **hang**. The engine
is mutational and deterministic for a seed: each input is a seed of the
target (a well-formed example) or a corpus entry, mutated by a few random
edits (bit flips, random and "interesting" bytes, the target's own tokens,
deleted, duplicated and spliced ranges); an input whose outcome (the
exception type and the first words of its message) was not seen before
joins the corpus, so the fuzzer keeps exploring past the first refusal.

With ``--engine atheris`` (``pip install atheris``, not a dependency) each
target instead runs coverage-guided under libFuzzer in a child process for
the same time; a crash there stops that target (libFuzzer keeps the input).

Targets: ``envelope`` (split, peek and parse of a signed envelope body),
``payload`` (the bounded CBOR decoder and the re-encoding a ``ping`` does),
``ack`` (``Peer._open_ack`` of a signed, encrypted ack whose plaintext is
fuzzed), ``refusal`` (a peer's JSON refusal as the sender reads it),
``record`` (phonebook ``TwinRecord.from_bytes`` + verify), ``imap``
(``CommandReader`` over a stream), ``smtp`` (a real twin's inbound SMTP
session over TCP), ``mime`` (the MIME describer),
``webdav_path`` (the request-target guard and the tree path mapper). More
are added as functions registered with ``@target``.

Run: ``.venv/bin/python bench/fuzz.py [--seconds S] [--seed N] [--engine E]
[TARGET ...]`` (default 30 s per target). ``tests/test_fuzz_slice.py`` runs a
fixed-seed slice of a few thousand inputs per target in ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HANG = 1.0  # seconds one input may take
MAX_INPUT = 64 * 1024
MAX_CORPUS = 512
INTERESTING = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0x17, 0x18, 0x1B, 0x1F, 0x20, 0x0A, 0x0D]


@dataclass
class Target:
    name: str
    run: Callable[[bytes], str | None]  # may return a signature of what happened
    seeds: list[bytes]
    allowed: tuple[type[BaseException], ...]
    tokens: list[bytes] = field(default_factory=list)


TARGETS: dict[str, Callable[[], Target]] = {}
# Targets left out of tests/test_fuzz_slice.py, and why.
OUT_OF_SLICE = {
    "smtp": "drives a real twin process, one connection per input: minutes, not seconds",
}


def target(fn: Callable[[], Target]) -> Callable[[], Target]:
    """Register a target factory (imports and set-up happen only when it is used)."""
    TARGETS[fn.__name__] = fn
    return fn


# -- peer: envelopes, payloads, acks; phonebook records ----------------------

CBOR_TOKENS = [b"\xd8\x1c", b"\xd8\x1d\x00", b"\xd9\x01\x00", b"\xd8\x19", b"\x9f", b"\xff",
               b"\xbf", b"\x5f", b"\x7f", b"\x9b" + b"\xff" * 8, b"\x5a\xff\xff\xff\xff",
               b"\xc2\x49" + b"\x01" * 9, b"\xf7", b"\xf8\x20", b"\x81" * 40, b"\xa1"]


def _identity(n: int) -> Any:
    from core.identity import Identity

    return Identity(bytes([n]) * 32)


@target
def envelope() -> Target:
    from core.peer import envelope as env
    from core.peer.errors import Refusal

    alice, bob = _identity(1), _identity(2)
    seeds = [env.seal(alice, env.Boxes(alice), sender="alice", recipient="bob",
                      recipient_key=bob.public_key, kind=kind, value=value, ttl=600,
                      uid=bytes(16), timestamp=1_700_000_000, nonce=bytes(24))
             for kind, value in (("ping", 1), ("message", {"text": "hi"}),
                                 ("content.list", {"path": "/a/"}))]

    def run(data: bytes) -> None:
        _sig, body = env.split(data)
        env.peek_sender(body)
        env.parse(body)  # as if a hostile twin had signed these bytes

    return Target("envelope", run, seeds, (Refusal,), CBOR_TOKENS)


@target
def payload() -> Target:
    import cbor2

    from core.peer import envelope as env
    from phonebook import cbor
    from tests.hostile_peer import shared_ref_bomb

    seeds = [cbor2.dumps(v, canonical=True) for v in (
        1, {"text": "hello"}, {"path": "/photos/", "start": 0, "end": None},
        [{"path": "/a", "name": "a", "size": 1, "is_dir": False, "mtime": 1.5, "etag": "x"}],
        {"uid": bytes(16), "result": {"stored": True}}, [[0, 0], [[1.5, -3], "x"]])]
    seeds.append(shared_ref_bomb(12))

    def run(data: bytes) -> None:
        value = cbor.loads(data, env.PAYLOAD_LIMITS)
        cbor2.dumps(value, canonical=True)  # what a ping's answer does with it

    return Target("payload", run, seeds, (cbor.CBORRefused,), CBOR_TOKENS)


@target
def ack() -> Target:
    import cbor2

    from core.errors import Invalid
    from core.peer import envelope as env
    from core.peer.peer import Peer
    from phonebook.record import TwinRecord
    from tests.hostile_peer import seal_raw

    alice, bob = _identity(1), _identity(2)
    peer = Peer.__new__(Peer)  # only what _open_ack reads: no service behind it
    peer.name, peer.boxes, peer.max_skew = "alice", env.Boxes(alice), 300
    record = TwinRecord(name="bob", public_key=bob.public_key)
    uid = bytes(range(16))
    seeds = [cbor2.dumps(v, canonical=True) for v in (
        {"uid": uid, "result": {"stored": True}},
        {"uid": uid, "result": {"entry": {}, "start": 0, "end": 5},
         "stream": {"key": bytes(32), "header": bytes(24)}},
        {"uid": uid, "result": [1, 2, 3]})]

    def run(data: bytes) -> None:
        raw = seal_raw(bob, sender="bob", recipient="alice", recipient_key=alice.public_key,
                       plain=data, kind="ack")
        peer._open_ack(record, raw, uid)

    return Target("ack", run, seeds, (Invalid,), CBOR_TOKENS)


@target
def record() -> Target:
    import time as _time

    from nacl.signing import SigningKey

    from phonebook.errors import RecordInvalid
    from phonebook.record import TwinRecord

    key = SigningKey(bytes([3]) * 32)
    seeds = [TwinRecord(name=name, public_key=bytes(key.verify_key), endpoints=endpoints,
                        mail_domains=domains, valid_until=int(_time.time()) + 86400, seq=7,
                        ).signed_by(key).to_bytes()
             for name, endpoints, domains in (("alice", ("https://127.0.0.1:1",),
                                               ("alice.localhost",)),
                                              ("b", (), ()))]

    def run(data: bytes) -> None:
        TwinRecord.from_bytes(data, id=1).verify()

    return Target("record", run, seeds, (RecordInvalid,), CBOR_TOKENS)


@target
def refusal() -> Target:
    """What the sending twin makes of a peer's refusal body (JSON, peer-chosen)."""
    from core.peer import client

    seeds = [b'{"code": "replay", "message": "seen", "ack": "AAEC"}',
             b'{"code": "malformed", "message": "x"}', b'[1, {"code": 2}]', b'"text"']
    tokens = [b"[" * 64, b"{", b'"code"', b'"ack"', b":", b",", b"null", b"1e999", b"\\u0000"]

    def run(data: bytes) -> None:
        client._is_refusal(data)
        client._refused(400, data)

    return Target("refusal", run, seeds, (), tokens)


# -- protocols ---------------------------------------------------------------

@target
def imap() -> Target:
    from protocols.imap.parser import CommandReader, FatalParseError, ParseError

    loop = asyncio.new_event_loop()
    seeds = [b"a1 LOGIN {5}\r\nalice {6+}\r\nsecret\r\n",
             b"a2 SELECT INBOX\r\na3 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM)])\r\n",
             b'a4 APPEND "INBOX" (\\Seen) {11+}\r\nhello world\r\n',
             b'a5 SEARCH CHARSET UTF-8 OR (FROM "x") (NOT SUBJECT {3+}\r\nabc)\r\n',
             b"a6 APPEND INBOX UTF8 (~{4+}\r\nabcd)\r\n"]
    tokens = [b"{", b"}", b"+}", b"{65536}\r\n", b"{99999999999+}\r\n", b"(", b")", b"\"",
              b"\\", b"\r\n", b"NIL", b"~{", b"UID ", b"APPEND INBOX ", b"[", b"]", b"*"]

    async def read_all(data: bytes) -> None:
        reader = asyncio.StreamReader(limit=8192)
        reader.feed_data(data)
        reader.feed_eof()

        async def send(_line: bytes) -> None:
            return None

        commands = CommandReader(reader, send, max_line=8192, max_literal=1 << 20)
        for _ in range(64):
            try:
                command = await commands.read()
            except ParseError as exc:
                if isinstance(exc, FatalParseError):
                    return
                continue
            if command.message is not None:
                await command.message.discard()
                try:
                    await commands.finish_append(command)
                except ParseError:
                    continue

    def run(data: bytes) -> None:
        loop.run_until_complete(read_all(data))

    return Target("imap", run, seeds, (EOFError,), tokens)


@target
def smtp() -> Target:
    """The inbound SMTP session of a real ``twin serve``, one connection per input.

    A crash is aiosmtpd's answer to an exception in the session (``500 Error: (``)
    or the twin exiting; a hang is a session that does not end within ``HANG``
    seconds of the client's last byte. Slow (a connection per input) and it
    needs a twin process, so it is outside the make-test slice."""
    import atexit
    import shutil
    import socket
    import tempfile

    from tests.twins import TwinProcess

    root = Path(tempfile.mkdtemp(prefix="twin-fuzz-smtp-"))
    twin = TwinProcess.create(root, "alice").start()
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    atexit.register(twin.stop)  # runs first (last registered)
    port = twin.port("smtp")
    seeds = [b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@alice.localhost>\r\n"
             b"DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
             b"HELO x\r\nVRFY alice\r\nNOOP\r\nRSET\r\nHELP\r\nQUIT\r\n",
             b"EHLO x\r\nMAIL FROM:<> SIZE=10 BODY=8BITMIME SMTPUTF8\r\n"
             b"RCPT TO:<alice@alice.localhost> NOTIFY=NEVER\r\nQUIT\r\n"]
    tokens = [b"MAIL FROM:", b"RCPT TO:", b"<", b">", b"@", b"DATA\r\n", b"\r\n.\r\n",
              b"AUTH PLAIN ", b"SIZE=", b"BODY=8BITMIME", b"SMTPUTF8", b"VRFY ", b"\r\n",
              b"STARTTLS\r\n", b"EXPN ", b"\x00", b"\xff"]

    class SessionCrash(Exception):
        pass

    def run(data: bytes) -> str:
        if twin.proc is None or twin.proc.poll() is not None:
            raise SessionCrash("the twin exited")
        with socket.create_connection(("127.0.0.1", port), timeout=HANG) as conn:
            conn.recv(4096)  # banner
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
            answer = bytearray()
            try:
                while chunk := conn.recv(65536):
                    answer += chunk
            except (TimeoutError, ConnectionResetError):
                pass
        if b"500 Error: (" in answer:
            line = answer[answer.index(b"500 Error: ("):].split(b"\r\n")[0]
            raise SessionCrash(line.decode("latin-1"))
        # the set of reply codes: a new one makes the input worth mutating further
        return " ".join(sorted({line[:3].decode("latin-1") for line in answer.split(b"\r\n")
                                if line[:3].isdigit()}))

    return Target("smtp", run, seeds, (), tokens)


@target
def mime() -> Target:
    from core.mail import mime as describer

    seeds = [
        b"From: a@b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n",
        b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/html"
        b"\r\n\r\n<p>x</p>\r\n--XX\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\n"
        b"body\r\n--XX--\r\n",
        b"Content-Type: application/octet-stream; name*0*=utf-8''a%20b; name*1=c\r\n"
        b"Content-Disposition: attachment; filename*=utf-8''x.txt\r\n\r\nAAAA\r\n",
    ]
    tokens = [b"name*0=", b"name*=", b"*1*=", b"''", b"%00", b"\x00", b"boundary=", b"--",
              b"=?utf-8?q?", b"?=", b"multipart/", b"message/rfc822", b"\r\n\r\n", b";"]

    def run(data: bytes) -> None:
        describer.parse(data)

    return Target("mime", run, seeds, (), tokens)  # it must never raise


@target
def webdav_path() -> Target:
    from urllib.parse import unquote

    from protocols.webdav.app import path_refusal
    from protocols.webdav.fastget import tree_parts

    seeds = [b"/dav/photos/holiday.jpg", b"/dav/shared/alice/x%20y/", b"/dav/a/../b",
             b"/dav/%2e%2e/etc/passwd", b"/dav/caf%C3%A9"]
    tokens = [b"%2e", b"%2f", b"%00", b"..", b"/", b"//", b"%C0%AF", b"\\", b"%ff", b"shared"]

    def run(data: bytes) -> None:
        if path_refusal(data) is not None:
            return  # refused with 400 before any mapping (bad UTF-8, %2F, control chars)
        path = unquote(data.decode("latin-1"), errors="strict")
        parts = tree_parts({"path": path, "root_path": "/dav"}, "shared")
        for part in parts or ():
            if part in ("", ".", "..") or "/" in part or any(ord(c) < 32 for c in part):
                raise AssertionError(f"mapped to an unsafe segment {part!r}")

    return Target("webdav_path", run, seeds, (UnicodeDecodeError,), tokens)


# -- the engine ----------------------------------------------------------------

@dataclass
class Result:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    crashes: int = 0
    hangs: int = 0
    corpus: int = 0
    examples: list[str] = field(default_factory=list)

    def line(self) -> dict[str, Any]:
        return {"bench": "fuzz", "target": self.target, "engine": "mutate",
                "inputs": self.inputs, "seconds": round(self.seconds, 2),
                "inputs_per_s": round(self.inputs / self.seconds, 1) if self.seconds else 0,
                "crashes": self.crashes, "hangs": self.hangs, "corpus": self.corpus,
                "examples": self.examples[:5]}


def mutate(rng: random.Random, data: bytes, t: Target, corpus: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        pos = rng.randint(0, len(b))
        if op == 0 and b:
            b[min(pos, len(b) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[min(pos, len(b) - 1)] = rng.randrange(256)
        elif op == 2:
            b[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and b:
            del b[pos:pos + rng.randint(1, 16)]
        elif op == 4 and b:
            start = rng.randrange(len(b))
            b[pos:pos] = b[start:start + rng.randint(1, 64)] * rng.randint(1, 8)
        elif op == 5 and t.tokens:
            b[pos:pos] = rng.choice(t.tokens)
        elif op == 6:
            other = rng.choice(corpus)
            cut = rng.randint(0, len(other))
            b = b[:pos] + bytearray(other[cut:])
        elif op == 7 and b:
            b[min(pos, len(b) - 1)] = rng.choice(INTERESTING)
        elif op == 8 and len(b) > 1:
            b = b[:pos]
    return bytes(b[:MAX_INPUT])


def fuzz(t: Target, *, seconds: float | None = None, inputs: int | None = None,
         seed: int = 0) -> Result:
    """Run ``t`` for a time budget or a number of inputs, whichever ends first."""
    rng = random.Random(seed)
    corpus = list(t.seeds)
    seen: set[str] = set()
    result = Result(t.name)
    start = time.perf_counter()
    deadline = start + seconds if seconds is not None else float("inf")
    while (inputs is None or result.inputs < inputs) and time.perf_counter() < deadline:
        if result.inputs < len(t.seeds):
            data = t.seeds[result.inputs]
        else:
            data = mutate(rng, rng.choice(corpus), t, corpus)
        began = time.perf_counter()
        try:
            signature = t.run(data)
            outcome = "ok" if signature is None else f"ok:{signature}"
        except t.allowed as exc:
            outcome = f"{type(exc).__name__}:{' '.join(str(exc).split()[:3])}"
        except Exception as exc:
            result.crashes += 1
            where = traceback.extract_tb(exc.__traceback__)[-1]
            outcome = (f"crash:{type(exc).__name__}:{where.filename}:{where.lineno}:"
                       f"{str(exc)[:30]}")
            if outcome not in seen:  # one example per place that crashed
                result.examples.append(f"{type(exc).__name__}: {str(exc)[:100]} at "
                                       f"{Path(where.filename).name}:{where.lineno} on "
                                       f"{data[:80]!r}")
        took = time.perf_counter() - began
        if took > HANG:
            result.hangs += 1
            result.examples.append(f"hang {took:.2f}s on {data[:80]!r}")
        result.inputs += 1
        if outcome not in seen:
            seen.add(outcome)
            if len(corpus) < MAX_CORPUS:
                corpus.append(data)
    result.seconds = time.perf_counter() - start
    result.corpus = len(corpus)
    return result


# -- atheris (optional, coverage-guided) --------------------------------------

def _atheris_child(name: str, seconds: float) -> None:
    import atheris

    with atheris.instrument_imports():
        t = TARGETS[name]()

    def one(data: bytes) -> None:
        with contextlib.suppress(t.allowed):
            t.run(data)

    corpus = Path(os.environ.get("FUZZ_CORPUS", "/tmp/twin-fuzz")) / name
    corpus.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(t.seeds):
        (corpus / f"seed-{i}").write_bytes(s)
    atheris.Setup([sys.argv[0], f"-max_total_time={int(seconds)}", f"-timeout={int(HANG) + 1}",
                   "-print_final_stats=1", "-rss_limit_mb=2048", f"-max_len={MAX_INPUT}",
                   f"-artifact_prefix={corpus}/", str(corpus)], one)
    atheris.Fuzz()


def run_atheris(name: str, seconds: float) -> dict[str, Any]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--atheris-child", name,
                           "--seconds", str(seconds)], capture_output=True, text=True,
                          timeout=seconds * 3 + 120, check=False)
    took = time.perf_counter() - start
    stats = {k.strip(): v.strip() for k, _, v in (
        line.removeprefix("stat::").partition(":") for line in proc.stderr.splitlines()
        if line.startswith("stat::"))}
    executed = int(stats.get("number_of_executed_units", 0))
    crashed = "ERROR: libFuzzer" in proc.stderr or "Uncaught Python exception" in proc.stderr
    hung = "ERROR: libFuzzer: timeout" in proc.stderr
    return {"bench": "fuzz", "target": name, "engine": "atheris", "inputs": executed,
            "seconds": round(took, 2), "inputs_per_s": round(executed / took, 1),
            "crashes": int(crashed and not hung), "hangs": int(hung),
            "error": [line for line in proc.stderr.splitlines()
                      if "Error" in line or "Exception" in line][:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("targets", nargs="*", help=f"default: all ({', '.join(TARGETS)})")
    parser.add_argument("--seconds", type=float, default=30.0, help="per target")
    parser.add_argument("--inputs", type=int, default=None, help="per target (mutate only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", choices=("mutate", "atheris"), default="mutate")
    parser.add_argument("--atheris-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.atheris_child:
        _atheris_child(args.atheris_child, args.seconds)
        return
    total = 0
    for name in args.targets or list(TARGETS):
        if args.engine == "atheris":
            line = run_atheris(name, args.seconds)
        else:
            line = fuzz(TARGETS[name](), seconds=args.seconds, inputs=args.inputs,
                        seed=args.seed).line()
        total += int(line["inputs"])
        print(json.dumps(line), flush=True)
    print(json.dumps({"bench": "fuzz", "target": "all", "inputs": total}), flush=True)


if __name__ == "__main__":
    main()
