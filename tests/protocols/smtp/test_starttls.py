"""STARTTLS on real sockets: the loop's TLS, RFC 3207's reset and no injected commands."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from protocols.smtp.session import TwinSMTP
from tests.protocols.smtp.helpers import Twin, client_tls, running_twin


@pytest.fixture
async def alice(tmp_path: Path) -> AsyncIterator[Twin]:
    async with running_twin(tmp_path, "alice", {"smtp.max_sessions": "1"}) as twin:
        yield twin


async def reply(reader: asyncio.StreamReader) -> list[bytes]:
    """One SMTP reply, all its lines."""
    lines = []
    while True:
        line = await asyncio.wait_for(reader.readline(), 10)
        assert line, f"connection closed after {lines!r}"
        lines.append(line)
        if line[3:4] != b"-":
            return lines


async def plaintext_to_starttls(twin: Twin, after: bytes = b"", port: str = "smtp"
                                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """EHLO (the inbound port by default), then STARTTLS with ``after`` in the same packet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", twin.port(port))
    assert (await reply(reader))[0].startswith(b"220")
    writer.write(b"EHLO client.example\r\n")
    assert any(b"STARTTLS" in line for line in await reply(reader))
    writer.write(b"STARTTLS\r\n" + after)
    assert (await reply(reader))[0].startswith(b"220")
    return reader, writer


async def test_a_command_sent_with_starttls_is_not_executed(alice: Twin) -> None:
    """RFC 3207 §5: plaintext after STARTTLS (a man in the middle's) is dropped.

    Had the injected EHLO run, in the clear or after the handshake, MAIL would
    be answered by its 250 lines, or be accepted; in the new session nothing
    has said EHLO yet."""
    reader, writer = await plaintext_to_starttls(alice, b"EHLO injected.example\r\n")
    await writer.start_tls(client_tls())
    writer.write(b"MAIL FROM:<someone@example.com>\r\n")
    assert (await reply(reader))[0].startswith(b"503")
    writer.write(b"EHLO client.example\r\n")
    lines = await reply(reader)
    assert lines[0].startswith(b"250-") and not any(b"STARTTLS" in x for x in lines)
    writer.write(b"QUIT\r\n")
    assert (await reply(reader))[0].startswith(b"221")
    writer.close()


async def test_starttls_uses_the_loops_tls_not_asyncio_sslproto(
        alice: Twin, monkeypatch: pytest.MonkeyPatch) -> None:
    """The speed path (#22): aiosmtpd's STARTTLS is asyncio's pure-Python
    SSLProtocol; the twin's is ``loop.start_tls`` (uvloop's, in C)."""
    sessions: list[TwinSMTP] = []
    started = TwinSMTP._tls_started

    def spy(self: TwinSMTP, tls: Any) -> None:
        sessions.append(self)
        started(self, tls)
    monkeypatch.setattr(TwinSMTP, "_tls_started", spy)
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=alice.port("submission"),
                               start_tls=True, tls_context=client_tls()) as client:
        await client.login(alice.login, alice.password)
        [server] = sessions
        transport = server.transport
        assert not isinstance(transport, asyncio.sslproto._SSLProtocolTransport)
        assert type(transport).__module__.startswith("uvloop"), type(transport)
        assert server._writer.transport is transport
        assert server._reader._transport is transport  # type: ignore[attr-defined]
        assert server.tls_active and server.session is not None
        assert server.session.ssl is not None and server.session.ssl["cipher"]
        assert server.session.authenticated
        await client.noop()


async def slot_is_free(twin: Twin, port: str, within: float = 5) -> None:
    """smtp.max_sessions is 1: the next connection is served, not given 421."""
    for _ in range(int(within * 10)):
        reader, writer = await asyncio.open_connection("127.0.0.1", twin.port(port))
        greeting = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        if greeting.startswith(b"220"):
            return
        await asyncio.sleep(0.1)  # connection_lost may run just after the close
    pytest.fail(f"the slot was not freed: {greeting!r}")


async def test_a_failed_handshake_closes_and_frees_the_slot(alice: Twin) -> None:
    reader, writer = await plaintext_to_starttls(alice)
    writer.write(b"this is not a TLS ClientHello\r\n")
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, nothing in the clear
    writer.close()
    await slot_is_free(alice, "smtp")


async def test_a_stalled_handshake_is_timed_out_and_frees_the_slot(tmp_path: Path) -> None:
    """The idle time-out (here smtp.login_timeout) bounds the handshake too, and
    the slot is freed then, not one more time-out later."""
    sets = {"smtp.max_sessions": "1", "smtp.login_timeout": "2"}
    async with running_twin(tmp_path, "alice", sets) as twin:
        reader, writer = await plaintext_to_starttls(twin, port="submission")
        start = asyncio.get_running_loop().time()
        await asyncio.wait_for(reader.read(), 10)  # no ClientHello: closed by the server
        assert asyncio.get_running_loop().time() - start < 5
        writer.close()
        await slot_is_free(twin, "submission", within=1)  # not another 2 s later
