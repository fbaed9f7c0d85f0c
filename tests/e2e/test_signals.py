"""Signals to a real ``twin serve``: SIGHUP reloads, SIGTERM and SIGINT stop cleanly.

SIGHUP once killed the twin (the default action). Now it loads a replaced
certificate into every listener: a new connection (IMAPS, HTTPS, SMTP
STARTTLS) is handed the new one, while an IMAP session opened before goes
on working.
"""

from __future__ import annotations

import hashlib
import imaplib
import signal
import socket
import ssl
import time
from collections.abc import Callable

import pytest

from core import tls
from tests.protocols.smtp.helpers import client_tls
from tests.twins import TwinProcess


def cert_of(port: int) -> str:
    """SHA-256 of the certificate a fresh implicit-TLS connection is handed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, \
            client_tls().wrap_socket(sock, server_hostname="127.0.0.1") as conn:
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def starttls_cert_of(port: int) -> str:
    import smtplib

    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.starttls(context=client_tls())
        der = smtp.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def wait_for_log(twin: TwinProcess, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in twin.log():
        assert time.monotonic() < deadline, f"{text!r} not logged: {twin.log()[-2000:]}"
        time.sleep(0.05)


def test_sighup_loads_a_new_certificate_without_dropping_an_open_session(
        twins: Callable[..., TwinProcess]) -> None:
    alice = twins("alice")
    old = {"imaps": cert_of(alice.port("imaps")), "https": cert_of(alice.port("https")),
           "submission": starttls_cert_of(alice.port("submission"))}
    session = imaplib.IMAP4_SSL("127.0.0.1", alice.port("imaps"), ssl_context=client_tls())
    try:
        session.login(alice.login, alice.password)
        session.select("INBOX")
        tls.make_self_signed(alice.data, ["renewed.example"])  # as a renewal would
        config = alice.data / "twin.toml"
        config.write_text(config.read_text().replace('# level = "info"', 'level = "debug"')
                          .replace("# max_line = 65536", "max_line = 70000"))
        assert alice.proc is not None
        alice.proc.send_signal(signal.SIGHUP)
        wait_for_log(alice, "SIGHUP: reloaded")
        assert alice.proc.poll() is None, alice.log()[-2000:]
        assert "SIGHUP: log level is now debug" in alice.log()
        assert "applied at the next restart: imap.max_line" in alice.log()
        new = {"imaps": cert_of(alice.port("imaps")), "https": cert_of(alice.port("https")),
               "submission": starttls_cert_of(alice.port("submission"))}
        on_disk = hashlib.sha256(ssl.PEM_cert_to_DER_cert(
            (alice.data / tls.CERT).read_text())).hexdigest()
        assert new == dict.fromkeys(old, on_disk)
        assert all(new[k] != old[k] for k in old)
        # the session opened before the reload goes on, on its old connection
        assert session.noop()[0] == "OK"
        assert session.select("INBOX")[0] == "OK"
    finally:
        session.logout()


def test_a_broken_certificate_on_sighup_keeps_the_old_one(
        twins: Callable[..., TwinProcess]) -> None:
    alice = twins("alice")
    before = cert_of(alice.port("imaps"))
    (alice.data / tls.KEY).write_text("not a key\n")
    assert alice.proc is not None
    alice.proc.send_signal(signal.SIGHUP)
    wait_for_log(alice, "the old one stays in use")
    assert alice.proc.poll() is None
    assert cert_of(alice.port("imaps")) == before


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_cleanly(twins: Callable[..., TwinProcess],
                                         sig: signal.Signals) -> None:
    alice = twins("alice")
    assert alice.stop(sig) == 0
    assert "stopped" in alice.log()
