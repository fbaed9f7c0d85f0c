"""TwinSMTP's own protocol paths: chunked DATA, the address fast path, the idle timer.

The session runs on a real socket with a handler that only records what it
got, so each test pins down exactly what the protocol layer hands to core.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
from collections.abc import AsyncIterator
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import Any, cast

import pytest
from aiosmtpd.smtp import Envelope, Session
from hypothesis import given, settings
from hypothesis import strategies as st

from core.limits import Budget, ConnectionLimits
from protocols.smtp.session import DATA_LINE_LIMIT, TwinSMTP, _has_long_line

LIMIT = 64 * 1024


class Recorder:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.messages.append(envelope.original_content or b"")
        return "250 2.0.0 OK"


class Wire:
    """A raw client: bytes out, reply lines in (so a test controls every byte)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def reply(self) -> bytes:
        lines = [await asyncio.wait_for(self.reader.readline(), 5)]
        while lines[-1][3:4] == b"-":
            lines.append(await asyncio.wait_for(self.reader.readline(), 5))
        return lines[-1]

    async def send(self, data: bytes) -> bytes:
        self.writer.write(data)
        return await self.reply()

    async def envelope(self) -> None:
        assert (await self.send(b"EHLO client\r\n")).startswith(b"250 ")
        assert (await self.send(b"MAIL FROM:<a@example.com>\r\n")).startswith(b"250 ")
        assert (await self.send(b"RCPT TO:<b@example.org>\r\n")).startswith(b"250 ")
        assert (await self.send(b"DATA\r\n")).startswith(b"354 ")


@pytest.fixture
async def server() -> AsyncIterator[tuple[Recorder, int]]:
    recorder = Recorder()
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(
        lambda: TwinSMTP(recorder, service=cast(Any, None),
                         gate=ConnectionLimits(Budget("test", 10, 10, 10)), data_size_limit=LIMIT,
                         timeout=0.5),
        "127.0.0.1", 0)
    yield recorder, srv.sockets[0].getsockname()[1]
    srv.close()


@pytest.fixture
async def wire(server: tuple[Recorder, int]) -> AsyncIterator[Wire]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server[1])
    w = Wire(reader, writer)
    assert (await w.reply()).startswith(b"220 ")
    yield w
    writer.close()


async def deliver(wire: Wire, body: bytes) -> bytes:
    await wire.envelope()
    return await wire.send(body)


@pytest.mark.parametrize(("sent", "stored"), [
    (b".\r\n", b""),                                       # empty message
    (b"one line\r\n.\r\n", b"one line\r\n"),
    (b"..leading dot\r\n.\r\n", b".leading dot\r\n"),      # RFC 5321 §4.5.2
    (b"a\r\n..\r\n...x\r\n.\r\n", b"a\r\n.\r\n..x\r\n"),
    (b"Ends a sentence.\r\nAnd.\r\n.\r\n", b"Ends a sentence.\r\nAnd.\r\n"),
    (b"bare\n.\nLF\r\n.\r\n", b"bare\n.\nLF\r\n"),           # only CRLF.CRLF ends DATA
    (b"x\r\n.\n.\r\n.\r\n", b"x\r\n\n.\r\n"),           # no smuggled end at LF.CRLF
])
async def test_data_is_unstuffed_and_ends_only_at_crlf_dot_crlf(
        server: tuple[Recorder, int], wire: Wire, sent: bytes, stored: bytes) -> None:
    assert (await deliver(wire, sent)).startswith(b"250 ")
    assert server[0].messages == [stored]


async def test_an_end_of_data_split_across_reads_is_found(server: tuple[Recorder, int],
                                                          wire: Wire) -> None:
    await wire.envelope()
    for byte in b"line one.\r\n.\r":
        wire.writer.write(bytes([byte]))
        await wire.writer.drain()
        await asyncio.sleep(0.001)
    assert (await wire.send(b"\n")).startswith(b"250 ")
    assert server[0].messages == [b"line one.\r\n"]


async def test_a_message_larger_than_the_reader_buffer_arrives_whole(
        server: tuple[Recorder, int], wire: Wire) -> None:
    body = b"".join(b"%05d " % i + b"y" * 70 + b"\r\n" for i in range(700))  # ~54 KiB
    assert (await deliver(wire, body + b".\r\n")).startswith(b"250 ")
    assert server[0].messages == [body]


