"""IMAP while the dispersed store cannot be read: six real redis-servers, three hung.

A FETCH of a large body used to announce its literal and then break the
connection off inside it (20 s later); it must answer NO and keep the session.
"""

from __future__ import annotations

import imaplib
import time
from pathlib import Path

from tests.protocols.imap.harness import ThreadTwin
from tests.servers import redis_servers


def test_fetch_answers_no_when_the_store_is_unreadable_and_the_session_goes_on(
        tmp_path: Path) -> None:
    servers, specs = redis_servers(tmp_path / "redis")
    twin = ThreadTwin(tmp_path / "twin", sets={"storage.backends": specs})
    try:
        login, password = twin.new_user()
        body = b"".join(b"line %06d of a long message\r\n" % i for i in range(11_000))
        message = b"From: a@example.org\r\nTo: b@alice.localhost\r\nSubject: big\r\n\r\n" + body
        assert len(message) > 300 * 1024  # streamed, not from the small-body cache
        twin.deliver(login, message)
        c = imaplib.IMAP4("127.0.0.1", twin.port)
        c.login(login, password)
        c.select("INBOX")
        typ, data = c.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK" and data[0][1] == message  # type: ignore[index]
        for i in (0, 2, 4):
            servers[i].hang()
        started = time.monotonic()
        typ, data = c.fetch("1", "(BODY.PEEK[])")
        took = time.monotonic() - started
        assert typ == "NO", (typ, data)
        assert took <= 10.0
        assert c.noop()[0] == "OK"  # the same connection answers on
        # a write the store cannot take is "try again" (UNAVAILABLE), not a server bug
        typ, data = c.append("INBOX", None, None, b"Subject: later\r\n\r\nhi\r\n")
        assert typ == "NO" and b"[UNAVAILABLE]" in data[0], (typ, data)
        for i in (0, 2, 4):
            servers[i].resume()
        c.logout()
    finally:
        servers.close()
        twin.close()
