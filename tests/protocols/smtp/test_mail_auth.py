"""Inbound mail authentication against a real DNS server (issue #21 item 5).

dnsmasq on loopback serves the SPF, DKIM key and DMARC records of a few
sender domains; keys are made here and messages signed with dkimpy. The twin
runs in process with ``smtp.nameserver`` pointing at dnsmasq and
``smtp.check_loopback`` on, so that mail from this test's 127.0.0.1 gets
every check and every policy a stranger's would: SPF against the records of
the MAIL FROM domain, DKIM and ARC signatures against their published keys,
DMARC policies applied (p=reject refused at DATA, p=quarantine into Junk),
and mail forging the twin's own domain refused.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.protocols.smtp.helpers import Twin, inbox, running_twin
from tests.servers import DnsServer

SELECTOR = b"s2026"
ZONES = ["example.org", "example.net", "example.com", "lists.example.net", "alice.localhost"]


@dataclass
class Key:
    pem: bytes
    record: list[str]  # TXT strings of the key record (each under 255 bytes)


def make_key() -> Key:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = base64.b64encode(private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    text = f"v=DKIM1; k=rsa; p={public}"
    return Key(pem, [text[i:i + 200] for i in range(0, len(text), 200)])


def txt(name: str, *strings: str) -> str:
    return "--txt-record=" + ",".join([name, *strings])  # dnsmasq keeps quotes: none


@dataclass
class World:
    twin: Twin
    keys: dict[str, Key]


@pytest.fixture
async def world(tmp_path: Path, dns_server: DnsServer) -> AsyncIterator[World]:
    keys = {d: make_key() for d in ("example.org", "example.net", "lists.example.net")}
    records = [f"--local=/{zone}/" for zone in ZONES]
    records += [txt(f"{SELECTOR.decode()}._domainkey.{d}", *k.record) for d, k in keys.items()]
    records += [
        # example.org: SPF allows this test's 127.0.0.1, DMARC rejects
        txt("example.org", "v=spf1 ip4:127.0.0.1 -all"),
        txt("_dmarc.example.org", "v=DMARC1; p=reject; adkim=r; aspf=r"),
        # example.com: quarantine, and an SPF record 127.0.0.1 is not in
        txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all"),
        txt("_dmarc.example.com", "v=DMARC1; p=quarantine"),
        # example.net: no DMARC; softfail and fail senders under it
        txt("soft.example.net", "v=spf1 ip4:192.0.2.1 ~all"),
        txt("hard.example.net", "v=spf1 ip4:192.0.2.1 -all"),
        txt("example.net", "v=spf1 ip4:127.0.0.1 -all"),
        txt("lists.example.net", "v=spf1 ip4:127.0.0.1 -all"),
        # the twin's own domain publishes what `twin dns` prints: SPF by MX, DMARC reject
        txt("alice.localhost", "v=spf1 mx -all"),
        txt("_dmarc.alice.localhost", "v=DMARC1; p=reject"),
    ]
    nameserver = dns_server.serve(records)
    sets = {"smtp.verify_dns": "true", "smtp.nameserver": nameserver,
            "smtp.check_loopback": "true", "smtp.dns_timeout": "2"}
    async with running_twin(tmp_path, "alice", sets) as twin:
        yield World(twin, keys)


def message(sender: str, to: str, subject: str, extra: dict[str, str] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    for k, v in (extra or {}).items():
        msg[k] = v
    msg.set_content("hello\n")
    return msg.as_bytes().replace(b"\n", b"\r\n")


def signed(world: World, domain: str, raw: bytes) -> bytes:
    return dkim.sign(raw, SELECTOR, domain.encode(), world.keys[domain].pem,
                     include_headers=[b"from", b"to", b"subject"]) + raw


async def send(world: World, mail_from: str, data: bytes, helo: str = "mx.example.org") -> str:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=world.twin.port("smtp"),
                               start_tls=False, local_hostname=helo) as client:
        _, reply = await client.sendmail(mail_from, [world.twin.login], data)
        return reply


async def refused(world: World, mail_from: str, data: bytes) -> aiosmtplib.SMTPDataError:
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(world, mail_from, data)
    return err.value


def results(stored: bytes) -> str:
    """The twin's Authentication-Results, unfolded."""
    head = stored.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    found = re.search(r"^Authentication-Results: alice\.localhost;(.*?)\r\n(?![ \t])", head,
                      re.M | re.S)
    assert found, head
    return re.sub(r"\r\n[ \t]+", " ", found[1]).strip()


