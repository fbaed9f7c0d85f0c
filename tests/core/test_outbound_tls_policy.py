"""Outbound TLS policy: MTA-STS (RFC 8461) and DANE (RFC 7672), over real servers.

DNS is a real dnsmasq on loopback (``smtp.nameserver``); the policy host is a
real HTTPS server on loopback whose name dnsmasq resolves; MX hosts are
aiosmtpd servers with STARTTLS on 127.0.0.x, certificates from a test CA the
twin is told to trust (``smtp.outbound_ca_file``). Only the policy server's
port is not 443 (``MtaSts.https_port``, a test hook): binding 443 would clash
between test runs on one machine.

DANE: plain dnsmasq serves TLSA records unsigned, so no AD bit (the "no DANE"
case). For the DANE cases dnsmasq runs as a validating resolver (``--dnssec``)
in front of a zone signed by tests/signed_dns.py: the AD bit is dnsmasq's
verdict, and a wrong trust anchor makes the same answers bogus (SERVFAIL).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography.hazmat.primitives import serialization

from core.db import Database
from core.outbound import dane, mtasts
from core.outbound.dnsq import OutboundDns, Tlsa
from core.outbound.transport import verify_context
from core.tls import make_self_signed
from tests.protocols.smtp.helpers import running_twin
from tests.servers import DnsServer, free_port
from tests.testca import TestCA

DOMAIN = "example.test"
MX = "mx.example.test"
MX2 = "mx2.example.test"
ENFORCE = f"version: STSv1\r\nmode: enforce\r\nmx: {MX}\r\nmax_age: 86400\r\n"


# -- the outside world: a policy web server, MX hosts, DNS

class PolicyServer:
    """HTTPS on 127.0.0.1 serving /.well-known/mta-sts.txt as told; counts requests."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.body = ENFORCE.encode()
        self.ctype = "text/plain"
        self.status = 200
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                if self.path != "/.well-known/mta-sts.txt" or \
                        self.headers.get("Host") != f"mta-sts.{DOMAIN}":
                    self.send_error(404)
                    return
                self.send_response(outer.status)
                self.send_header("Content-Type", outer.ctype)
                if outer.status in (301, 302):
                    self.send_header("Location", "https://elsewhere.test/policy")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the tests read ``requests``, not http.server's stderr."""

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Sink:
    """An MX host: records each message and whether it came over TLS."""

    def __init__(self) -> None:
        self.received: list[tuple[bool, Envelope]] = []
        self.arrived = asyncio.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert server.transport is not None
        tls = server.transport.get_extra_info("ssl_object") is not None
        self.received.append((tls, envelope))
        self.arrived.set()
        return "250 OK"


async def start_mx(address: str, port: int, cert: Path | None, key: Path | None
                   ) -> tuple[asyncio.Server, Sink]:
    sink = Sink()
    ctx = None
    if cert is not None and key is not None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(sink, tls_context=ctx), address, port)
    return server, sink


def records(policy_id: str = "1", *, mx: tuple[str, ...] = (MX,), extra: tuple[str, ...] = ()
            ) -> list[str]:
    opts = [f"--local=/{DOMAIN}/", f"--host-record=mta-sts.{DOMAIN},127.0.0.1",
            f"--host-record={MX},127.0.0.1", f"--host-record={MX2},127.0.0.2"]
    opts += [f"--mx-host={DOMAIN},{name},{10 * (i + 1)}" for i, name in enumerate(mx)]
    if policy_id:
        opts.append(f"--txt-record=_mta-sts.{DOMAIN},v=STSv1; id={policy_id}")
    return opts + list(extra)


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA.create(tmp_path / "ca")


@pytest.fixture
def policy_server(tmp_path: Path, ca: TestCA) -> Iterator[PolicyServer]:
    cert, key, _ = ca.issue(tmp_path / "web", [f"mta-sts.{DOMAIN}"])
    server = PolicyServer(cert, key)
    yield server
    server.stop()


