"""A message whose delivery partly failed: the client's retry gives no duplicates.

Real sockets, a real client (aiosmtplib), a real store: carol's mailbox is
full, so of a message to alice and carol only alice's copy is stored and the
client is told 452 4.2.2 (mailbox full, try later). The twin is restarted
(the record of who has it must survive), carol gets room, the client retries
the same message: carol gets it, alice does not get a second copy.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from core.service import Service
from tests.protocols.smtp.helpers import inbox, make_twin_dir
from tests.twins import PORT_ZERO

QUOTA = 20_000


def _message(subject: str, size: int) -> bytes:
    head = (f"From: sender@example.com\r\nTo: alice@alice.localhost\r\n"
            f"Subject: {subject}\r\nMessage-ID: <{subject}@example.com>\r\n\r\n").encode()
    return head + b"x" * 70 + b"\r\n" * 1 + (b"y" * 70 + b"\r\n") * (size // 72)


async def _open(data: Path, overrides: dict[str, Any]) -> Service:
    service = Service.open(data, overrides)
    await service.start()
    return service


async def _close(service: Service) -> None:
    await service.stop()
    service.close()


def _port(service: Service) -> int:
    return next(i.port for i in service.listener_info() if i.name == "smtp")


async def _send(service: Service, rcpts: list[str], data: bytes) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=_port(service),
                               start_tls=False) as client:
        await client.sendmail("sender@example.com", rcpts, data)


async def test_retry_after_partial_failure_gives_one_copy_each(tmp_path: Path) -> None:
    info = make_twin_dir(tmp_path, "alice")
    alice = str(info["login"])
    carol = "carol@alice.localhost"
    overrides: dict[str, Any] = {k: "0" for k in PORT_ZERO}
    overrides.update({"smtp.verify_dns": "false", "mail.quota": str(QUOTA)})
    data = tmp_path / "alice"
    service = await _open(data, overrides)
    try:
        await asyncio.to_thread(service.users.add, carol)
        await service.mail.deliver(carol, _message("filler", 15_000))  # carol: nearly full
        wanted = _message("hello", 8_000)
        with pytest.raises(aiosmtplib.SMTPDataError) as err:
            await _send(service, [alice, carol], wanted)
        assert err.value.code == 452 and "4.2.2" in err.value.message
        assert [m.count(b"Subject: hello") for m in await inbox(service, alice)] == [1]
        assert not any(b"Subject: hello" in m for m in await inbox(service, carol))
    finally:
        await _close(service)

    overrides["mail.quota"] = str(10 * QUOTA)  # carol got room; the twin restarted meanwhile
    service = await _open(data, overrides)
    try:
        await _send(service, [alice, carol], wanted)  # the client's retry: 250 now
        for login in (alice, carol):
            copies = [m for m in await inbox(service, login) if b"Subject: hello" in m]
            assert len(copies) == 1, f"{login} has {len(copies)} copies"
        # a different message to both is not affected by what was remembered
        await _send(service, [alice, carol], _message("second", 1_000))
        for login in (alice, carol):
            assert sum(b"Subject: second" in m for m in await inbox(service, login)) == 1
    finally:
        await _close(service)


async def test_without_a_key_route_delivers_again(tmp_path: Path) -> None:
    """Only the SMTP adapter's retries are de-duplicated: ``route`` without a key is not."""
    info = make_twin_dir(tmp_path, "alice")
    overrides: dict[str, Any] = {k: "0" for k in PORT_ZERO}
    overrides["smtp.verify_dns"] = "false"
    service = await _open(tmp_path / "alice", overrides)
    try:
        message = _message("twice", 500)
        for _ in range(2):
            await service.router.route("sender@example.com", [info["login"]], message)
        assert len(await inbox(service, info["login"])) == 2
    finally:
        await _close(service)
