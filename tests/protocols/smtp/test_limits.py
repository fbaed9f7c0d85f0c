"""SMTP connection limits on real sockets: slots, per-address caps, login time-outs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosmtplib

from tests.protocols.smtp.helpers import Twin, client_tls, running_twin


async def greeting(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return reader, writer, await asyncio.wait_for(reader.readline(), 10)


async def starttls_session(twin: Twin, port_name: str) -> None:
    """A clean session: EHLO, STARTTLS, EHLO, (AUTH on submission), QUIT."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=twin.port(port_name),
                               start_tls=True, tls_context=client_tls()) as client:
        if port_name == "submission":
            await client.login(twin.login, twin.password)
        await client.noop()


async def test_starttls_sessions_do_not_leak_session_slots(tmp_path: Path) -> None:
    """Issue #23.1: aiosmtpd calls connection_made again after the TLS handshake."""
    async with running_twin(tmp_path, "alice", {"smtp.max_sessions": "3"}) as twin:
        for _ in range(3):
            await starttls_session(twin, "submission")
            await starttls_session(twin, "smtp")
        await asyncio.sleep(0.1)  # connection_lost runs after the client's close
        for name in ("smtp", "submission", "submissions"):
            _, writer, line = await greeting(twin.port(name)) if name != "submissions" \
                else await _implicit(twin)
            assert line.startswith(b"220"), (name, line)
            writer.close()


async def _implicit(twin: Twin) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", twin.port("submissions"),
                                                   ssl=client_tls())
    return reader, writer, await asyncio.wait_for(reader.readline(), 10)