@contextlib.asynccontextmanager
async def sender(tmp_path: Path, nameserver: str, mx_port: int, ca: TestCA,
                 policy: PolicyServer) -> AsyncIterator[Any]:
    sets = {"smtp.smarthost": "", "smtp.mx_port": str(mx_port), "smtp.nameserver": nameserver,
            "smtp.outbound_ca_file": str(ca.path), "smtp.retry_schedule": "[3600]"}
    async with running_twin(tmp_path, "alice", sets) as alice:
        queue = alice.service.outbound
        queue.resolve_mx = queue.dns.mx  # the helpers' twin reaches no DNS; this one does
        queue.mtasts.https_port = policy.port
        yield alice


async def send_one(alice: Any) -> None:
    message = b"From: alice@alice.localhost\r\nSubject: policy\r\n\r\nbody\r\n"
    await alice.service.router.route(alice.login, [f"bob@{DOMAIN}"], message)


async def deferred(alice: Any) -> Any:
    """The queue entry once its first attempt failed."""
    for _ in range(150):
        entries = alice.service.outbound.entries()
        if entries and entries[0].attempts:
            return entries[0]
        await asyncio.sleep(0.1)
    raise AssertionError("the queue never tried")


async def logged(caplog: pytest.LogCaptureFixture, *parts: str) -> None:
    """Wait for a log line containing every one of ``parts`` (the queue logs after the MX
    host answered, so a test may see the message arrive first)."""
    for _ in range(100):
        if any(all(p in r.getMessage() for p in parts) for r in caplog.records):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no log line with {parts}: {[r.getMessage() for r in caplog.records]}")


# -- MTA-STS through the queue

async def test_enforce_with_a_valid_certificate_delivers_over_tls(
        tmp_path: Path, dns_server: DnsServer, ca: TestCA, policy_server: PolicyServer,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "twin.outbound")
    cert, key, _ = ca.issue(tmp_path / "mx", [MX])
    port = free_port()
    server, sink = await start_mx("127.0.0.1", port, cert, key)
    try:
        async with sender(tmp_path, dns_server.serve(records()), port, ca,
                          policy_server) as alice:
            await send_one(alice)
            await asyncio.wait_for(sink.arrived.wait(), 20)
            [(tls, env)] = sink.received
            assert tls and env.rcpt_tos == [f"bob@{DOMAIN}"]
            assert policy_server.requests == 1
            await logged(caplog, f"delivery to {DOMAIN} via {MX}: policy mta-sts enforce, "
                         "delivered")
    finally:
        server.close()


async def test_enforce_skips_an_mx_the_policy_does_not_name_and_keeps_the_message(
        tmp_path: Path, dns_server: DnsServer, ca: TestCA, policy_server: PolicyServer,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "twin.outbound")
    cert, key, _ = ca.issue(tmp_path / "mx", [MX2])  # a valid certificate, but for MX2
    port = free_port()
    server, sink = await start_mx("127.0.0.2", port, cert, key)
    try:
        async with sender(tmp_path, dns_server.serve(records(mx=(MX2,))), port, ca,
                          policy_server) as alice:
            await send_one(alice)
            entry = await deferred(alice)
            assert f"{MX2} is not among the MTA-STS mx of {DOMAIN}" in entry.last_error
            assert sink.received == []
            await logged(caplog, "not tried", "policy mta-sts enforce")
    finally:
        server.close()


@pytest.mark.parametrize("bad", ["self-signed", "wrong-name", "no-starttls"])
async def test_enforce_refuses_a_bad_certificate_or_cleartext(
        tmp_path: Path, dns_server: DnsServer, ca: TestCA, policy_server: PolicyServer,
        bad: str) -> None:
    if bad == "self-signed":
        cert, key = make_self_signed(tmp_path / "mx", [MX])
    elif bad == "wrong-name":
        cert, key, _ = ca.issue(tmp_path / "mx", ["other.example.test"])
    port = free_port()
    server, sink = await start_mx("127.0.0.1", port, *((None, None) if bad == "no-starttls"
                                                        else (cert, key)))
    try:
        async with sender(tmp_path, dns_server.serve(records()), port, ca,
                          policy_server) as alice:
            await send_one(alice)
            entry = await deferred(alice)
            assert sink.received == []
            expected = "STARTTLS" if bad == "no-starttls" else "certificate not valid"
            assert expected in entry.last_error, entry.last_error
            assert alice.service.outbound.entries()  # still queued: a temporary failure
    finally:
        server.close()


