"""The shared login throttle as clients see it on a real twin (#15.10).

After failed logins a client is told to come back later (IMAP ``NO
[UNAVAILABLE]``, SMTP 454) instead of being held silently, whatever the
spelling of the login; WebDAV checks a refused request's password once.
"""

from __future__ import annotations

import base64
import imaplib
import re
import smtplib
import ssl
import time
from collections.abc import Callable

import httpx

from tests.twins import TwinProcess


def _imap_login(twin: TwinProcess, login: str, password: str) -> tuple[str, bytes, float]:
    c = imaplib.IMAP4("127.0.0.1", twin.port("imap"))
    start = time.monotonic()
    try:
        typ, data = c._simple_command("LOGIN", c._quote(login), c._quote(password))  # type: ignore[attr-defined]
    except imaplib.IMAP4.error as exc:
        typ, data = "NO", [str(exc).encode()]
    took = time.monotonic() - start
    text = c.response("UNAVAILABLE")[1][0] or b""  # type: ignore[no-untyped-call]
    c.shutdown()
    return typ, (data[0] or b"") + b" " + text, took


def test_a_throttled_login_is_told_why_at_once(twins: Callable[..., TwinProcess]) -> None:
    alice = twins("alice")
    with httpx.Client(base_url=alice.url, verify=False, timeout=30) as dav:
        assert dav.get("/dav/", auth=(alice.login, "wrong")).status_code == 401
        assert dav.request("PUT", "/dav/x.txt", content=b"x",
                           auth=(alice.login, "wrong")).status_code == 401
    # one check per request: before, wsgidav checked again after the fast path,
    # waiting out the first failure's delay and counting two failures per request
    assert "(2 in a row)" in alice.log() and "(3 in a row)" not in alice.log()
    time.sleep(2.2)  # the second failure's delay
    typ, _, _ = _imap_login(alice, f" {alice.login.upper()}", "wrong")
    assert typ == "NO" and "(3 in a row)" in alice.log()
    # the right password, spelt otherwise, too soon: one login to the throttle, told why
    typ, text, took = _imap_login(alice, f"{alice.login}\t", alice.password)
    assert typ == "NO" and b"UNAVAILABLE" in text and b"try again in" in text, text
    assert took < 1.5, took
    wait = int(re.search(rb"try again in (\d+)", text).group(1))  # type: ignore[union-attr]
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", alice.port("submission"), timeout=30) as smtp:
        smtp.starttls(context=ctx)
        smtp.ehlo()
        blob = base64.b64encode(f"\0{alice.login}\0{alice.password}".encode()).decode()
        code, reply = smtp.docmd("AUTH", "PLAIN " + blob)
        assert code == 454 and b"4.7.0" in reply and b"try again in" in reply, reply
    time.sleep(wait + 0.2)
    typ, _, _ = _imap_login(alice, alice.login, alice.password)
    assert typ == "OK"
