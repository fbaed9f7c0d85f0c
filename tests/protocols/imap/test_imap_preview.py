"""PREVIEW (RFC 8970): the text a client shows under a subject, bounded and plain."""

from __future__ import annotations

import base64
import re

from protocols.imap import preview
from tests.protocols.imap.conftest import Account
from tests.protocols.imap.test_imap_catenate import cmd, login

PLAIN = (b"From: a@example.org\r\nSubject: plain\r\n\r\n"
         b"Hello   there,\r\n\r\nsee  you\ttomorrow.\r\n\r\n> quoted old text\r\n"
         b"-- \r\nSignature Person\r\n")
HTML = (b"From: a@example.org\r\nSubject: html\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment\r\n\r\n%PDF\r\n"
        b"--B\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><head><title>no</title><style>p{}</style></head><body><script>x()</script>"
        b"<p>Caf&eacute; <b>open</b></p><p>today</p></body></html>\r\n--B--\r\n")
ONLY_ATTACHMENT = (b"From: a@example.org\r\nSubject: att\r\nMIME-Version: 1.0\r\n"
                   b"Content-Type: application/octet-stream\r\n"
                   b"Content-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n")


def big_base64_utf8() -> bytes:
    text = ("Grüße aus Köln " * 15_000).encode()  # ~340 KB once encoded: > MAX_READ
    b64 = base64.encodebytes(text).replace(b"\n", b"\r\n")
    return (b"From: a@example.org\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64"
            b"\r\n\r\n" + b64)


def previews(raw: bytes) -> dict[int, bytes]:
    """seq -> preview bytes from FETCH responses (quoted strings or literals)."""
    out: dict[int, bytes] = {}
    for m in re.finditer(rb'\* (\d+) FETCH \(PREVIEW (?:"((?:[^"\\]|\\.)*)"|\{(\d+)\}\r\n)',
                         raw):
        if m.group(3) is not None:
            start = m.end()
            out[int(m.group(1))] = raw[start:start + int(m.group(3))]
        else:
            out[int(m.group(1))] = m.group(2)
    return out


def fetch_raw(acc: Account, items: bytes) -> bytes:
    r = login(acc)
    assert cmd(r, "s", b"SELECT INBOX")[-1].startswith(b"s OK")
    r.send(b"f FETCH 1:* " + items + b"\r\n")
    data, r.buf = r.buf, b""
    while not re.search(rb"(^|\r\n)f (OK|NO|BAD)[^\r\n]*\r\n", data):
        data += r.sock.recv(65536)
    return data


def test_previews_are_plain_short_text(account: Account) -> None:
    for m in (PLAIN, HTML, ONLY_ATTACHMENT, big_base64_utf8()):
        account.deliver(m)
    r = login(account)
    assert "PREVIEW" in b"".join(cmd(r, "c", b"CAPABILITY")).decode()
    raw = fetch_raw(account, b"(PREVIEW)")
    got = previews(raw)
    assert got[1] == b"Hello there, see you tomorrow."
    assert got[2] == "Café open today".encode()
    assert got[3] == b""
    big = got[4].decode("utf-8")
    assert len(big) == preview.LIMIT and big.startswith("Grüße aus Köln Grüße")
    lazy = previews(fetch_raw(account, b"(PREVIEW (LAZY))"))
    assert lazy == got


def test_preview_modifiers_are_checked(account: Account) -> None:
    account.deliver(PLAIN)
    r = login(account)
    assert cmd(r, "s", b"SELECT INBOX")[-1].startswith(b"s OK")
    for bad in (b"FETCH 1 (PREVIEW (EAGER))", b"FETCH 1 (PREVIEW ())",
                b"FETCH 1 (PREVIEW (LAZY (X)))"):
        assert cmd(r, "x", bad)[-1].startswith(b"x BAD"), bad
    r.alive()


def test_preview_of_a_cut_base64_body_drops_the_broken_end() -> None:
    text = ("ab\u00e9" * 4000).encode()
    raw = base64.encodebytes(text)[:1001]  # cut in the middle of a line
    part = {"e": "base64", "p": [["charset", "utf-8"]], "s": "plain"}
    out = preview.make(raw, part, truncated=True)
    assert out == ("ab\u00e9" * 100)[:preview.LIMIT]
    assert "\ufffd" not in out
