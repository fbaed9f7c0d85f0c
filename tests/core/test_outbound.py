"""The legacy queue: smarthost (plain, STARTTLS, TLS, AUTH) and direct MX delivery with DKIM,
retries, bounces (real sockets; MX records from an injected resolver)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import dkim
import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from core.outbound.queue import delay_after
from core.tls import make_self_signed
from tests.protocols.smtp.helpers import inbox, running_twin


class OutsideWorld:
    """An aiosmtpd server standing in for the internet's mail servers."""

    def __init__(self, refuse: str | None = None) -> None:
        self.received: list[Envelope] = []
        self.refuse = refuse
        self.arrived = asyncio.Event()

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        if self.refuse is not None and address.startswith(self.refuse):
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


# -- the smarthost over STARTTLS or implicit TLS with AUTH; direct delivery to MX hosts

SMARTHOST_USER, SMARTHOST_PASSWORD = "relay-user", "relay-secret"


class TlsWorld(OutsideWorld):
    """Records, per message, whether it came over TLS and after which login."""

    def __init__(self) -> None:
        super().__init__()
        self.sessions: list[tuple[bool, Any]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert server.transport is not None
        tls = server.transport.get_extra_info("ssl_object") is not None
        self.sessions.append((tls, session.auth_data))
        return await super().handle_DATA(server, session, envelope)


def _authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                   data: Any) -> AuthResult:
    ok = (isinstance(data, LoginPassword) and data.login == SMARTHOST_USER.encode()
          and data.password == SMARTHOST_PASSWORD.encode())
    return AuthResult(success=ok, handled=False,
                      auth_data=data.login.decode() if ok else None)