async def test_enforce_failure_bounces_after_the_queue_lifetime_with_the_reason(
        tmp_path: Path, dns_server: DnsServer, ca: TestCA, policy_server: PolicyServer
        ) -> None:
    from tests.protocols.smtp.helpers import inbox

    cert, key = make_self_signed(tmp_path / "mx", [MX])
    port = free_port()
    server, sink = await start_mx("127.0.0.1", port, cert, key)
    nameserver = dns_server.serve(records())
    sets = {"smtp.smarthost": "", "smtp.mx_port": str(port), "smtp.nameserver": nameserver,
            "smtp.outbound_ca_file": str(ca.path), "smtp.retry_schedule": "[0.3]",
            "smtp.give_up_after": "1"}
    try:
        async with running_twin(tmp_path, "alice", sets) as alice:
            alice.service.outbound.resolve_mx = alice.service.outbound.dns.mx
            alice.service.outbound.mtasts.https_port = policy_server.port
            await send_one(alice)
            for _ in range(100):
                bounces = await inbox(alice.service, alice.login)
                if bounces:
                    break
                await asyncio.sleep(0.1)
            [dsn] = bounces
            assert b"Status: 4.4.7" in dsn and b"certificate not valid for mx.example.test" in dsn
            assert sink.received == []
    finally:
        server.close()


async def test_testing_mode_delivers_despite_a_bad_certificate_and_logs_it(
        tmp_path: Path, dns_server: DnsServer, ca: TestCA, policy_server: PolicyServer,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "twin.outbound")
    policy_server.body = ENFORCE.replace("enforce", "testing").encode()
    cert, key = make_self_signed(tmp_path / "mx", [MX])
    port = free_port()
    server, sink = await start_mx("127.0.0.1", port, cert, key)
    try:
        async with sender(tmp_path, dns_server.serve(records()), port, ca,
                          policy_server) as alice:
            await send_one(alice)
            await asyncio.wait_for(sink.arrived.wait(), 20)
            [(tls, _)] = sink.received
            assert tls  # opportunistic STARTTLS after the verified attempt failed
            await logged(caplog, f"MTA-STS testing: enforce would refuse {MX}: certificate "
                         "not valid")
            await logged(caplog, f"via {MX}: policy mta-sts testing, delivered")
    finally:
        server.close()


async def test_without_a_policy_delivery_stays_opportunistic(
        tmp_path: Path, dns_server: DnsServer, ca: TestCA, policy_server: PolicyServer,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "twin.outbound")
    cert, key = make_self_signed(tmp_path / "mx", [MX])
    port = free_port()
    server, sink = await start_mx("127.0.0.1", port, cert, key)
    try:
        async with sender(tmp_path, dns_server.serve(records(policy_id="")), port, ca,
                          policy_server) as alice:
            await send_one(alice)
            await asyncio.wait_for(sink.arrived.wait(), 20)
            assert policy_server.requests == 0
            await logged(caplog, f"via {MX}: policy opportunistic, delivered")
    finally:
        server.close()


# -- DANE: the AD bit

