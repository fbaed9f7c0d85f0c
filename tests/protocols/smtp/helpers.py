"""An in-process twin for SMTP tests: real sockets (port 0), real store, one loop.

In-process (rather than the ``twins`` fixture's subprocesses) so a test can
give the inbound verifier a DNS resolver of fixed answers and read the mail
store directly; the SMTP traffic itself is ordinary clients on real sockets.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiosmtplib
import dns.exception

from core.service import Service
from tests.twins import PORT_ZERO, twin_cli


@dataclass
class Twin:
    service: Service
    login: str
    password: str
    data: Path

    def port(self, name: str) -> int:
        return next(i.port for i in self.service.listener_info() if i.name == name)

    def smtp_listener(self) -> Any:
        from protocols.smtp import SmtpListener

        return next(x for x in self.service.listeners if isinstance(x, SmtpListener))


class Account(Protocol):
    """A twin and one of its users: the in-process ``Twin`` or a ``TwinProcess``."""

    login: str
    password: str

    def port(self, name: str, /) -> int: ...


async def submit(twin: Account, sender: str, rcpts: list[str], data: bytes) -> None:
    """Send ``data`` as the twin's user: submission port, STARTTLS, AUTH."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=twin.port("submission"),
                               start_tls=True, tls_context=client_tls()) as client:
        await client.login(twin.login, twin.password)
        await client.sendmail(sender, rcpts, data)


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def make_twin_dir(root: Path, name: str, phonebook: Path | None = None) -> dict[str, Any]:
    args = ["init", "--name", name, "--json"]
    if phonebook is not None:
        args += ["--phonebook", str(phonebook)]
    return dict(json.loads(twin_cli(root / name, *args).stdout))


async def no_dns(domain: str, lifetime: float) -> list[tuple[int, str]]:
    """The MX resolver of test twins: DNS is never reached, every lookup fails for now.

    A legacy recipient then stays queued (a temporary failure) whatever this
    machine's resolver would answer (NXDOMAIN at once, a timeout, a real MX).
    """
    raise dns.exception.Timeout(f"tests reach no DNS (MX of {domain})")


@asynccontextmanager
async def running_twin(root: Path, name: str = "alice", sets: dict[str, Any] | None = None,
                       phonebook: Path | None = None) -> AsyncIterator[Twin]:
    info = make_twin_dir(root, name, phonebook)
    overrides: dict[str, Any] = {k: "0" for k in PORT_ZERO}
    overrides["smtp.verify_dns"] = "false"
    overrides.update(sets or {})
    service = Service.open(root / name, overrides)
    service.outbound.resolve_mx = no_dns  # no test depends on this machine's DNS
    await service.start()
    try:
        yield Twin(service, info["login"], info["password"], root / name)
    finally:
        await service.stop()
        service.close()


async def inbox(service: Service, login: str, mailbox: str = "INBOX") -> list[bytes]:
    """Every message in ``login``'s mailbox, oldest first (after filing what was accepted)."""
    await service.mail.settled()
    snapshot, watch = await service.mail.open(login, mailbox, read_only=True)
    try:
        metas = await service.mail.meta(snapshot.mailbox.id, snapshot.uids, structure=False)
        return [await service.mail.read_bytes(m.ref) for m in metas]
    finally:
        service.mail.close(watch)
