"""Hostile input: the server answers BAD/NO (or BYE when it cannot resync) and stays up."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.imap.parser import CommandReader, ParseError, tokenize
from tests.protocols.imap.conftest import Account


class Raw:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
        assert self.line().startswith(b"* OK")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def until(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag + b" ") or line.startswith(b"* BYE"):
                return lines

    def alive(self, login: Account | None = None) -> None:
        self.send(b"zz NOOP\r\n")
        assert self.until(b"zz")[-1].startswith(b"zz OK")


def test_wrong_state_and_unknown_commands(account: Account) -> None:
    r = Raw(account.port)
    r.send(b"a1 SELECT INBOX\r\n")
    assert r.until(b"a1")[-1].startswith(b"a1 BAD")
    r.send(b"a2 FETCH 1 FLAGS\r\n")
    assert r.until(b"a2")[-1].startswith(b"a2 BAD")
    r.send(b"a3 FROBNICATE\r\n")
    assert r.until(b"a3")[-1].startswith(b"a3 BAD")
    r.send(f'a4 LOGIN "{account.login}" "{account.password}"\r\n'.encode())
    assert r.until(b"a4")[-1].startswith(b"a4 OK")
    r.send(b"a5 FETCH 1 FLAGS\r\n")
    assert r.until(b"a5")[-1].startswith(b"a5 BAD")
    r.send(b"a6 SELECT INBOX\r\n")
    assert r.until(b"a6")[-1].startswith(b"a6 OK [READ-WRITE]")
    r.send(b"a7 FETCH 99 FLAGS\r\n")
    assert r.until(b"a7")[-1].startswith(b"a7 BAD")
    r.send(b"a8 STORE 1:* +FLAGS (\\Bogus)\r\n")
    assert r.until(b"a8")[-1].startswith((b"a8 BAD", b"a8 NO", b"a8 OK"))
    r.alive()


def test_malformed_lines_get_bad_and_session_goes_on(account: Account) -> None:
    r = Raw(account.port)
    for bad in (b"\r\n", b"nospace\r\n", b"a1 LOGIN (((\r\n", b'a2 LOGIN "unterminated\r\n',
                b"a3 LOGIN a b c d\r\n", b"\x00\x01\x02 \xff\xfe\r\n", b"a4 NOOP )\r\n",
                b"a5 CAPABILITY [\r\n"):
        r.send(bad)
        assert b" BAD " in r.line()
    r.alive()


def test_deep_parentheses(account: Account) -> None:
    r = Raw(account.port)
    r.send(b"a1 NOOP " + b"(" * 5000 + b")" * 5000 + b"\r\n")
    assert r.until(b"a1")[-1].startswith(b"a1 BAD")
    r.alive()


def test_huge_and_unterminated_literals(account: Account) -> None:
    r = Raw(account.port)
    r.send(b"a1 LOGIN {99999999999}\r\n")  # synchronising: refused, nothing follows
    assert r.until(b"a1")[-1].startswith(b"a1 BAD")
    r.alive()
    r.send(f'a2 LOGIN "{account.login}" "{account.password}"\r\n'.encode())
    assert r.until(b"a2")[-1].startswith(b"a2 OK")
    r.send(b"a3 APPEND INBOX {999999999999}\r\n")
    assert r.until(b"a3")[-1].startswith(b"a3 NO [TOOBIG]")
    r.alive()
    r.send(b"a4 APPEND INBOX {10}\r\n")
    assert r.line().startswith(b"+")
    r.send(b"12345")  # and then nothing: the session waits, others are not affected
    other = Raw(account.port)
    other.alive()
    r.sock.close()
    r2 = Raw(account.port)
    r2.send(b"a5 APPEND INBOX {99999999999+}\r\n")  # non-synchronising and too big: BYE
    assert r2.until(b"a5")[-1].startswith((b"* BYE", b"a5 BAD", b"a5 NO"))
    Raw(account.port).alive()


def test_long_line_is_refused(account: Account) -> None:
    r = Raw(account.port)
    r.send(b"a1 NOOP " + b"x" * 200_000 + b"\r\n")
    assert b"BAD" in r.line()
    r.alive()


def test_binary_junk_then_valid(account: Account) -> None:
    import random
    rnd = random.Random(7)
    r = Raw(account.port)
    junk = bytes(rnd.randrange(256) for _ in range(20_000)).replace(b"{", b"[")
    r.send(junk + b"\r\n")
    r.send(b"zz NOOP\r\n")
    while True:
        line = r.line()
        if line.startswith(b"zz "):
            assert line.startswith(b"zz OK")
            break
    Raw(account.port).alive()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=300))
def test_tokenize_never_crashes(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        tokenize([data])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"a1", b" ", b"(", b")", b'"', b"\\", b"{3}\r\n", b"{2+}\r\n",
                                 b"FETCH", b"BODY[", b"]", b"<1.2>", b"x", b"\r\n", b"\xff",
                                 b"APPEND", b"UID", b"~{1}\r\n"]), max_size=30))
def test_command_reader_never_crashes(parts: list[bytes]) -> None:
    async def run() -> None:
        reader = asyncio.StreamReader(limit=1100)
        reader.feed_data(b"".join(parts) + b"\r\n")
        reader.feed_eof()
        sent: list[bytes] = []

        async def send(b: bytes) -> None:
            sent.append(b)
        cr = CommandReader(reader, send, max_line=1024, max_literal=4096)
        for _ in range(50):
            try:
                cmd = await cr.read()
                if cmd.message is not None:
                    await cmd.message.discard()
            except ParseError:
                continue
            except (EOFError, asyncio.IncompleteReadError):
                return
    asyncio.run(run())


def test_session_survives_fuzzed_commands(account: Account) -> None:
    import random
    rnd = random.Random(11)
    words = [b"FETCH", b"1:*", b"(", b")", b"BODY[", b"]", b"SEARCH", b"OR", b"NOT", b"UID",
             b"STORE", b"+FLAGS", b"\\Seen", b'"x"', b"LIST", b"*", b"%", b"SELECT", b"INBOX",
             b"<0.5>", b"HEADER.FIELDS", b"COPY", b"Trash", b"STATUS", b"MESSAGES"]
    r = Raw(account.port)
    r.send(f'l LOGIN "{account.login}" "{account.password}"\r\n'.encode())
    r.until(b"l")
    r.send(b"s SELECT INBOX\r\n")
    r.until(b"s")
    for i in range(200):
        cmd = b" ".join(rnd.choice(words) for _ in range(rnd.randrange(1, 8)))
        tag = b"f%d" % i
        r.send(tag + b" " + cmd + b"\r\n")
        last = r.until(tag)[-1]
        assert last.startswith(tag + b" ") and b"SERVERBUG" not in last, (cmd, last)
    r.alive()


@pytest.mark.parametrize("cmd", [b"a1 AUTHENTICATE PLAIN !!!notbase64",
                                 b"a1 AUTHENTICATE CRAM-MD5", b"a1 LOGIN"])
def test_bad_auth_inputs(account: Account, cmd: bytes) -> None:
    r = Raw(account.port)
    r.send(cmd + b"\r\n")
    assert r.until(b"a1")[-1].split(b" ")[1] in (b"BAD", b"NO")
    r.alive()


def test_literals_count_against_one_command_s_size(account: Account) -> None:
    """#15.2: before login a command holds 64 KiB, literals included; after, 1 MiB."""
    r = Raw(account.port)
    r.send(b"a1 LOGIN {40000}\r\n")  # synchronising and within the limit...
    assert r.line().startswith(b"+")
    r.send(b"x" * 40000 + b" {30000}\r\n")  # ...but the second would pass 64 KiB: BAD, no '+'
    assert r.until(b"a1")[-1].startswith(b"a1 BAD")
    r.alive()
    r.send(b"a2 APPEND INBOX {100}\r\n")  # before login APPEND is read like any command
    assert r.line().startswith(b"+")
    r.send(b"y" * 100 + b"\r\n")
    assert r.until(b"a2")[-1].startswith(b"a2 BAD")
    r.send(b"a3 APPEND INBOX {70000+}\r\n")  # non-synchronising over the bound: BYE, closed
    assert r.until(b"a3")[-1].startswith(b"* BYE")
    with pytest.raises(ConnectionError):
        r.line()
    r = Raw(account.port)
    r.send(f'a4 LOGIN "{account.login}" "{account.password}"\r\n'.encode())
    assert r.until(b"a4")[-1].startswith(b"a4 OK")
    r.send(b"s SELECT INBOX\r\n")
    r.until(b"s")
    piece = b"x" * 60_000

    def search(tag: bytes, n: int) -> None:
        r.send(tag + b" SEARCH TEXT {60000+}\r\n" + b"".join(
            piece + b" TEXT {60000+}\r\n" for _ in range(n - 1)) + piece + b"\r\n")
    search(b"a5", 10)  # 600 KB: within imap.max_command
    assert r.until(b"a5")[-1].startswith(b"a5 OK")
    search(b"a6", 20)  # 1.2 MB: refused when the literal that passes 1 MiB is announced
    assert r.until(b"a6")[-1].startswith(b"* BYE")