async def test_tlsa_records_without_the_ad_bit_are_not_used(
        tmp_path: Path, dns_server: DnsServer, ca: TestCA, policy_server: PolicyServer,
        caplog: pytest.LogCaptureFixture) -> None:
    """dnsmasq serves TLSA records it cannot sign: no AD bit, so no DANE. A DANE-EE record
    that matches nothing would otherwise keep the message queued."""
    caplog.set_level(logging.INFO, "twin.outbound")
    cert, key = make_self_signed(tmp_path / "mx", [MX])
    port = free_port()
    server, sink = await start_mx("127.0.0.1", port, cert, key)
    tlsa = f"--dns-rr=_25._tcp.{MX},52,030101{'ab' * 32}"
    try:
        nameserver = dns_server.serve(records(policy_id="", extra=(tlsa,)))
        dns = OutboundDns(5.0, nameserver)
        answer = await dns.tlsa(f"_25._tcp.{MX}")
        assert answer.records == (Tlsa(3, 1, 1, b"\xab" * 32),)  # the lookup is real...
        assert not answer.authenticated  # ...and dnsmasq set no AD bit
        async with sender(tmp_path, nameserver, port, ca, policy_server) as alice:
            await send_one(alice)
            await asyncio.wait_for(sink.arrived.wait(), 20)
            await logged(caplog, "not DNSSEC-authenticated (no AD bit): DANE not used")
            await logged(caplog, f"via {MX}: policy opportunistic, delivered")
    finally:
        server.close()


def test_an_ad_bit_from_a_remote_resolver_is_not_trusted() -> None:
    assert OutboundDns(1.0, "127.0.0.1:5353").ad_trusted
    assert OutboundDns(1.0, "[::1]").ad_trusted
    assert not OutboundDns(1.0, "192.0.2.53").ad_trusted


# -- MTA-STS: the policy source on its own (cache, refresh, hostile policies)

@contextlib.asynccontextmanager
async def policies(tmp_path: Path, nameserver: str, ca: TestCA, server: PolicyServer
                   ) -> AsyncIterator[mtasts.MtaSts]:
    db = Database(tmp_path / "sts.db")
    source = mtasts.MtaSts(db, OutboundDns(5.0, nameserver), verify_context(str(ca.path)))
    source.https_port = server.port
    try:
        yield source
    finally:
        db.close()


async def test_a_cached_policy_outlives_its_server_and_a_new_id_is_fetched(
        tmp_path: Path, dns_server: DnsServer, ca: TestCA, policy_server: PolicyServer
        ) -> None:
    # (each serve() starts dnsmasq on a new port, so the source gets a new resolver)
    async with policies(tmp_path, dns_server.serve(records("1")), ca, policy_server) as sts:
        first = await sts.policy(DOMAIN)
        assert first is not None and first.mode == "enforce" and first.mx == (MX,)
        policy_server.body = ENFORCE.replace(MX, "*.example.test").encode()
        again = await sts.policy(DOMAIN)  # same id: the cached policy, no request
        assert again == first and policy_server.requests == 1
        sts.dns = OutboundDns(5.0, dns_server.serve(records("2")))  # a new id: fetched again
        newer = await sts.policy(DOMAIN)
        assert newer is not None and newer.mx == ("*.example.test",) and newer.id == "2"
        assert policy_server.requests == 2
        policy_server.stop()  # the policy host goes down; the id changes once more
        sts.dns = OutboundDns(5.0, dns_server.serve(records("3")))
        assert await sts.policy(DOMAIN) == newer  # §5.1: the unexpired cached one applies
        # the TXT record goes (removed, or stripped on the path): the cache still applies
        sts.dns = OutboundDns(5.0, dns_server.serve(records("")))
        assert await sts.policy(DOMAIN) == newer
    async with policies(tmp_path, dns_server.serve(records("2")), ca, policy_server) as sts:
        assert await sts.policy(DOMAIN) == newer  # persisted in the database


@pytest.mark.parametrize("hostile", ["too-big", "bad-syntax", "no-mx", "html", "redirect",
                                     "bad-age", "untrusted-cert"])
