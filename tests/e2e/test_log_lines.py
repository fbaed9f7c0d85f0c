"""Nothing a client sends can forge a line in the twin's log (issue #15, item 10).

An IMAP LOGIN whose login is a literal may carry an LF; logged raw, the rest
of it became a line of its own, indistinguishable from the twin's.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from core import logsafe
from tests.twins import TwinProcess

FORGED = "2026-01-01 00:00:00,000 ERROR   twin.forged: the owner deleted everything"


def test_a_login_with_a_line_feed_stays_on_its_line(twins: Callable[..., TwinProcess]) -> None:
    alice = twins("alice")
    login = f"mallory\n{FORGED}\r".encode()
    with socket.create_connection(("127.0.0.1", alice.port("imap")), timeout=10) as s:
        f = s.makefile("rwb")
        f.readline()  # greeting
        f.write(b"a1 LOGIN {%d}\r\n" % len(login))
        f.flush()
        assert f.readline().startswith(b"+")
        f.write(login + b" wrong\r\n")
        f.flush()
        assert f.readline().startswith(b"a1 NO")
        f.write(b"a2 LOGOUT\r\n")
        f.flush()
        f.readline()
    log = alice.log()
    assert "mallory" in log  # the attempt is logged...
    assert not [line for line in log.splitlines() if line.startswith(FORGED[:23])]  # ...on one line
    assert "mallory\\x0a2026" in log


def test_one_line_escapes_every_control_character() -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "login %s from %s",
                               ("a\nb\r\x00c\u2028", "1.2.3.4"), None)
    assert logsafe.OneLine().filter(record)
    assert record.getMessage() == "login a\\x0ab\\x0d\\x00c\\x2028 from 1.2.3.4"


def test_one_line_per_smtp_transaction_with_id_parties_refusals_and_result(
        twins: Callable[..., TwinProcess]) -> None:
    import re
    import smtplib

    alice = twins("alice")
    with smtplib.SMTP("127.0.0.1", alice.port("smtp"), timeout=30) as smtp:
        smtp.ehlo("mx.example.org")
        smtp.mail("someone@example.org")
        assert smtp.rcpt(alice.login)[0] == 250
        assert smtp.rcpt("nobody@alice.localhost")[0] == 550
        code, answer = smtp.data(b"From: someone@example.org\r\nSubject: hi\r\n\r\nhello\r\n")
    assert code == 250
    queue_id = answer.decode().rsplit(" id ", 1)[1]
    [line] = [x for x in alice.log().splitlines() if f"id={queue_id}" in x]
    assert "INFO" in line and "smtp in:" in line, line
    assert re.search(r"client=127\.0\.0\.1 helo=mx\.example\.org tls=no "
                     r"from=<someone@example\.org> to=<alice@alice\.localhost> "
                     r"refused=nobody@alice\.localhost \(550\) size=\d+ "
                     r'result="250 2\.0\.0 OK id [0-9a-f]+" ms=\d+', line), line