def test_a_huge_search_program_is_refused_before_it_runs(account: Account) -> None:
    """#15.10: ~100k tokens compiled and ran on the event loop (a 3 s stall)."""
    account.deliver(b"Subject: one\r\n\r\nbody\r\n")
    r = Raw(account.port)
    r.send(f'l LOGIN "{account.login}" "{account.password}"\r\n'.encode())
    r.until(b"l")
    r.send(b"s SELECT INBOX\r\n")
    r.until(b"s")
    start = time.monotonic()
    r.send(b"a1 SEARCH " + b" ".join([b"1"] * 30_000) + b"\r\n")  # one line: 60 KB
    last = r.until(b"a1")[-1]
    assert last.startswith(b"a1 BAD") and b"too large" in last, last
    assert time.monotonic() - start < 2
    r.send(b"a2 SEARCH " + b"1:* " * 900 + b"1\r\n")  # 901 keys: fine
    assert r.until(b"a2")[-2:] == [b"* SEARCH 1", b"a2 OK SEARCH completed"]
    r.alive()


def test_a_long_search_leaves_other_sessions_responsive(account: Account) -> None:
    """#15.10: the evaluation runs off the loop, a batch at a time (``run_search``)."""
    start = time.monotonic()
    for i in range(1000):
        account.twin.call(account.twin.service.mail.deliver(
            account.login, b"Subject: m%d\r\n\r\nbody\r\n" % i))
    print(f"delivered in {time.monotonic() - start:.1f} s")
    busy, other = Raw(account.port), Raw(account.port)
    for r in (busy, other):
        r.send(f'l LOGIN "{account.login}" "{account.password}"\r\n'.encode())
        r.until(b"l")
        r.send(b"s SELECT INBOX\r\n")
        r.until(b"s")
    start = time.monotonic()
    busy.send(b"a1 SEARCH " + b"SUBJECT m " * 999 + b"ALL\r\n")  # every key true: all run
    worst, done = 0.0, False
    while not done:
        t = time.monotonic()
        other.alive()
        worst = max(worst, time.monotonic() - t)
        busy.sock.settimeout(0.05)
        try:
            done = busy.until(b"a1")[-1].startswith(b"a1 OK")
        except TimeoutError:
            pass
        finally:
            busy.sock.settimeout(60)
    took = time.monotonic() - start
    print(f"SEARCH took {took:.2f} s, worst NOOP meanwhile {worst:.3f} s")
    assert took > 0.5  # long enough to matter
    assert worst < max(0.3, took / 4), (took, worst)