async def test_a_hostile_policy_is_refused_without_harm(
        tmp_path: Path, dns_server: DnsServer, ca: TestCA, hostile: str) -> None:
    if hostile == "untrusted-cert":
        cert, key = make_self_signed(tmp_path / "web", [f"mta-sts.{DOMAIN}"])
    else:
        cert, key, _ = ca.issue(tmp_path / "web", [f"mta-sts.{DOMAIN}"])
    server = PolicyServer(cert, key)
    server.body = {
        "too-big": (ENFORCE + "x: " + "y" * mtasts.MAX_POLICY + "\r\n").encode(),
        "bad-syntax": b"version: STSv1\r\nmode: enforce\r\nthis line has no colon\r\n",
        "no-mx": b"version: STSv1\r\nmode: enforce\r\nmax_age: 100\r\n",
        "bad-age": ENFORCE.replace("86400", "-5").encode(),
    }.get(hostile, ENFORCE.encode())
    server.ctype = "text/html" if hostile == "html" else "text/plain"
    server.status = 301 if hostile == "redirect" else 200
    try:
        async with policies(tmp_path, dns_server.serve(records()), ca, server) as sts:
            assert await sts.policy(DOMAIN) is None
            assert server.requests == (0 if hostile == "untrusted-cert" else 1)
    finally:
        server.stop()


async def test_ambiguous_or_oversized_txt_records_mean_no_policy_and_mode_none_ends_one(
        tmp_path: Path, dns_server: DnsServer, ca: TestCA, policy_server: PolicyServer
        ) -> None:
    two = f"--txt-record=_mta-sts.{DOMAIN},v=STSv1; id=2"  # §3.1: not exactly one record
    huge = f"--txt-record=_mta-sts.{DOMAIN},v=STSv1; id=3;," + ",".join(["x" * 250] * 10)
    async with policies(tmp_path, dns_server.serve(records("1", extra=(two,))), ca,
                        policy_server) as sts:
        assert await sts.policy(DOMAIN) is None
        sts.dns = OutboundDns(5.0, dns_server.serve(records("", extra=(huge,))))
        assert await sts.policy(DOMAIN) is None
        assert policy_server.requests == 0
        sts.dns = OutboundDns(5.0, dns_server.serve(records("4")))
        assert (await sts.policy(DOMAIN)) is not None
        policy_server.body = ENFORCE.replace("enforce", "none").encode()
        sts.dns = OutboundDns(5.0, dns_server.serve(records("5")))
        assert await sts.policy(DOMAIN) is None  # §3.2: none replaces the cached enforce
        assert policy_server.requests == 2


def test_policy_parsing_clamps_max_age_and_matches_mx_patterns() -> None:
    text = "version: STSv1\nmode: testing\nmx: *.Example.test\nmx: mx.other.test\n" \
           "max_age: 9999999999\nfuture: ignored\n"
    policy = mtasts.parse_policy(DOMAIN, "x", text, 0.0)
    assert policy.max_age == mtasts.MAX_AGE and policy.mode == "testing"
    assert policy.allows("mail.example.test") and policy.allows("MX.OTHER.TEST.")
    assert not policy.allows("example.test") and not policy.allows("a.b.example.test")
    assert not policy.allows("mxother.test")
    for bad in [text.replace("STSv1", "STSv2"), text.replace("testing", "strict"),
                text.replace("9999999999", "99999999999"), text.replace("*.Ex", "**.Ex"),
                "version: STSv1\nmode: enforce\nmax_age: 1\n" + "mx: a.test\n" * 65]:
        with pytest.raises(mtasts.PolicyError):
            mtasts.parse_policy(DOMAIN, "x", bad, 0.0)
    assert mtasts.parse_txt(["v=STSv1; id=20240101T0000"]) == "20240101T0000"
    assert mtasts.parse_txt(["v=spf1 -all", "v=STSv1; id=abc;"]) == "abc"
    assert mtasts.parse_txt(["v=STSv1; id=a", "v=STSv1; id=b"]) is None  # §3.1: not one
    assert mtasts.parse_txt(["v=STSv1; id=not-alnum"]) is None
    assert mtasts.parse_txt(["v=STSv1; id=" + "a" * 33]) is None


