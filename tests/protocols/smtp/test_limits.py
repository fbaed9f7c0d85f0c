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


async def _connect_from(port: int, source: str
                        ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    return reader, writer, await asyncio.wait_for(reader.readline(), 10)


async def test_one_address_cannot_take_every_inbound_slot(tmp_path: Path) -> None:
    async with running_twin(tmp_path, "alice", {"smtp.max_per_ip": "3"}) as twin:
        held = [await _connect_from(twin.port("smtp"), "127.0.0.2") for _ in range(3)]
        assert all(line.startswith(b"220") for _, _, line in held)
        _, writer, line = await _connect_from(twin.port("smtp"), "127.0.0.2")
        assert line.startswith(b"421 4.3.2")
        writer.close()
        _, writer, line = await _connect_from(twin.port("smtp"), "127.0.0.3")  # another one
        assert line.startswith(b"220")
        writer.close()
        for _, w, _ in held:
            w.close()


async def test_idle_strangers_never_lock_the_owner_out_of_submission(tmp_path: Path) -> None:
    sets = {"smtp.max_sessions": "6", "smtp.max_unauthenticated": "3"}
    async with running_twin(tmp_path, "alice", sets) as twin:
        owner = aiosmtplib.SMTP(hostname="127.0.0.1", port=twin.port("submission"),
                                start_tls=True, tls_context=client_tls())
        await owner.connect()
        await owner.login(twin.login, twin.password)
        idle = [await _connect_from(twin.port("submission"), f"127.0.1.{i}")
                for i in range(1, 11)]  # ten strangers, each from its own address
        assert all(line.startswith(b"220") for _, _, line in idle)  # the oldest are closed
        closed = 0
        for reader, _, _ in idle[:7]:
            if (await asyncio.wait_for(reader.read(), 10)).startswith(b"421"):
                closed += 1
        assert closed == 7
        await owner.noop()  # the logged-in session was never a candidate
        await starttls_session(twin, "submission")  # and the owner can still log in anew
        await owner.quit()
        for _, writer, _ in idle:
            writer.close()


async def test_a_submission_session_must_log_in_soon(tmp_path: Path) -> None:
    async with running_twin(tmp_path, "alice", {"smtp.login_timeout": "1"}) as twin:
        reader, writer, line = await greeting(twin.port("submission"))
        assert line.startswith(b"220")
        owner = aiosmtplib.SMTP(hostname="127.0.0.1", port=twin.port("submission"),
                                start_tls=True, tls_context=client_tls())
        await owner.connect()
        await owner.login(twin.login, twin.password)
        start = asyncio.get_running_loop().time()
        rest = await asyncio.wait_for(reader.read(), 10)
        assert rest.startswith(b"421 4.4.2") and asyncio.get_running_loop().time() - start < 5
        writer.close()
        await asyncio.sleep(1.5)
        await owner.noop()  # logged in: the usual smtp.timeout applies
        await owner.quit()
