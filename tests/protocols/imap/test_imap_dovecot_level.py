"""What imaptest and Thunderbird found: each case as Dovecot answers it (issue #17)."""

from __future__ import annotations

import imaplib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.protocols.imap.conftest import Account
from tests.protocols.imap.harness import ThreadTwin

MSG = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


class Raw:
    """A line-level IMAP client: what a server sends, byte for byte."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.n = 0
        self.readline()

    def readline(self) -> bytes:
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(self.buf)
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def cmd(self, text: str | bytes) -> list[bytes]:
        """Send one command; the untagged lines and the tagged one (last)."""
        self.n += 1
        tag = b"t%d" % self.n
        self.sock.sendall(tag + b" " + (text.encode() if isinstance(text, str) else text)
                          + b"\r\n")
        out = []
        while True:
            line = self.readline()
            out.append(line)
            if line.startswith(tag + b" "):
                return out

    def login(self, acc: Account) -> None:
        assert self.cmd(f'LOGIN "{acc.login}" "{acc.password}"')[-1].split()[1] == b"OK"

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(account: Account) -> Iterator[Raw]:
    r = Raw(account.port)
    r.login(account)
    yield r
    r.close()


@pytest.fixture(scope="module")
def quota_twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadTwin]:
    twin = ThreadTwin(tmp_path_factory.mktemp("quota"), {"mail.quota": 10 * 1024 * 1024})
    yield twin
    twin.close()


# -- QUOTA (RFC 9208)

def test_no_quota_is_not_advertised_and_never_an_empty_resource_list(raw: Raw) -> None:
    caps = raw.cmd("CAPABILITY")[0]
    assert b"QUOTA" not in caps
    out = raw.cmd("GETQUOTAROOT INBOX")
    assert out[-1].split()[1] == b"OK"
    assert not any(b"()" in line for line in out if line.startswith(b"* QUOTA "))
    assert out[0] == b"* QUOTAROOT INBOX"


def test_a_quota_limit_is_advertised_with_its_resource(quota_twin: ThreadTwin,
                                                       tmp_path: Path) -> None:
    login, password = quota_twin.new_user()
    quota_twin.deliver(login, MSG)
    r = Raw(quota_twin.port)
    r.login(Account(quota_twin, login, password))
    assert b"QUOTA" in r.cmd("CAPABILITY")[0].split()
    out = r.cmd("GETQUOTAROOT INBOX")
    assert out[0] == b'* QUOTAROOT INBOX ""'
    assert out[1] == b'* QUOTA "" (STORAGE 1 10240)'
    r.close()


def test_imaplib_still_parses_quota(account: Account) -> None:
    c = imaplib.IMAP4("127.0.0.1", account.port)
    c.login(account.login, account.password)
    typ, _ = c.getquotaroot("INBOX")
    assert typ == "OK"
    c.logout()