async def start_smarthost(world: OutsideWorld, cert_dir: Path, *, implicit: bool
                          ) -> tuple[asyncio.Server, int, Path]:
    """An aiosmtpd relay with a throwaway self-signed certificate; AUTH only over TLS."""
    cert, key = make_self_signed(cert_dir, ["smarthost.test"])
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    def make() -> SMTP:
        with warnings.catch_warnings():  # aiosmtpd warns that it cannot see implicit TLS
            warnings.simplefilter("ignore")
            return SMTP(world, tls_context=None if implicit else ctx,
                        require_starttls=not implicit, authenticator=_authenticator,
                        auth_required=True, auth_require_tls=not implicit)
    server = await asyncio.get_running_loop().create_server(
        make, "127.0.0.1", 0, ssl=ctx if implicit else None)
    return server, server.sockets[0].getsockname()[1], cert


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_smarthost_tls_and_auth(tmp_path: Path, mode: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    world = TlsWorld()
    server, port, cert = await start_smarthost(world, tmp_path / "relay",
                                               implicit=mode == "tls")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the twin trusts this relay's certificate
    sets = {"smtp.smarthost": f"127.0.0.1:{port}", "smtp.smarthost_tls": mode,
            "smtp.smarthost_user": SMARTHOST_USER, "smtp.smarthost_password": SMARTHOST_PASSWORD,
            "smtp.smarthost_verify": "true"}
    try:
        async with running_twin(tmp_path, "alice", sets) as alice:
            message = b"From: alice@alice.localhost\r\nSubject: relayed\r\n\r\nvia TLS\r\n"
            await alice.service.router.route(alice.login, ["carol@example.com"], message)
            await asyncio.wait_for(world.arrived.wait(), 20)
            [env] = world.received
            assert env.rcpt_tos == ["carol@example.com"]
            assert world.sessions == [(True, SMARTHOST_USER)]  # over TLS, logged in
            assert env.original_content is not None and b"via TLS" in env.original_content
            for _ in range(50):
                if not alice.service.outbound.entries():
                    break
                await asyncio.sleep(0.1)
            assert alice.service.outbound.entries() == []
    finally:
        server.close()


async def test_smarthost_untrusted_certificate_or_wrong_password_is_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = TlsWorld()
    server, port, _ = await start_smarthost(world, tmp_path / "relay", implicit=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)  # the relay's certificate: unknown CA
    sets = {"smtp.smarthost": f"127.0.0.1:{port}", "smtp.smarthost_tls": "starttls",
            "smtp.smarthost_user": SMARTHOST_USER, "smtp.smarthost_password": "wrong",
            "smtp.smarthost_verify": "true", "smtp.retry_schedule": "[3600]"}
    try:
        async with running_twin(tmp_path, "alice", sets) as alice:
            await alice.service.router.route(alice.login, ["carol@example.com"],
                                             b"From: alice@alice.localhost\r\n\r\nbody\r\n")
            entry = await _first_attempt(alice)
            assert "certificate" in entry.last_error.lower()
            alice.service.outbound.relay = replace(alice.service.outbound.relay, verify=False)
            alice.service.outbound.flush()
            alice.service.outbound._wake.set()
            for _ in range(100):  # the certificate is no longer checked: the login fails now
                entry = alice.service.outbound.entries()[0]
                if "login" in entry.last_error:
                    break
                await asyncio.sleep(0.1)
            assert "smarthost refused login (535)" in entry.last_error
            assert SMARTHOST_PASSWORD not in entry.last_error and "wrong" not in entry.last_error
            assert world.received == []
    finally:
        server.close()


async def _first_attempt(alice: Any) -> Any:
    for _ in range(100):
        entries = alice.service.outbound.entries()
        if entries and entries[0].attempts:
            return entries[0]
        await asyncio.sleep(0.1)
    raise AssertionError("the queue never tried")


async def test_direct_delivery_to_mx_hosts(tmp_path: Path) -> None:
    """No smarthost: MX records by preference, a dead MX skipped, STARTTLS opportunistic."""
    world = TlsWorld()
    cert, key = make_self_signed(tmp_path / "mx", ["mx.example.com"])
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(world, tls_context=ctx), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    refuser = OutsideWorld(refuse="")  # the least preferred MX refuses everyone for good
    last = await asyncio.get_running_loop().create_server(lambda: SMTP(refuser), "127.0.0.4",
                                                          port)
    asked: list[str] = []

    async def resolve(domain: str, lifetime: float) -> list[tuple[int, str]]:
        asked.append(domain)
        if domain == "example.com":  # the best MX is dead, the second one is our sink
            return [(30, "127.0.0.4"), (20, "127.0.0.1"), (10, "127.0.0.3")]
        if domain == "nomail.example":
            return [(0, ".")]  # RFC 7505 null MX
        raise LookupError(f"domain {domain} does not exist")

    sets = {"smtp.smarthost": "", "smtp.mx_port": str(port)}
    try:
        async with running_twin(tmp_path, "alice", sets) as alice:
            alice.service.outbound.resolve_mx = resolve
            message = b"From: alice@alice.localhost\r\nSubject: direct\r\n\r\nto MX\r\n"
            await alice.service.router.route(
                alice.login, ["carol@example.com", "x@nomail.example", "y@gone.example"],
                message)
            await asyncio.wait_for(world.arrived.wait(), 20)
            [env] = world.received
            assert env.rcpt_tos == ["carol@example.com"]
            assert world.sessions == [(True, None)]  # STARTTLS used since offered, no AUTH
            for _ in range(100):  # the two undeliverable ones bounce at once, for good
                bounces = await inbox(alice.service, alice.login)
                if bounces:
                    break
                await asyncio.sleep(0.1)
            [dsn] = bounces
            assert b"Final-Recipient: rfc822; x@nomail.example" in dsn
            assert b"Final-Recipient: rfc822; y@gone.example" in dsn
            assert b"Status: 5.1.2" in dsn
            assert sorted(asked) == ["example.com", "gone.example", "nomail.example"]
            assert alice.service.outbound.entries() == []
            assert refuser.received == []
    finally:
        server.close()
        last.close()


async def test_a_message_dkim_cannot_sign_is_refused_not_retried(tmp_path: Path) -> None:
    # #15 item 4: dkimpy's IndexError escaped enqueue: SMTP 451, and the client retried for ever
    from core.errors import Invalid

    odd = (b" From: a@example.com\r\nTo:\r\n\r\n b\n@example.org\r\nSubjDKIM-Signature: v=1;"
           b"ect: x\r\nMessage<1@x>\r\n\r\nbody\r\n")
    async with running_twin(tmp_path, "alice") as alice:
        with pytest.raises(Invalid, match="cannot sign"):
            await alice.service.outbound.enqueue(alice.login, ["x@example.com"], odd)
        assert alice.service.outbound.entries() == []


async def test_an_unexpected_error_is_retried_on_the_schedule_then_bounced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # #15 item 4: such a message was retried every schedule[0] seconds for ever
    from core.outbound import queue as queue_mod

    async def broken(*args: Any) -> Any:
        raise RuntimeError("a bug this message triggers")
    monkeypatch.setattr(queue_mod.transport, "send", broken)
    sets: dict[str, Any] = {"smtp.smarthost": "127.0.0.1:9", "smtp.smarthost_tls": "none",
                            "smtp.retry_schedule": "[0.2]", "smtp.give_up_after": "1"}
    async with running_twin(tmp_path, "alice", sets) as alice:
        message = b"From: alice@alice.localhost\r\nSubject: unlucky\r\n\r\nbody\r\n"
        await alice.service.router.route(alice.login, ["dave@example.net"], message)
        attempts = 0
        for _ in range(100):
            entries = alice.service.outbound.entries()
            attempts = max([attempts, *(e.attempts for e in entries)])
            if await inbox(alice.service, alice.login):
                break
            await asyncio.sleep(0.1)
        assert attempts >= 1
        [dsn] = await inbox(alice.service, alice.login)
        assert b"Final-Recipient: rfc822; dave@example.net" in dsn and b"Subject: unlucky" in dsn
        assert alice.service.outbound.entries() == []
