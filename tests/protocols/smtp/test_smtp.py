"""SMTP listeners on real sockets: submission, inbound policy, limits, headers."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re
import smtplib
import subprocess
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path

import aiosmtplib
import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from phonebook.record import TwinRecord
from protocols.smtp.dns import static_resolver
from protocols.smtp.handler import QUEUE_IDS_PER_READ, QueueIds
from tests.protocols.smtp.helpers import Twin, client_tls, inbox, running_twin, submit
from tests.tools import require_tool


@pytest.fixture
async def alice(tmp_path: Path) -> AsyncIterator[Twin]:
    async with running_twin(tmp_path, "alice", {"smtp.max_message_size": "4096"}) as twin:
        yield twin


def message(sender: str, to: str, subject: str = "hi", body: str = "hello\n",
            extra: dict[str, str] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    for k, v in (extra or {}).items():
        msg[k] = v
    msg.set_content(body)
    return msg.as_bytes().replace(b"\n", b"\r\n")


async def test_submission_starttls_auth_delivers_to_inbox(alice: Twin) -> None:
    await submit(alice, alice.login, [alice.login], message(alice.login, alice.login, "first"))
    [stored] = await inbox(alice.service, alice.login)
    assert b"Subject: first" in stored
    assert b"with ESMTPSA" in stored  # Received says TLS + authenticated


async def test_implicit_tls_submission(alice: Twin) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=alice.port("submissions"),
                               use_tls=True, tls_context=client_tls()) as client:
        await client.login(alice.login, alice.password)
        await client.sendmail(alice.login, [alice.login], message(alice.login, alice.login, "465"))
    assert any(b"Subject: 465" in m for m in await inbox(alice.service, alice.login))


async def test_auth_before_starttls_is_refused(alice: Twin) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=alice.port("submission"),
                             start_tls=False)
    await client.connect()
    try:
        await client.ehlo()
        assert "auth" not in client.esmtp_extensions
        blob = base64.b64encode(f"\0{alice.login}\0{alice.password}".encode()).decode()
        reply = await client.execute_command(b"AUTH", b"PLAIN", blob.encode())
        assert reply.code == 530  # require_starttls: nothing but STARTTLS before TLS
        reply = await client.execute_command(b"MAIL", b"FROM:<" + alice.login.encode() + b">")
        assert reply.code == 530
    finally:
        client.close()


async def test_wrong_password_refused(alice: Twin) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=alice.port("submission"),
                               start_tls=True, tls_context=client_tls()) as client:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as err:
            await client.login(alice.login, "not-the-password")
        assert err.value.code == 535


async def test_submission_refuses_spoofed_senders(alice: Twin) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=alice.port("submission"),
                               start_tls=True, tls_context=client_tls()) as client:
        await client.login(alice.login, alice.password)
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as err:
            await client.sendmail("boss@example.com", [alice.login],
                                  message("boss@example.com", alice.login))
        assert err.value.code == 553 and "5.7.1" in err.value.message
        await client.rset()
        with pytest.raises(aiosmtplib.SMTPDataError) as data_err:  # envelope ok, header not
            await client.sendmail(alice.login, [alice.login],
                                  message("ceo@alice.localhost.evil", alice.login))
        assert data_err.value.code == 553
    assert await inbox(alice.service, alice.login) == []


async def test_each_message_has_its_own_queue_id_in_the_reply_and_received_header(
        alice: Twin) -> None:
    replies = []
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=alice.port("smtp"),
                               start_tls=False) as client:
        for n in range(3):
            _, reply = await client.sendmail("someone@example.com", [alice.login],
                                             message("someone@example.com", alice.login, f"q{n}"))
            replies.append(reply)
    ids = [re.fullmatch(r"2\.0\.0 OK id ([0-9a-f]{12})", r)[1] for r in replies]  # type: ignore[index]
    assert len(set(ids)) == 3
    stored = await inbox(alice.service, alice.login)
    for n, queue_id in enumerate(ids):
        [copy] = [m for m in stored if f"Subject: q{n}".encode() in m]
        received = copy.split(b"\r\n\r\n")[0].decode().split("Received: ", 1)[1]
        assert f"(twin) with ESMTP id {queue_id}" in received
        when = parsedate_to_datetime(received.split(";", 1)[1].split("\r\n")[1].strip())
        assert abs((dt.datetime.now(dt.UTC) - when).total_seconds()) < 60


def test_queue_ids_stay_distinct_across_reads_from_the_os() -> None:
    ids = QueueIds()
    drawn = [ids.next() for _ in range(3 * QUEUE_IDS_PER_READ + 1)]
    assert all(re.fullmatch(r"[0-9a-f]{12}", i) for i in drawn)
    assert len(set(drawn)) == len(drawn)


async def test_inbound_refuses_relaying_and_unknown_users(alice: Twin) -> None:
    await asyncio.to_thread(_relay_and_unknown, alice)


def _relay_and_unknown(alice: Twin) -> None:  # smtplib blocks: run it off the server's loop
    with smtplib.SMTP("127.0.0.1", alice.port("smtp")) as client:
        client.ehlo("outside.example")
        client.mail("someone@example.com")
        code, text = client.rcpt("victim@example.net")
        assert code == 550 and b"5.7.1" in text
        code, text = client.rcpt("nobody@alice.localhost")
        assert code == 550 and b"5.1.1" in text
        code, _ = client.rcpt(alice.login)
        assert code == 250
        assert "auth" not in client.esmtp_features  # no AUTH on the inbound port


async def test_oversize_refused_with_552(alice: Twin) -> None:
    await asyncio.to_thread(_oversize, alice)
    assert await inbox(alice.service, alice.login) == []


def _oversize(alice: Twin) -> None:
    with smtplib.SMTP("127.0.0.1", alice.port("smtp")) as client:
        client.ehlo("outside.example")
        assert client.esmtp_features["size"] == "4096"
        code, text = client.mail("a@example.com", ["SIZE=100000"])
        assert code == 552 and b"5.3.4" in text
        client.rset()
        client.mail("a@example.com")
        client.rcpt(alice.login)
        code, text = client.data(message("a@example.com", alice.login, body="x" * 10_000))
        assert code == 552 and b"5.3.4" in text


async def test_smtputf8_and_8bit(alice: Twin) -> None:
    body = "Grüße, 你好\n"
    raw = message("jörg@example.com", alice.login, "ünïcode", body).replace(
        b"\r\n", b"\r\n")
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=alice.port("smtp"),
                               start_tls=False) as client:
        await client.ehlo()
        assert client.supports_extension("smtputf8") and client.supports_extension("8bitmime")
        await client.sendmail("jörg@example.com", [alice.login], raw,
                              mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    [stored] = await inbox(alice.service, alice.login)
    assert b"with UTF8SMTP" in stored


async def test_inbound_headers_strip_fakes_and_warn_on_twin_spoofing(alice: Twin) -> None:
    # bob is a twin in the phonebook; mail "from" bob over plain SMTP without DKIM is suspect
    from nacl.signing import SigningKey

    key = SigningKey.generate()
    alice.service.phonebook.publish(TwinRecord(
        name="bob", public_key=bytes(key.verify_key), endpoints=("https://127.0.0.1:1",),
        mail_domains=("bob.localhost",), valid_until=2**31, seq=1).signed_by(key))
    fake = message("bob@bob.localhost", alice.login, extra={
        "X-Twin-Verified": "bob (key forged)",
        "Authentication-Results": "alice.localhost; twin=pass"})
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=alice.port("smtp"),
                               start_tls=False) as client:
        await client.sendmail("bob@bob.localhost", [alice.login], fake)
    [stored] = await inbox(alice.service, alice.login)
    head = stored.split(b"\r\n\r\n")[0]
    assert b"forged" not in head and b"twin=pass" not in head
    assert b"X-Twin-Warning: claims to be from twin bob" in head
    assert b"Authentication-Results: alice.localhost;\r\n\tdkim=none;" in head


async def test_a_twin_address_after_five_others_is_still_caught(alice: Twin) -> None:
    # #15 item 10: only the first five From/Sender addresses were looked at
    from nacl.signing import SigningKey

    key = SigningKey.generate()
    alice.service.phonebook.publish(TwinRecord(
        name="bob", public_key=bytes(key.verify_key), endpoints=("https://127.0.0.1:1",),
        mail_domains=("bob.localhost",), valid_until=2**31, seq=1).signed_by(key))
    others = ", ".join(f"x{i}@example{i}.org" for i in range(6))
    raw = (f"From: {others}\r\nSender: bob@bob.localhost\r\nTo: {alice.login}\r\n"
           f"Subject: six\r\n\r\nhi\r\n").encode()
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=alice.port("smtp"),
                               start_tls=False) as client:
        await client.sendmail("x0@example0.org", [alice.login], raw)
        [stored] = await inbox(alice.service, alice.login)
        assert b"X-Twin-Warning: claims to be from twin bob (bob@bob.localhost)" in stored
        many = ",\r\n ".join(f"x{i}@example.org" for i in range(101))
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:  # bounded, not cut short
            await client.sendmail("x0@example0.org", [alice.login],
                                  f"From: {many}\r\n\r\nhi\r\n".encode())
        assert refused.value.code == 554


async def test_inbound_dkim_and_spf_results(alice: Twin) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = base64.b64encode(private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    records = {("sel._domainkey.example.org", "TXT"): [f"v=DKIM1; k=rsa; p={public}"],
               ("example.org", "TXT"): ["v=spf1 ip4:127.0.0.0/8 -all"]}
    listener = alice.smtp_listener()
    listener.verifier.resolver = static_resolver(records)
    listener.verifier.skip_loopback = False
    raw = message("news@example.org", alice.login, "signed")
    signed = dkim.sign(raw, b"sel", b"example.org", pem, include_headers=[b"from", b"subject"])
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=alice.port("smtp"),
                               start_tls=False) as client:
        await client.sendmail("news@example.org", [alice.login], signed + raw)
        tampered = (signed + raw).replace(b"Subject: signed", b"Subject: changed")
        await client.sendmail("news@evil.example", [alice.login], tampered)
    first, second = await inbox(alice.service, alice.login)
    assert (b"dkim=pass header.d=example.org header.s=sel;\r\n\tspf=pass "
            b"smtp.mailfrom=news@example.org;") in first
    assert b"dkim=fail header.d=example.org" in second
    assert re.search(rb"spf=none (\([^)]*\) )?smtp.mailfrom=news@evil.example;", second)


async def test_swaks_submission(alice: Twin) -> None:
    swaks = require_tool("swaks")
    out = await asyncio.to_thread(subprocess.run,
        [swaks, "--server", f"127.0.0.1:{alice.port('submission')}", "--tls",
         "--auth", "LOGIN", "--auth-user", alice.login, "--auth-password", alice.password,
         "--from", alice.login, "--to", alice.login, "--h-Subject", "via swaks"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert any(b"via swaks" in m for m in await inbox(alice.service, alice.login))
    refused = await asyncio.to_thread(subprocess.run,
        [swaks, "--server", f"127.0.0.1:{alice.port('submission')}",
         "--auth", "PLAIN", "--auth-user", alice.login, "--auth-password", alice.password,
         "--from", alice.login, "--to", alice.login], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0  # no AUTH offered without TLS


async def test_sessions_over_the_limit_get_421(tmp_path: Path) -> None:
    async with running_twin(tmp_path, "alice", {"smtp.max_sessions": "2"}) as twin:
        async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            return reader, writer, await asyncio.wait_for(reader.readline(), 10)

        first = await connect(twin.port("smtp"))
        second = await connect(twin.port("smtp"))
        assert first[2].startswith(b"220") and second[2].startswith(b"220")
        reader, writer, greeting = await connect(twin.port("smtp"))
        assert greeting.startswith(b"421 4.3.2")
        # the inbound port's budget is its own: submission still answers (#15.9)
        _, sub_writer, sub_greeting = await connect(twin.port("submission"))
        assert sub_greeting.startswith(b"220")
        sub_writer.close()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
        writer.close()
        first[1].write(b"QUIT\r\n")
        assert (await asyncio.wait_for(first[0].readline(), 10)).startswith(b"221")
        first[1].close()
        for _ in range(50):  # the freed slot is usable again
            reader, writer, greeting = await connect(twin.port("smtp"))
            writer.close()
            if greeting.startswith(b"220"):
                break
            await asyncio.sleep(0.1)
        assert greeting.startswith(b"220")
        second[1].close()