# -- DANE matching against the certificates a real STARTTLS server sends

async def peer_chain_of(cert: Path, key: Path, host: str) -> list[bytes]:
    """Connect to a real aiosmtpd with STARTTLS and return the chain it presented."""
    port = free_port()
    server, _ = await start_mx("127.0.0.1", port, cert, key)
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10)
    try:
        await client.connect()
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        await client.starttls(server_hostname=host, tls_context=ctx)
        return dane.peer_chain(client.get_transport_info("ssl_object"))
    finally:
        client.close()
        server.close()


def spki(der: bytes) -> bytes:
    from cryptography import x509

    return x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


async def test_dane_matching_on_real_certificates(tmp_path: Path, ca: TestCA) -> None:
    cert, key, _ = ca.issue(tmp_path / "mx", [MX])
    chain = await peer_chain_of(cert, key, MX)
    assert len(chain) == 2  # the leaf and the CA (DANE-TA needs the anchor in the chain)
    leaf, anchor = chain
    ee = Tlsa(3, 1, 1, hashlib.sha256(spki(leaf)).digest())
    assert dane.check([ee], chain, MX) is None
    assert dane.check([ee], chain, "any.name.at.all") is None  # §3.1.1: no name check
    assert dane.check([Tlsa(3, 0, 2, hashlib.sha512(leaf).digest())], chain, MX) is None
    assert dane.check([Tlsa(3, 0, 0, leaf)], chain, MX) is None
    wrong = Tlsa(3, 1, 1, hashlib.sha256(spki(anchor)).digest())  # the CA's key as EE
    assert "matches" in (dane.check([wrong], chain, MX) or "")
    ta = Tlsa(2, 0, 1, hashlib.sha256(anchor).digest())
    assert dane.check([ta], chain, MX) is None
    assert "does not chain" in (dane.check([ta], chain, "other.example.test") or "")
    other_ca = TestCA.create(tmp_path / "other-ca", "Someone else")
    foreign = Tlsa(2, 1, 1, hashlib.sha256(other_ca.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).digest())
    assert dane.check([foreign], chain, MX) is not None
    # PKIX-TA(0)/PKIX-EE(1) are unusable for SMTP (§3.1.3), as are unknown parameters
    assert dane.check([Tlsa(1, 1, 1, ee.data), Tlsa(3, 2, 1, ee.data),
                       Tlsa(3, 1, 9, ee.data)], chain, MX) == "no usable TLSA records"
    assert dane.check([Tlsa(3, 1, 1, ee.data)] * 40, chain, MX) is None  # bounded, still fine


async def test_dane_ee_accepts_a_self_signed_certificate_with_any_name(tmp_path: Path) -> None:
    cert, key = make_self_signed(tmp_path / "mx", ["not-the-mx.test"])
    chain = await peer_chain_of(cert, key, MX)
    [leaf] = chain
    assert dane.check([Tlsa(3, 1, 1, hashlib.sha256(spki(leaf)).digest())], chain, MX) is None
    assert dane.check([Tlsa(2, 0, 1, hashlib.sha256(leaf).digest())], chain, MX) is not None


# -- DANE through the queue, with a real AD bit: dnsmasq validating a signed zone

def tlsa_ee(cert: Path) -> str:
    """A DANE-EE(3) SPKI(1) SHA-256(1) record for the leaf in ``cert``."""
    from cryptography import x509

    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    digest = hashlib.sha256(leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    return f"3 1 1 {digest.hexdigest()}"


def signed_records(tlsa: str, *, sts: bool = False) -> str:
    lines = [f"{DOMAIN}. MX 10 {MX}.", f"{MX}. A 127.0.0.1", f"_25._tcp.{MX}. TLSA {tlsa}"]
    if sts:
        lines += [f'_mta-sts.{DOMAIN}. TXT "v=STSv1; id=1"', f"mta-sts.{DOMAIN}. A 127.0.0.1"]
    return "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def validating_dns(dns_server: DnsServer, records: str, *, bogus: bool = False
                         ) -> AsyncIterator[str]:
    """dnsmasq validating a signed root zone holding ``records``; with ``bogus`` it trusts
    another key, so every answer fails validation (SERVFAIL)."""
    from tests.signed_dns import SignedZone

    zone = SignedZone(".", records)
    zone.start()
    options = zone.resolver_options()
    if bogus:
        options[1] = f"--trust-anchor={SignedZone('.', records).trust_anchor()}"
    try:
        yield dns_server.serve(options)
    finally:
        dns_server.stop()
        zone.stop()


