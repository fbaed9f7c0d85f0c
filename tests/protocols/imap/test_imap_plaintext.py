"""No password without TLS from a non-loopback client (RFC 3501 §6.2.3, RFC 8314 §3).

The check uses the client's (peer) address. The real-socket tests bind the IMAP
listener to a non-loopback address of this machine and connect from it, so
the server sees a non-loopback peer; without one they fail in CI
(TWIN_REQUIRE_TOOLS=1) and skip elsewhere.
"""

from __future__ import annotations

import base64
import imaplib
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.imap.session import plaintext_auth_allowed
from tests.protocols.imap.conftest import Account
from tests.protocols.imap.harness import ThreadTwin
from tests.tools import require


def non_loopback_ipv4() -> str | None:
    """A global IPv4 address of this machine (``ip -4 -o addr show scope global``)."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            addr = parts[parts.index("inet") + 1].split("/")[0]
            try:  # usable: we can bind to it and connect to it from here
                with socket.socket() as s:
                    s.bind((addr, 0))
                return addr
            except OSError:
                continue
    return None


ADDR = non_loopback_ipv4()
MISSING_ADDR = "no non-loopback IPv4 to test login-before-TLS from"


@pytest.fixture
def needs_addr() -> None:
    require(ADDR is not None, MISSING_ADDR)


@pytest.mark.parametrize(("peer", "tls", "configured", "allowed"), [
    ("127.0.0.1", False, False, True),
    ("127.3.4.5", False, False, True),
    ("::1", False, False, True),
    ("192.0.2.7", False, False, False),
    ("10.1.2.3", False, False, False),
    ("2001:db8::1", False, False, False),
    ("192.0.2.7", True, False, True),
    ("192.0.2.7", False, True, True),
    ("?", False, False, False),
])
def test_policy_uses_the_peer_address(peer: str, tls: bool, configured: bool,
                                      allowed: bool) -> None:
    assert plaintext_auth_allowed(peer, tls=tls, configured=configured) is allowed


def test_loopback_client_may_log_in_without_tls(account: Account) -> None:
    c = imaplib.IMAP4("127.0.0.1", account.port)
    assert "AUTH=PLAIN" in c.capabilities and "LOGINDISABLED" not in c.capabilities
    assert c.login(account.login, account.password)[0] == "OK"
    c.logout()


def twin_on(root: Path, **sets: object) -> ThreadTwin:
    assert ADDR is not None
    return ThreadTwin(root, {"listen.host": ADDR, **sets})


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadTwin]:
    require(ADDR is not None, MISSING_ADDR)
    twin = twin_on(tmp_path_factory.mktemp("remote"))
    yield twin
    twin.close()


def send(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    buf = b""
    while not buf.endswith(b"\r\n"):
        buf += sock.recv(4096)
    return buf


@pytest.mark.usefixtures("needs_addr")
def test_non_loopback_client_is_refused_before_tls(remote: ThreadTwin) -> None:
    assert ADDR is not None
    login, password = remote.new_user()
    c = imaplib.IMAP4(ADDR, remote.port)
    assert c.sock.getsockname()[0] == ADDR  # the server sees a non-loopback peer
    assert "LOGINDISABLED" in c.capabilities and "AUTH=PLAIN" not in c.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        c.login(login, password)
    c.logout()
    with socket.create_connection((ADDR, remote.port), timeout=5) as s:
        assert s.recv(4096).startswith(b"* OK")
        ir = base64.b64encode(f"\0{login}\0{password}".encode())
        assert send(s, b"a AUTHENTICATE PLAIN " + ir + b"\r\n").startswith(
            b"a NO [PRIVACYREQUIRED]")
        # without an initial response: refused at once, no continuation asking for it
        assert send(s, b"b AUTHENTICATE PLAIN\r\n").startswith(b"b NO [PRIVACYREQUIRED]")
        assert send(s, b"c NOOP\r\n").startswith(b"c OK")  # still not authenticated
        assert send(s, b"d SELECT INBOX\r\n").startswith(b"d BAD")


@pytest.mark.usefixtures("needs_addr")
def test_non_loopback_client_may_log_in_after_starttls(remote: ThreadTwin) -> None:
    assert ADDR is not None
    login, password = remote.new_user()
    ctx = ssl.create_default_context(cafile=str(remote.data / "tls" / "cert.pem"))
    ctx.check_hostname = False  # the certificate names the twin, not this test address
    c = imaplib.IMAP4(ADDR, remote.port)
    c.starttls(ctx)
    assert "AUTH=PLAIN" in c.capabilities and "LOGINDISABLED" not in c.capabilities
    assert c.login(login, password)[0] == "OK"
    c.logout()
    s = imaplib.IMAP4_SSL(ADDR, remote.tls_port, ssl_context=ctx)
    assert s.login(login, password)[0] == "OK"
    s.logout()


@pytest.mark.usefixtures("needs_addr")
def test_plaintext_auth_setting_lifts_the_refusal(tmp_path: Path) -> None:
    assert ADDR is not None
    twin = twin_on(tmp_path, **{"listen.plaintext_auth": True})
    try:
        login, password = twin.new_user()
        c = imaplib.IMAP4(ADDR, twin.port)
        assert "AUTH=PLAIN" in c.capabilities
        assert c.login(login, password)[0] == "OK"
        c.logout()
    finally:
        twin.close()
