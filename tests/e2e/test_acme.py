"""ACME against a real CA: Pebble (Let's Encrypt's test server) on loopback,
resolving the twin's name through a real DNS server and validating HTTP-01
on the twin's own listener (#21 item 1).

The twin starts with its self-signed certificate, gets one from Pebble,
serves it on every TLS listener (checked with ``openssl s_client``), renews it
(Pebble issues 30-second certificates here, so a third of its life is left
within seconds) while an IMAP session stays open and usable, and keeps what
it has with a clear status when the CA is gone.
"""

from __future__ import annotations

import datetime as dt
import imaplib
import json
import os
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.servers import DnsServer, free_port
from tests.tools import require_tool
from tests.twins import TwinProcess, twin_cli

DOMAIN = "alice.test"
VALIDITY = 30  # seconds: Pebble's certificateValidityPeriod


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _api_certificate(where: Path) -> tuple[Path, Path, Path]:
    """A CA and, signed by it, the certificate Pebble's own API serves on 127.0.0.1."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("test CA")).issuer_name(_name("test CA"))
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = where / "ca.pem", where / "api-cert.pem", where / "api-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class Pebble:
    def __init__(self, where: Path, http_port: int, dns: str) -> None:
        self.binary = require_tool("pebble")
        self.ca, cert, key = _api_certificate(where)
        self.port, self.management = free_port(), free_port()
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.management}",
            "certificate": str(cert), "privateKey": str(key),
            "httpPort": http_port, "tlsPort": free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
            "certificateValidityPeriod": VALIDITY}}
        self.config = where / "pebble.json"
        self.config.write_text(json.dumps(config))
        self.dns = dns
        self.log = where / "pebble.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def start(self) -> None:
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
               "PEBBLE_AUTHZREUSE": "0"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([self.binary, "-config", str(self.config),
                                          "-dnsserver", self.dns], stdout=log, stderr=log,
                                         env=env)
        ctx = ssl.create_default_context(cafile=str(self.ca))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                import urllib.request
                urllib.request.urlopen(self.directory, context=ctx, timeout=2).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"pebble did not start: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def pebble(tmp_path: Path, dns_server: DnsServer) -> Iterator[tuple[Pebble, int]]:
    acme_port = free_port()
    dns = dns_server.serve([f"--host-record={DOMAIN},127.0.0.1", f"--local=/{DOMAIN}/"])
    ca = Pebble(tmp_path, acme_port, dns)
    ca.start()
    yield ca, acme_port
    ca.stop()


def _served_issuer(port: int, starttls: str | None = None) -> str:
    """The issuer of the certificate a listener serves, as ``openssl s_client`` sees it."""
    openssl = require_tool("openssl")
    args = [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", DOMAIN]
    if starttls:
        args += ["-starttls", starttls]
    shown = subprocess.run(args, input=b"", capture_output=True, timeout=30)
    pem = shown.stdout[shown.stdout.index(b"-----BEGIN CERTIFICATE-----"):]
    cert = x509.load_pem_x509_certificate(pem)
    return cert.issuer.rfc4514_string()


def _status(twin: TwinProcess) -> dict[str, Any]:
    report = json.loads(twin_cli(twin.data, "status", "--json", check=False).stdout)
    return dict(report["certificate"] or {})


def _wait_for(twin: TwinProcess, check: Callable[[dict[str, Any]], bool],
              timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cert = _status(twin)
        if cert and check(cert):
            return cert
        time.sleep(0.5)
    raise AssertionError(f"certificate state never matched: {_status(twin)}\n{twin.log()}")


def test_certificate_from_pebble_served_renewed_and_kept_when_the_ca_is_gone(
        twins: Callable[..., TwinProcess], pebble: tuple[Pebble, int]) -> None:
    ca, acme_port = pebble
    alice = twins("alice", sets=[
        f"twin.domain={DOMAIN}", "tls.acme=true", f"tls.acme_directory={ca.directory}",
        f"tls.acme_ca_bundle={ca.ca}", f"http.acme_port={acme_port}",
        "tls.acme_email=postmaster@alice.test"])

    first = _wait_for(alice, lambda c: not c["self_signed"], 60)
    assert first["names"] == [DOMAIN] and "Pebble" in first["issuer"], first
    # "renewing" too: a 30-second certificate may be in its last third by the first look
    # (a status CLI under CI load took that long), and renewal is what the test waits for
    assert first["acme"]["status"] in ("valid", "renewing"), first
    for port, starttls in ((alice.port("https"), None), (alice.port("imaps"), None),
                           (alice.port("submissions"), None), (alice.port("imap"), "imap"),
                           (alice.port("submission"), "smtp")):
        assert "Pebble" in _served_issuer(port, starttls), port

    # an IMAP session opened on the first certificate outlives the renewal
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    session = imaplib.IMAP4_SSL("127.0.0.1", alice.port("imaps"), ssl_context=ctx)
    session.login(alice.login, alice.password)
    renewed = _wait_for(alice, lambda c: c["not_after"] > first["not_after"], 3 * VALIDITY)
    assert not renewed["self_signed"]
    assert session.noop()[0] == "OK" and session.select("INBOX")[0] == "OK"
    session.logout()

    # the CA gone: the certificate in use stays, and status says why nothing new comes
    ca.stop()
    failing = _wait_for(alice, lambda c: c["acme"]["status"] == "failing", 3 * VALIDITY)
    assert failing["acme"]["detail"] and failing["acme"]["next_check"], failing
    assert "Pebble" in _served_issuer(alice.port("https"))
    plain = twin_cli(alice.data, "status", check=False).stdout
    assert "acme         failing:" in plain, plain


def test_the_challenge_listener_answers_only_challenges(
        twins: Callable[..., TwinProcess], tmp_path: Path) -> None:
    """Without a CA: the HTTP-01 listener is bounded and redirects the rest to HTTPS."""
    import socket

    port = free_port()
    alice = twins("alice", sets=["tls.acme=true", f"http.acme_port={port}",
                                 "tls.acme_directory=https://127.0.0.1:1/dir"])

    def ask(request: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
            s.sendall(request)
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            return data

    assert ask(b"GET /.well-known/acme-challenge/nope HTTP/1.1\r\nHost: x\r\n\r\n") \
        .startswith(b"HTTP/1.1 404")
    moved = ask(b"GET /dav/ HTTP/1.1\r\nHost: alice.localhost\r\n\r\n")
    assert moved.startswith(b"HTTP/1.1 301")
    assert f"Location: https://alice.localhost:{alice.port('https')}/dav/".encode() in moved
    assert ask(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: " + b"y" * 8000 + b"\r\n\r\n") == b""
    started = time.monotonic()
    assert ask(b"GET / HTTP/1.1\r\n") == b""  # a head that never ends: closed at 10 s
    assert time.monotonic() - started < 14