async def test_too_much_data_is_refused_after_the_end_and_the_session_goes_on(
        server: tuple[Recorder, int], wire: Wire) -> None:
    big = (b"z" * 998 + b"\r\n") * (LIMIT // 1000 + 5)
    assert (await deliver(wire, big + b".\r\n")).startswith(b"552 ")
    assert (await deliver(wire, b"small\r\n.\r\n")).startswith(b"250 ")
    assert server[0].messages == [b"small\r\n"]


async def test_a_line_over_the_limit_is_refused(server: tuple[Recorder, int],
                                                wire: Wire) -> None:
    ok = b"a" * (DATA_LINE_LIMIT - 2) + b"\r\n"
    assert (await deliver(wire, ok + b".\r\n")).startswith(b"250 ")
    long = b"b" * (DATA_LINE_LIMIT - 1) + b"\r\n"
    assert (await deliver(wire, b"first\r\n" + long + b".\r\n")).startswith(b"500 ")
    assert server[0].messages == [ok]


async def test_a_pipelined_command_after_the_dot_is_not_swallowed(wire: Wire) -> None:
    await wire.envelope()
    wire.writer.write(b"hello\r\n.\r\nNOOP\r\n")
    assert (await wire.reply()).startswith(b"250 ")
    assert (await wire.reply()).startswith(b"250 ")


async def test_an_idle_session_is_closed_even_after_activity(wire: Wire) -> None:
    for _ in range(3):  # each command moves the deadline
        await asyncio.sleep(0.2)
        assert (await wire.send(b"NOOP\r\n")).startswith(b"250 ")
    assert (await asyncio.wait_for(wire.reader.read(), 3)).startswith(b"421 ")


async def test_smtplib_round_trip(server: tuple[Recorder, int]) -> None:
    def send() -> None:
        with smtplib.SMTP("127.0.0.1", server[1]) as client:
            client.sendmail("a@example.com", ["b@example.org"], b".dot\r\nend\r\n")
    await asyncio.to_thread(send)
    assert server[0].messages == [b".dot\r\nend\r\n"]


def _parsed(arg: str) -> tuple[str | None, list[str] | None]:
    """What the RFC 5322 parser makes of a MAIL/RCPT argument (aiosmtpd's own way)."""
    try:
        parse = get_angle_addr if arg.lstrip().startswith("<") else get_addr_spec
        address, rest = parse(arg)
    except HeaderParseError:
        return None, None
    return str(address.addr_spec), str(rest).split()


_atoms = st.text(alphabet="abcXYZ019!#$%&'*+/=?^_`{|}~-.\"\\ ()@<>é", min_size=0, max_size=12)


@settings(max_examples=400, deadline=None)
@given(local=_atoms, domain=_atoms, rest=st.sampled_from(["", " SIZE=10", "  BODY=8BITMIME",
                                                          "x", " (c) SIZE=1", "\tA=b"]))
def test_the_address_fast_path_agrees_with_the_full_parser(local: str, domain: str,
                                                          rest: str) -> None:
    session = TwinSMTP.__new__(TwinSMTP)
    session.local_part_limit = 0
    arg = f"<{local}@{domain}>{rest}"
    addr, params = session._getaddr(arg)
    expected = _parsed(arg)
    assert (addr, None if params is None else params.split()) == expected


async def test_a_session_knows_every_command_and_mechanism_of_the_stock_class() -> None:
    from aiosmtpd.smtp import SMTP

    ours = TwinSMTP(Recorder(), service=cast(Any, None),
                    gate=ConnectionLimits(Budget("test", 1, 1, 1)))
    stock = SMTP(Recorder())
    assert set(ours._smtp_methods) == set(stock._smtp_methods)
    assert set(ours._auth_methods) == set(stock._auth_methods) == {"PLAIN", "LOGIN"}


_line = st.tuples(st.sampled_from([0, 1, 500, DATA_LINE_LIMIT - 2, DATA_LINE_LIMIT - 1,
                                   DATA_LINE_LIMIT, DATA_LINE_LIMIT + 1, 3000]),
                  st.sampled_from([b"\r\n", b"\n", b"\r", b""]))


@settings(max_examples=500, deadline=None)
@given(lines=st.lists(_line, max_size=6))
def test_the_long_line_check_finds_exactly_the_runs_without_a_line_feed(
        lines: list[tuple[int, bytes]]) -> None:
    buf = bytearray(b"".join(b"x" * n + end for n, end in lines))
    assert _has_long_line(buf) == bool(re.search(rb"[^\n]{%d}" % DATA_LINE_LIMIT, buf))


@pytest.mark.parametrize("command", [b"VRFY a@", b'VRFY ""@', b"MAIL FROM:a@", b'MAIL FROM:""@',
                                     b"MAIL FROM:<a@>"])
async def test_an_address_the_parser_trips_on_is_a_syntax_error(
        wire: Wire, command: bytes, caplog: pytest.LogCaptureFixture) -> None:
    # #15 item 10: the stdlib raised IndexError: "500 Error: (IndexError)" and a traceback
    assert (await wire.send(b"EHLO client\r\n")).startswith(b"250 ")
    reply = await wire.send(command + b"\r\n")
    assert reply[:3] in (b"501", b"553"), reply
    assert (await wire.send(b"MAIL FROM:<a@example.com>\r\n")).startswith(b"250 ")  # alive
    assert not [r for r in caplog.records if r.exc_info]
