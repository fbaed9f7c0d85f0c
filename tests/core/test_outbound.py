"""The legacy queue: smarthost delivery with DKIM, retries, bounces (real sockets)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import dkim
from aiosmtpd.smtp import SMTP, Envelope, Session

from core.outbound.queue import delay_after
from tests.protocols.smtp.helpers import inbox, running_twin


class OutsideWorld:
    """An aiosmtpd server standing in for the internet's mail servers."""

    def __init__(self, refuse: str | None = None) -> None:
        self.received: list[Envelope] = []
        self.refuse = refuse
        self.arrived = asyncio.Event()

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        if self.refuse and address.startswith(self.refuse):
            return "550 5.1.1 no such user out here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append(envelope)
        self.arrived.set()
        return "250 OK"


async def start_world(world: OutsideWorld) -> tuple[asyncio.Server, int]:
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(world), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_retry_schedule_last_step_repeats() -> None:
    assert [delay_after([5, 30, 120], n) for n in range(5)] == [0, 5, 30, 120, 120]


async def test_foreign_mail_goes_to_smarthost_dkim_signed(tmp_path: Path) -> None:
    world = OutsideWorld(refuse="ghost")
    server, port = await start_world(world)
    sets = {"smtp.smarthost": f"127.0.0.1:{port}", "smtp.smarthost_tls": "none"}
    try:
        async with running_twin(tmp_path, "alice", sets) as alice:
            message = (b"From: alice@alice.localhost\r\nTo: carol@example.com\r\n"
                       b"Subject: to the world\r\n\r\nhello outside\r\n")
            routed = await alice.service.router.route(
                alice.login, ["carol@example.com", "ghost@example.com"], message)
            assert routed.legacy == ["carol@example.com", "ghost@example.com"]
            await asyncio.wait_for(world.arrived.wait(), 20)
            [env] = world.received
            assert env.rcpt_tos == ["carol@example.com"]
            key = alice.service.outbound.dkim
            txt = key.txt_record().encode()

            def dns(name: bytes, timeout: int = 5) -> bytes | None:
                return txt if name.decode().rstrip(".") == key.record_name else None

            assert env.original_content is not None
            assert dkim.verify(env.original_content, dnsfunc=dns)
            assert not dkim.verify(env.original_content.replace(b"hello", b"HELLO"), dnsfunc=dns)
            # the refused recipient bounced at once into alice's Inbox
            for _ in range(100):
                bounces = await inbox(alice.service, alice.login)
                if bounces:
                    break
                await asyncio.sleep(0.1)
            [dsn] = bounces
            assert b"multipart/report" in dsn and b"report-type=delivery-status" in dsn
            assert b"Final-Recipient: rfc822; ghost@example.com" in dsn
            assert b"Status: 5.0.0" in dsn and b"Subject: to the world" in dsn
            assert alice.service.outbound.entries() == []
    finally:
        server.close()


async def test_smarthost_down_retries_then_bounces(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    sets: dict[str, Any] = {"smtp.smarthost": f"127.0.0.1:{port}",
                            "smtp.smarthost_tls": "none",
                            "smtp.retry_schedule": "[0.3]", "smtp.give_up_after": "2"}
    async with running_twin(tmp_path, "alice", sets) as alice:
        message = b"From: alice@alice.localhost\r\nSubject: doomed\r\n\r\nbody\r\n"
        await alice.service.router.route(alice.login, ["dave@example.net"], message)
        attempts_seen = 0
        for _ in range(100):
            entries = alice.service.outbound.entries()
            if entries:
                attempts_seen = max(attempts_seen, entries[0].attempts)
                assert "Connect" in entries[0].last_error or not entries[0].last_error \
                    or str(port) in entries[0].last_error
            if await inbox(alice.service, alice.login):
                break
            await asyncio.sleep(0.1)
        assert attempts_seen >= 2  # retried before giving up
        [dsn] = await inbox(alice.service, alice.login)
        assert b"Final-Recipient: rfc822; dave@example.net" in dsn
        assert b"Status: 4.4.7" in dsn and b"Subject: doomed" in dsn
        assert alice.service.outbound.entries() == []
