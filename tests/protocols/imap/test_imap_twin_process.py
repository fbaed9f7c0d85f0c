"""The IMAP listeners of a real ``twin serve`` process (entry point, status, TLS)."""

from __future__ import annotations

import imaplib
import ssl
from collections.abc import Callable

from tests.twins import TwinProcess

MSG = b"From: a@example.org\r\nSubject: via process\r\n\r\nhello\r\n"


def test_imaps_and_starttls_on_a_real_twin(twins: Callable[..., TwinProcess]) -> None:
    alice = twins("alice")
    assert alice.listeners["imap"]["tls"] == "starttls"
    assert alice.listeners["imaps"]["tls"] == "implicit"
    ctx = ssl.create_default_context(cafile=str(alice.data / "tls" / "cert.pem"))
    c = imaplib.IMAP4_SSL("127.0.0.1", alice.port("imaps"), ssl_context=ctx)
    c.login(alice.login, alice.password)
    typ, data = c.append("INBOX", None, None, MSG)
    assert typ == "OK" and b"APPENDUID" in data[0]
    assert c.select("INBOX") == ("OK", [b"1"])
    _, data = c.fetch("1", "(BODY[HEADER.FIELDS (SUBJECT)])")
    assert data[0][1] == b"Subject: via process\r\n\r\n"  # type: ignore[index]
    c.logout()
    s = imaplib.IMAP4("127.0.0.1", alice.port("imap"))
    s.starttls(ctx)
    s.login(alice.login, alice.password)
    assert s.select("INBOX") == ("OK", [b"1"])
    assert s.fetch("1", "(FLAGS)")[1] == [b"1 (FLAGS (\\Seen))"]
    s.logout()