async def stored(world: World, subject: str, mailbox: str = "INBOX") -> bytes:
    [copy] = [m for m in await inbox(world.twin.service, world.twin.login, mailbox)
              if f"Subject: {subject}".encode() in m]
    return copy


async def test_aligned_dkim_passes_dkim_and_dmarc(world: World) -> None:
    raw = message("news@example.org", world.twin.login, "aligned")
    await send(world, "bounces@example.org", signed(world, "example.org", raw))
    ar = results(await stored(world, "aligned"))
    assert "dkim=pass header.d=example.org header.s=s2026;" in ar
    assert "spf=pass smtp.mailfrom=bounces@example.org;" in ar
    assert "dmarc=pass" in ar and "header.from=example.org" in ar
    assert ar.endswith("arc=none")


async def test_misaligned_signature_under_p_reject_is_refused(world: World) -> None:
    # signed (validly) by example.net, sent from example.net: nothing aligns with example.org
    raw = message("ceo@example.org", world.twin.login, "misaligned")
    err = await refused(world, "x@example.net", signed(world, "example.net", raw))
    assert err.code == 550 and "5.7.1" in err.message
    assert "DMARC policy of example.org" in err.message and "p=reject" in err.message
    assert await inbox(world.twin.service, world.twin.login) == []


async def test_a_tampered_aligned_signature_is_refused_too(world: World) -> None:
    raw = signed(world, "example.org", message("news@example.org", world.twin.login, "orig"))
    # the MAIL FROM domain is not example.org's, so SPF cannot rescue it either
    err = await refused(world, "x@example.net", raw.replace(b"Subject: orig", b"Subject: new"))
    assert err.code == 550 and "example.org" in err.message


async def test_spf_pass_softfail_fail_in_authentication_results(world: World) -> None:
    for sender, subject in [("a@example.net", "spf-pass"), ("a@soft.example.net", "spf-soft"),
                            ("a@hard.example.net", "spf-fail")]:
        await send(world, sender, message(sender, world.twin.login, subject))
    assert "spf=pass smtp.mailfrom=a@example.net;" in results(await stored(world, "spf-pass"))
    soft = results(await stored(world, "spf-soft"))
    assert re.search(r"spf=softfail (\([^)]*\) )?smtp\.mailfrom=a@soft\.example\.net;", soft)
    hard = results(await stored(world, "spf-fail"))
    assert re.search(r"spf=fail (\([^)]*\) )?smtp\.mailfrom=a@hard\.example\.net;", hard)
    assert "dmarc=none" in hard  # example.net publishes no DMARC: delivered as is


async def test_p_quarantine_files_into_junk(world: World) -> None:
    await send(world, "promo@example.com", message("promo@example.com", world.twin.login,
                                                   "suspicious"))
    junk = await stored(world, "suspicious", "Junk")
    assert "dmarc=fail header.from=example.com policy.dmarc=quarantine" in results(junk)
    assert await inbox(world.twin.service, world.twin.login) == []


async def test_quarantine_recreates_a_deleted_junk_mailbox(world: World) -> None:
    mail = world.twin.service.mail
    assert "Junk" in [mb.name for mb in await mail.mailboxes(world.twin.login)]
    await mail.delete_mailbox(world.twin.login, "Junk")
    assert "Junk" not in [mb.name for mb in await mail.mailboxes(world.twin.login)]
    await send(world, "promo@example.com", message("promo@example.com", world.twin.login,
                                                   "again"))
    junk = await mail.mailbox(world.twin.login, "Junk")
    assert junk.special == "\\Junk"
    assert await stored(world, "again", "Junk")


async def test_forged_own_domain_from_outside_is_refused(world: World) -> None:
    owner = world.twin.login
    assert owner.endswith("@alice.localhost")
    err = await refused(world, "boss@alice.localhost", message(owner, owner, "forged"))
    assert err.code == 550 and "5.7.1" in err.message and "own domain" in err.message
    # also with an honest-looking envelope from elsewhere and a valid foreign signature
    raw = signed(world, "example.net", message(owner, owner, "forged 2"))
    err = await refused(world, "x@example.net", raw)
    assert err.code == 550 and "alice.localhost" in err.message
    assert await inbox(world.twin.service, owner) == []


