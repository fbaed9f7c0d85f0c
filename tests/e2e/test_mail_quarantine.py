"""A real twin: one malformed message does not stop mail filing (issue #15, item 1).

Before the fix, the first message below made the filer raise on every try,
and every message behind it waited forever (across restarts). Now it is
filed like the others; and a delivery that could not be filed at all waits
in the quarantine, where ``twin mail quarantine list|retry|rm`` reaches it
through the running twin.
"""

from __future__ import annotations

import asyncio
import imaplib
import json
import smtplib
import time
from collections.abc import Callable

from core.mail.journal import Entry
from core.service import Service
from tests.protocols.smtp.helpers import client_tls
from tests.twins import TwinProcess, twin_cli

POISONS = [
    b"Content-Type: text/plain; name*0=a; name*=b\r\n",  # TypeError in decode_params
    b"Content-Type: text/plain; name*=ut\x00f''ab\r\n",  # ValueError: embedded null character
    b"Content-Disposition: attachment; filename*0=a; filename*=b\r\n",
    b"From: " + b"(" * 900 + b"\r\n " + b"(" * 900 + b"\r\n",  # RecursionError in getaddresses
]


def imap_subjects(twin: TwinProcess, want: int, timeout: float = 30) -> list[bytes]:
    """The Subject lines in the Inbox once it holds ``want`` messages (or the timeout)."""
    with imaplib.IMAP4_SSL("127.0.0.1", twin.port("imaps"), ssl_context=client_tls()) as imap:
        imap.login(twin.login, twin.password)
        deadline = time.monotonic() + timeout
        while True:
            _, [count] = imap.select("INBOX")
            if int(count) >= want or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if int(count) == 0:
            return []
        _, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODYSTRUCTURE)")
        return sorted(bytes(part[1]).strip() for part in data if isinstance(part, tuple))


def test_malformed_messages_do_not_hold_the_ones_behind_them(
        twins: Callable[..., TwinProcess]) -> None:
    alice = twins("alice")
    with smtplib.SMTP("127.0.0.1", alice.port("smtp"), timeout=30) as client:
        for i, header in enumerate(POISONS):
            client.sendmail("x@example.org", [alice.login],
                            b"Subject: poison " + str(i).encode() + b"\r\n" + header
                            + b"\r\nbody\r\n")
        for i in range(3):
            client.sendmail("x@example.org", [alice.login],
                            f"Subject: good {i}\r\nFrom: x@example.org\r\n\r\nhi\r\n".encode())
    subjects = imap_subjects(alice, len(POISONS) + 3)
    assert subjects == sorted([f"Subject: good {i}".encode() for i in range(3)]
                              + [f"Subject: poison {i}".encode() for i in range(len(POISONS))])
    listed = json.loads(twin_cli(alice.data, "mail", "quarantine", "list", "--json").stdout)
    assert listed == []  # described, not set aside


async def _set_aside(twin: TwinProcess, subjects: list[str]) -> None:
    """Quarantine deliveries as the filer does when filing them keeps failing."""
    service = Service.open(twin.data)
    try:
        async with service.opened_store():
            for subject in subjects:
                message = f"Subject: {subject}\r\nFrom: x@example.org\r\n\r\nkept\r\n".encode()
                await service.mail.set_aside(Entry(0, twin.login, message, time.time()),
                                             "RuntimeError: simulated")
    finally:
        service.close()


def test_the_owner_lists_retries_and_deletes_quarantined_mail_on_a_running_twin(
        twins: Callable[..., TwinProcess]) -> None:
    alice = twins("alice", start=False)
    asyncio.run(_set_aside(alice, ["kept 1", "kept 2"]))
    alice.start()
    listed = json.loads(twin_cli(alice.data, "mail", "quarantine", "list", "--json").stdout)
    assert [(q["login"], q["reason"]) for q in listed] == [(alice.login,
                                                            "RuntimeError: simulated")] * 2
    first, second = (q["id"] for q in listed)
    out = twin_cli(alice.data, "mail", "quarantine", "retry", str(first)).stdout
    assert f"quarantine #{first} filed into the Inbox" in out
    assert imap_subjects(alice, 1) == [b"Subject: kept 1"]
    assert f"quarantine #{second} deleted" in twin_cli(
        alice.data, "mail", "quarantine", "rm", str(second)).stdout
    assert "the quarantine is empty" in twin_cli(alice.data, "mail", "quarantine").stdout
    again = twin_cli(alice.data, "mail", "quarantine", "retry", str(first), check=False)
    assert again.returncode != 0 and "no quarantined message" in again.stderr
    assert "quarantine #" in alice.log()