async def test_the_ad_bit_comes_from_dnsmasq_validation(dns_server: DnsServer) -> None:
    name = f"_25._tcp.{MX}"
    async with validating_dns(dns_server, signed_records("3 1 1 " + "ab" * 32)) as ns:
        answer = await OutboundDns(5.0, ns).tlsa(name)
        assert answer.authenticated and answer.records == (Tlsa(3, 1, 1, b"\xab" * 32),)
        assert not (await OutboundDns(5.0, ns).tlsa(f"_25._tcp.nothing.{DOMAIN}")).records
    async with validating_dns(dns_server, signed_records("3 1 1 " + "ab" * 32),
                              bogus=True) as ns:
        from core.outbound.dnsq import DnsTemporary

        with pytest.raises(DnsTemporary):  # bogus: SERVFAIL, not an unsigned answer
            await OutboundDns(5.0, ns).tlsa(name)


@pytest.mark.parametrize("case", ["ee-match", "ee-mismatch", "ta-match", "ta-wrong-name",
                                  "no-starttls", "bogus", "dane-over-sts"])
async def test_dane_decides_delivery(tmp_path: Path, dns_server: DnsServer, ca: TestCA,
                                     policy_server: PolicyServer, case: str,
                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "twin.outbound")
    if case.startswith("ta"):  # a CA-issued chain; the record names the CA
        names = [MX] if case == "ta-match" else ["other.example.test"]
        cert, key, _ = ca.issue(tmp_path / "mx", names)
        ca_der = ca.cert.public_bytes(serialization.Encoding.DER)
        tlsa = f"2 0 1 {hashlib.sha256(ca_der).hexdigest()}"
    else:  # self-signed, for a name that is not the MX: DANE-EE does not look at names
        cert, key = make_self_signed(tmp_path / "mx", ["whatever.test"])
        tlsa = tlsa_ee(cert)
        if case == "ee-mismatch":
            tlsa = "3 1 1 " + "cd" * 32
    port = free_port()
    server, sink = await start_mx("127.0.0.1", port, *((None, None) if case == "no-starttls"
                                                        else (cert, key)))
    records = signed_records(tlsa, sts=case == "dane-over-sts")
    try:
        async with validating_dns(dns_server, records, bogus=case == "bogus") as ns, \
                sender(tmp_path, ns, port, ca, policy_server) as alice:
            await send_one(alice)
            if case in ("ee-match", "ta-match", "dane-over-sts"):
                await asyncio.wait_for(sink.arrived.wait(), 20)
                [(tls, _)] = sink.received
                assert tls
                await logged(caplog, f"via {MX}: policy dane, delivered")
                if case == "dane-over-sts":  # the STS policy (CA-valid cert) was not applied
                    assert policy_server.requests == 1
                return
            if case == "bogus":  # a failed MX lookup: nothing to try, stays queued
                entry = await deferred(alice)
                assert "DNS lookup of example.test failed" in entry.last_error
            else:
                entry = await deferred(alice)
                expected = {"ee-mismatch": "DANE: no certificate of the server matches",
                            "ta-wrong-name": "DANE-TA: the certificate does not chain",
                            "no-starttls": "does not offer STARTTLS"}[case]
                assert expected in entry.last_error, entry.last_error
            assert sink.received == []
            assert alice.service.outbound.entries()
    finally:
        server.close()