async def test_fake_authentication_results_under_our_name_are_removed(world: World) -> None:
    raw = message("a@example.net", world.twin.login, "fake ar", extra={
        "Authentication-Results": "alice.localhost; dkim=pass header.d=paypal.com"})
    raw = b"Authentication-Results: elsewhere.example; spf=pass\r\n" + raw
    await send(world, "a@example.net", raw)
    copy = await stored(world, "fake ar")
    assert b"paypal" not in copy
    assert b"Authentication-Results: elsewhere.example; spf=pass\r\n" in copy  # not ours: kept
    assert copy.count(b"Authentication-Results: alice.localhost;") == 1


async def test_arc_chain_is_verified_and_kept_byte_exact(world: World) -> None:
    # example.net's signed mail goes through a list that rewrites the Subject (so the
    # author's DKIM breaks) and seals what it saw with ARC before passing it on.
    # (example.net has no DMARC policy: an ARC pass does not override one, see README)
    original = signed(world, "example.net", message("news@example.net", world.twin.login,
                                                    "weekly"))
    relayed = original.replace(b"Subject: weekly", b"Subject: [list] weekly")
    relayed = (b"Authentication-Results: lists.example.net; dkim=pass header.d=example.net;"
               b" spf=pass smtp.mailfrom=news@example.net\r\n" + relayed)
    seal = b"".join(dkim.arc_sign(relayed, SELECTOR, b"lists.example.net",
                                  world.keys["lists.example.net"].pem, b"lists.example.net",
                                  include_headers=[b"from", b"to", b"subject"]))
    assert seal.count(b"ARC-") >= 3
    sent = seal + relayed
    await send(world, "bounce@lists.example.net", sent, helo="lists.example.net")
    copy = await stored(world, "[list] weekly")
    ar = results(copy)
    assert "arc=pass" in ar and "dkim=fail header.d=example.net" in ar
    assert seal in copy  # the ARC set as sealed, byte for byte, in its place
    assert copy.endswith(sent)


async def test_a_broken_arc_chain_fails(world: World) -> None:
    raw = signed(world, "example.org", message("news@example.org", world.twin.login, "arcx"))
    raw = b"Authentication-Results: lists.example.net; dkim=pass\r\n" + raw
    seal = b"".join(dkim.arc_sign(raw, SELECTOR, b"lists.example.net",
                                  world.keys["lists.example.net"].pem, b"lists.example.net",
                                  include_headers=[b"from", b"subject"]))
    tampered = (seal + raw).replace(b"Subject: arcx", b"Subject: arcy")
    await send(world, "news@example.org", tampered)
    assert "arc=fail" in results(await stored(world, "arcy"))


HOSTILE = [
    b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=s2026; h=from; bh=\x00==; b=;;;\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=" + b"a." * 130 + b"org; s=s; h=from; bh=x; b=x\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=..; h=from; bh=AA==; b=AA==\r\n",
    b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=lists.example.net; s=s2026; t=1; b=\xff\r\n"
    b"ARC-Message-Signature: i=1; a=rsa-sha256; d=x; s=y; h=from; bh=; b=\r\n"
    b"ARC-Authentication-Results: i=1; x\r\n",
    b"ARC-Seal: i=99999999999999999999; cv=pass; d=x; s=y; b=AA==\r\n",
    b"ARC-Seal: i=2; cv=pass; d=x; s=y; b=AA==\r\nARC-Seal: i=2; cv=fail; d=x; s=y; b=AA==\r\n",
]


@pytest.mark.parametrize("bad", HOSTILE, ids=range(len(HOSTILE)))
async def test_hostile_signatures_get_a_verdict_not_a_crash(world: World, bad: bytes) -> None:
    raw = bad + message("a@example.net", world.twin.login, "hostile")
    reply = await send(world, "a@example.net", raw)
    assert reply.startswith("2.0.0 OK")
    ar = results(await stored(world, "hostile"))
    if bad.startswith(b"DKIM"):
        assert re.search(r"dkim=(permerror|temperror|fail)", ar), ar
    else:
        assert "arc=fail" in ar, ar
    assert "spf=pass" in ar  # the rest was still checked
