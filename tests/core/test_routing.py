"""Routing decisions and the trust headers core writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from nacl.signing import SigningKey

from core.errors import Forbidden, NotFound
from core.routing import from_addresses, strip_trust_headers, to_crlf
from phonebook.record import TwinRecord
from tests.protocols.smtp.helpers import inbox, running_twin
from tests.twins import twin_cli


def twin_record(name: str, domain: str) -> tuple[TwinRecord, SigningKey]:
    key = SigningKey.generate()
    record = TwinRecord(name=name, public_key=bytes(key.verify_key),
                        endpoints=("https://127.0.0.1:9",), mail_domains=(domain,),
                        valid_until=2**31, seq=1).signed_by(key)
    return record, key


def test_strip_trust_headers_keeps_others_and_foreign_results() -> None:
    raw = (b"X-Twin-Verified: fake\r\nAuthentication-Results: me.example; twin=pass\r\n"
           b"Authentication-Results: other.example; dkim=pass\r\nX-Twin-Warning: a\r\n"
           b" folded\r\nSubject: s\r\n\r\nX-Twin-Verified: in the body stays\r\n")
    out = strip_trust_headers(raw, "me.example")
    assert out == (b"Authentication-Results: other.example; dkim=pass\r\nSubject: s\r\n\r\n"
                   b"X-Twin-Verified: in the body stays\r\n")


def test_helpers() -> None:
    assert to_crlf(b"a\nb\r\nc\n") == b"a\r\nb\r\nc\r\n"
    assert from_addresses(b"From: A <A@X.org>, b@y.org\r\n\r\n") == ["a@x.org", "b@y.org"]


async def test_route_local_twin_and_legacy(tmp_path: Path) -> None:
    async with running_twin(tmp_path, "alice") as alice:
        router = alice.service.router
        bob, _ = twin_record("bob", "bob.localhost")
        alice.service.phonebook.publish(bob)
        with pytest.raises(Forbidden):
            await router.check_recipient("x@elsewhere.example", may_relay=False)
        with pytest.raises(NotFound):
            await router.check_recipient("nobody@alice.localhost", may_relay=True)
        msg = b"From: alice@alice.localhost\nSubject: three ways\n\nbody\n"
        routed = await router.route(alice.login, [alice.login, "bob@bob.localhost",
                                                  "carol@example.com"], msg)
        assert list(routed.local) == [alice.login]
        assert list(routed.twins) == ["bob"]  # a durable envelope in the peer outbox
        assert routed.legacy == ["carol@example.com"] and routed.queued is not None
        [stored] = await inbox(alice.service, alice.login)
        assert stored.endswith(b"\r\n\r\nbody\r\n")


async def test_receive_from_twin_marks_and_warns(tmp_path: Path) -> None:
    async with running_twin(tmp_path, "alice") as alice:
        bob, _ = twin_record("bob", "bob.localhost")
        router = alice.service.router
        await router.receive_from_twin(bob, {
            "rcpt": [alice.login], "mail_from": "bob@bob.localhost",
            "message": b"From: bob@bob.localhost\r\nX-Twin-Warning: x\r\n\r\nhi\r\n"})
        await router.receive_from_twin(bob, {
            "rcpt": [alice.login], "mail_from": "bob@bob.localhost",
            "message": b"From: ceo@bank.example\r\n\r\nsend money\r\n"})
        with pytest.raises(NotFound):
            await router.receive_from_twin(bob, {"rcpt": ["zed@alice.localhost"],
                                                 "mail_from": "", "message": b"\r\n"})
        honest, lying = await inbox(alice.service, alice.login)
        assert b"twin=pass" in honest and b"X-Twin-Warning" not in honest
        assert b"X-Twin-Verified: bob (key " in honest
        assert b"twin=fail" in lying and b"X-Twin-Warning: twin bob sent mail claiming" in lying


async def test_an_unknown_recipient_of_a_peer_is_refused_in_the_ack_not_bounced(
        tmp_path: Path) -> None:
    # #15 item 6: a DSN went to the peer's chosen mail_from, DKIM-signed by us
    async with running_twin(tmp_path, "alice") as alice:
        bob, _ = twin_record("bob", "bob.localhost")
        router = alice.service.router
        result = await router.receive_from_twin(bob, {
            "rcpt": [alice.login, "nobody@alice.localhost"],
            "mail_from": "victim@example.com",
            "message": b"From: bob@bob.localhost\r\nX-Junk: " + b"j" * 4000 + b"\r\n\r\nhi\r\n"})
        assert result == {"delivered": 1, "unknown": ["nobody@alice.localhost"]}
        assert alice.service.outbound.entries() == []  # no DSN queued for anyone
        assert await alice.service.peer.outbox.list() == []  # nor to a twin
        [stored] = await inbox(alice.service, alice.login)
        assert stored.endswith(b"\r\n\r\nhi\r\n")


async def test_the_sending_twin_bounces_refused_recipients_to_its_own_user(
        tmp_path: Path) -> None:
    async with running_twin(tmp_path, "alice") as alice:
        router = alice.service.router
        payload = {"rcpt": ["bob@bob.localhost", "nobody@bob.localhost"],
                   "mail_from": alice.login,
                   "message": b"From: alice@alice.localhost\r\nSubject: hello\r\n\r\nhi\r\n"}
        # the ack may only name recipients we sent: "ceo@bank.example" is ignored
        await router.peer_acked("bob", payload, {
            "delivered": 1, "unknown": ["NOBODY@bob.localhost", "ceo@bank.example"]})
        [dsn] = await inbox(alice.service, alice.login)
        assert b"Final-Recipient: rfc822; nobody@bob.localhost" in dsn
        assert b"ceo@bank.example" not in dsn and b"Subject: hello" in dsn
        await router.peer_acked("bob", {**payload, "mail_from": "victim@example.com"},
                                {"unknown": ["nobody@bob.localhost"]})
        assert len(await inbox(alice.service, alice.login)) == 1  # never to a third party
        assert alice.service.outbound.entries() == []


async def test_autoconfig_describes_the_endpoints(tmp_path: Path) -> None:
    async with running_twin(tmp_path, "alice") as alice:
        https = alice.port("https")
        async with httpx.AsyncClient(verify=False) as client:
            for path in ("/.well-known/autoconfig/mail/config-v1.1.xml",
                         "/mail/config-v1.1.xml"):
                r = await client.get(f"https://127.0.0.1:{https}{path}")
                assert r.status_code == 200 and "xml" in r.headers["content-type"]
                assert "<domain>alice.localhost</domain>" in r.text
                assert f"<port>{alice.port('submissions')}</port>" in r.text
                assert f"<port>{alice.port('submission')}</port>" in r.text
                assert "<hostname>127.0.0.1</hostname>" in r.text
                assert "%EMAILADDRESS%" in r.text


def test_cli_mail_commands(tmp_path: Path) -> None:
    data = tmp_path / "alice"
    twin_cli(data, "init", "--name", "alice", "--json")
    out = twin_cli(data, "mail", "users", "add", "bob@alice.localhost").stdout
    assert "bob@alice.localhost created" in out
    twin_cli(data, "mail", "aliases", "add", "info@alice.localhost", "alice@alice.localhost")
    assert "info@alice.localhost" in twin_cli(data, "mail", "aliases").stdout
    assert "new app password 'phone'" in twin_cli(data, "mail", "passwd", "--label",
                                                  "phone").stdout
    dkim = twin_cli(data, "mail", "dkim").stdout
    assert "twin._domainkey.alice.localhost. IN TXT ( \"v=DKIM1; k=rsa; p=" in dkim
    # a 2048-bit key's record split into DNS character-strings of at most 255 bytes
    strings = re.findall(r'"([^"]*)"', dkim.split("IN TXT", 1)[1])
    assert len(strings) >= 2 and all(len(s) <= 255 for s in strings)
    record = json.loads(twin_cli(data, "mail", "dkim", "--json").stdout)
    assert "".join(strings) == "".join(record["strings"]) == record["value"]
    assert oct((data / "dkim" / "rsa.key").stat().st_mode & 0o777) == "0o600"
    sent = twin_cli(data, "mail", "send", "--to", "info@alice.localhost", "--to",
                    "x@example.com", "--subject", "cron", input="report\n").stdout
    assert "sent: 1 local, 0 twin(s), 1 legacy" in sent
    assert "x@example.com" in twin_cli(data, "mail", "queue").stdout
    spoof = twin_cli(data, "mail", "send", "--from", "bob@alice.localhost", "--to",
                     "x@example.com", input="x", check=False)
    assert spoof.returncode == 2 and "not an address of" in spoof.stderr


async def test_twin_mail_retried_after_partial_failure_is_not_duplicated(tmp_path: Path) -> None:
    """The peer outbox retries a refused mail.deliver: users served the first time are skipped."""
    async with running_twin(tmp_path, "alice", {"mail.quota": "20000"}) as alice:
        carol = "carol@alice.localhost"
        alice.service.users.add(carol)
        await alice.service.mail.deliver(carol, b"Subject: filler\r\n\r\n" + b"x" * 15_000)
        bob, _ = twin_record("bob", "bob.localhost")
        payload = {"rcpt": [alice.login, carol], "mail_from": "bob@bob.localhost",
                   "message": b"From: bob@bob.localhost\r\nSubject: hi\r\n\r\n" + b"y" * 8000}
        with pytest.raises(Forbidden) as err:  # carol's mailbox is full
            await alice.service.router.receive_from_twin(bob, payload)
        assert err.value.code == "overquota"
        alice.service.mail.quota_bytes = 200_000  # carol made room; the peer retries
        await alice.service.router.receive_from_twin(bob, payload)
        for login in (alice.login, carol):
            copies = [m for m in await inbox(alice.service, login) if b"Subject: hi" in m]
            assert len(copies) == 1, f"{login} has {len(copies)} copies"


@pytest.mark.parametrize("value", [
    "a@b.c", "<a@b.c>", "Name <A@B.example>", '"Name, Jr." <a@b.c>',
    "=?utf-8?q?J=C3=B6rg?= <j@x.de>", "a@b.c, d@e.f", "Name <a@b.c> (comment)",
    '"quoted\\"x" <a@b.c>', "<@route:a@b.c>", "a.b@[1.2.3.4]", "undisclosed-recipients:;",
    "", "  spaced  <a@b.c>  ", "a..b@c.d", "bad <a@b", "J. Q. Public <jq+tag@ex-ample.org>",
])
def test_from_addresses_agrees_with_getaddresses(value: str) -> None:
    from email.utils import getaddresses

    message = f"From: {value}\r\nSender: s@x.y\r\nSubject: x\r\n\r\nbody\r\n".encode()
    expected = [a.lower() for _, a in getaddresses([value, "s@x.y"]) if a]
    assert from_addresses(message) == expected


POX = ('<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/'
       'exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>{}</EMailAddress>'
       '<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/'
       'responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>')
LAUGHS = ('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;'
          '&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><Autodiscover xmlns="'
          'http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request>'
          '<EMailAddress>&c;@x</EMailAddress></Request></Autodiscover>')


async def test_outlook_autodiscover_and_apple_profiles_describe_the_endpoints(
        tmp_path: Path) -> None:
    import plistlib
    import xml.etree.ElementTree as ET

    async with running_twin(tmp_path, "alice") as alice:
        base = f"https://127.0.0.1:{alice.port('https')}"
        async with httpx.AsyncClient(verify=False) as client:
            r = await client.post(f"{base}/autodiscover/autodiscover.xml",
                                  content=POX.format(alice.login))
            assert r.status_code == 200, r.text
            ns = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"
            protocols = {p.findtext(f"{ns}Type"): p for p in ET.fromstring(r.text).iter(
                f"{ns}Protocol")}
            assert protocols["IMAP"].findtext(f"{ns}Port") == str(alice.port("imaps"))
            assert protocols["SMTP"].findtext(f"{ns}Port") == str(alice.port("submissions"))
            assert protocols["IMAP"].findtext(f"{ns}LoginName") == alice.login
            assert protocols["SMTP"].findtext(f"{ns}SSL") == "on"
            # hostile bodies: entities, junk, too large: refused before anything is answered
            for body, status in ((LAUGHS, 400), ("<not xml", 400), ("x" * 20_000, 413)):
                r = await client.post(f"{base}/Autodiscover/Autodiscover.xml", content=body)
                assert r.status_code == status, (body[:30], r.status_code)

            r = await client.get(f"{base}/apple/twin.mobileconfig",
                                 params={"email": alice.login})
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/x-apple-aspen-config"
            [account] = plistlib.loads(r.content)["PayloadContent"]
            assert account["EmailAddress"] == alice.login
            assert account["IncomingMailServerPortNumber"] == alice.port("imaps")
            assert account["OutgoingMailServerPortNumber"] == alice.port("submissions")
            assert account["IncomingMailServerHostName"] == "127.0.0.1"
