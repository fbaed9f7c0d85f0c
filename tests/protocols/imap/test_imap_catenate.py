"""CATENATE (RFC 4469): parts, URLs limited to the user's own mail, bounds, atomicity."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from protocols.imap.catenate import parse_url
from protocols.imap.errors import ImapError
from tests.protocols.imap.conftest import Account
from tests.protocols.imap.harness import ThreadTwin
from tests.protocols.imap.test_imap_hostile import Raw

MSG = b"From: a@example.org\r\nSubject: one\r\n\r\nfirst body\r\n"
HOSTS = frozenset({"alice.localhost"})


def login(acc: Account) -> Raw:
    r = Raw(acc.port)
    r.sock.settimeout(30)  # a loaded CI machine: answers are checked, not their speed
    r.send(f'l LOGIN "{acc.login}" "{acc.password}"\r\n'.encode())
    assert r.until(b"l")[-1].startswith(b"l OK")
    return r


def cmd(r: Raw, tag: str, text: bytes) -> list[bytes]:
    """Send a command whose literals are all non-synchronising; its response lines."""
    r.send(tag.encode() + b" " + text + b"\r\n")
    return r.until(tag.encode())


def lit(data: bytes) -> bytes:
    return b"{%d+}\r\n" % len(data) + data


def body(r: Raw, box: str, seq: int) -> bytes:
    r.send(f"s EXAMINE {box}\r\n".encode())
    assert r.until(b"s")[-1].startswith(b"s OK")
    r.send(b"f FETCH %d BODY.PEEK[]\r\n" % seq)
    head = r.line()
    m = re.search(rb"\{(\d+)\}$", head)
    assert m, head
    n = int(m.group(1))
    while len(r.buf) < n:
        r.buf += r.sock.recv(65536)
    data, r.buf = r.buf[:n], r.buf[n:]
    assert r.until(b"f")[-1].startswith(b"f OK")
    return data


def count(r: Raw, box: str) -> int:
    r.send(f"c STATUS {box} (MESSAGES)\r\n".encode())
    lines = r.until(b"c")
    m = re.search(rb"MESSAGES (\d+)", b"".join(lines))
    assert m, lines
    return int(m.group(1))


def test_text_and_url_parts_make_the_message(account: Account) -> None:
    account.deliver(MSG)
    r = login(account)
    assert cmd(r, "a", b"CREATE Out")[-1].startswith(b"a OK")
    user = quote(account.login, safe="")
    parts = (b'CATENATE (TEXT ' + lit(b"X-New: 1\r\n") + b' URL "/INBOX/;UID=1/;SECTION=HEADER"'
             b' URL "/INBOX/;UID=1/;SECTION=TEXT" TEXT ' + lit(b"tail\r\n")
             + b' URL "imap://' + user.encode() + b'@alice.localhost/INBOX/;UID=1/;PARTIAL=0.4"'
             + b' URL "/INBOX/;UID=1/;SECTION=1/;PARTIAL=6")')
    out = cmd(r, "b", b"APPEND Out (\\Seen) " + parts)
    assert out[-1].startswith(b"b OK [APPENDUID"), out
    header, text = MSG.split(b"\r\n\r\n", 1)
    assert body(r, "Out", 1) == b"X-New: 1\r\n" + header + b"\r\n\r\n" + text + b"tail\r\n" \
        + b"From" + b"body\r\n"


def test_streamed_message_then_catenate_in_one_multiappend(account: Account) -> None:
    account.deliver(MSG)
    r = login(account)
    out = cmd(r, "a", b"APPEND INBOX " + lit(b"Subject: plain\r\n\r\nx\r\n")
              + b' CATENATE (URL "/INBOX/;UID=1" TEXT ' + lit(b"more\r\n") + b")"
              + b" (\\Flagged) " + lit(b"Subject: last\r\n\r\ny\r\n"))
    assert out[-1].startswith(b"a OK [APPENDUID"), out
    assert count(r, "INBOX") == 4
    assert body(r, "INBOX", 3) == MSG + b"more\r\n"
    assert body(r, "INBOX", 4) == b"Subject: last\r\n\r\ny\r\n"


@pytest.mark.parametrize("url", [
    "/INBOX;UIDVALIDITY=1/;UID=1",  # another uidvalidity
    "/INBOX/;UID=9",  # no such message
    "/Nope/;UID=1",  # no such mailbox
    "/INBOX/;UID=1/;URLAUTH=anonymous:internal:abc",  # RFC 4467 is not offered
    "imap://someone%40alice.localhost@alice.localhost/INBOX/;UID=1",  # another user
    "imap://USER@elsewhere.example/INBOX/;UID=1",  # another server
    "http://alice.localhost/INBOX/;UID=1",
    "/INBOX/;UID=1/;SECTION=HEADER.FIELDS%20(",
])
def test_bad_urls_are_refused_and_nothing_is_appended(account: Account, url: str) -> None:
    account.deliver(MSG)
    r = login(account)
    url = url.replace("USER", quote(account.login, safe=""))
    out = cmd(r, "a", b"APPEND INBOX CATENATE (TEXT " + lit(b"a: 1\r\n\r\n")
              + b' URL "' + url.encode() + b'")' + b" CATENATE (TEXT " + lit(b"b\r\n") + b")")
    assert out[-1].startswith(b"a NO [BADURL "), out
    assert b"]" not in out[-1].split(b"[BADURL ", 1)[1].split(b"]", 1)[0]
    assert count(r, "INBOX") == 1
    r.alive()


def test_a_later_bad_message_unappends_the_earlier_ones(account: Account) -> None:
    account.deliver(MSG)
    r = login(account)
    out = cmd(r, "a", b'APPEND INBOX CATENATE (URL "/INBOX/;UID=1") CATENATE (TEXT '
              + lit(b"x\r\n") + b' URL "/INBOX;UIDVALIDITY=1/;UID=1")')
    assert out[-1].startswith(b"a NO [BADURL"), out
    assert count(r, "INBOX") == 1


def test_missing_mailbox_is_trycreate_even_with_a_bad_url(account: Account) -> None:
    r = login(account)
    out = cmd(r, "a", b'APPEND Nope CATENATE (URL "/INBOX;UIDVALIDITY=1/;UID=1")')
    assert out[-1].startswith(b"a NO [TRYCREATE]"), out


@pytest.mark.parametrize("text", [
    b"APPEND INBOX CATENATE ()",
    b"APPEND INBOX CATENATE (TEXT)",
    b'APPEND INBOX CATENATE (BOGUS "x")',
    b"APPEND INBOX CATENATE TEXT",
    b'APPEND INBOX CATENATE (URL ("/INBOX/;UID=1"))',
    b"APPEND INBOX CATENATE (TEXT " + lit(b"nul\0inside") + b")",
])
def test_malformed_catenate_is_bad(account: Account, text: bytes) -> None:
    r = login(account)
    assert cmd(r, "a", text)[-1].startswith(b"a BAD"), text
    r.alive()


def test_too_many_parts_is_refused(account: Account) -> None:
    r = login(account)
    parts = b" ".join([b'TEXT "x"'] * 1001)
    assert cmd(r, "a", b"APPEND INBOX CATENATE (" + parts + b")")[-1].startswith(b"a NO [LIMIT]")
    r.alive()


@pytest.fixture(scope="module")
def small_twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadTwin]:
    twin = ThreadTwin(tmp_path_factory.mktemp("cat"), {"imap.max_literal": 4096})
    yield twin
    twin.close()


def test_the_catenated_message_is_bounded_by_the_append_limit(small_twin: ThreadTwin) -> None:
    login_, password = small_twin.new_user()
    acc = Account(small_twin, login_, password)
    acc.deliver(b"Subject: big\r\n\r\n" + b"y" * 3000 + b"\r\n")
    r = login(acc)
    # two URL parts of 3 KB each: the second is refused before it is read
    out = cmd(r, "a", b'APPEND INBOX CATENATE (URL "/INBOX/;UID=1" URL "/INBOX/;UID=1")')
    assert out[-1].startswith(b"a NO [TOOBIG]"), out
    # TEXT literals beyond the limit: a synchronising one is refused before any '+'
    r.send(b"b APPEND INBOX CATENATE (TEXT {3000}\r\n")
    assert r.line() == b"+ Ready for literal data"
    r.send(b"z" * 3000 + b" TEXT {9000}\r\n")
    assert r.line().startswith(b"b BAD")
    r.alive()
    # ... and a non-synchronising one ends the connection (it cannot be skipped safely)
    r.send(b"c APPEND INBOX CATENATE (TEXT {100000+}\r\n")
    assert r.until(b"c")[-1].startswith(b"* BYE")
    assert count(login(acc), "INBOX") == 1


def test_before_login_catenate_literals_get_the_small_bound(account: Account) -> None:
    r = Raw(account.port)
    r.send(b"a APPEND INBOX CATENATE (TEXT {70000}\r\n")
    assert r.line().startswith(b"a BAD")  # no '+': the 64 KiB pre-login bound
    r.alive()


@pytest.mark.parametrize("url", [
    "", "INBOX/;UID=1", "/INBOX", "/INBOX/;UID=0", "/INBOX/;UID=99999999999",
    "/INBOX/;UID=1/;UID=2", "/INBOX;UIDVALIDITY=x/;UID=1", "/INBOX;FOO=1/;UID=1",
    "/INBOX/;UID=1/;PARTIAL=x", "/INBOX/;UID=1/;PARTIAL=1.x", "/INBOX/;UID=1/;EXPIRE=2030",
    "/%FF%FE/;UID=1", "//;UID=1", "imap://u@alice.localhost:1/INBOX/;UID=1",
    "imap://u@alice.localhost", "/" + "a" * 5000 + "/;UID=1",
])
def test_parse_url_refuses_hostile_urls(url: str) -> None:
    with pytest.raises(ImapError) as err:
        parse_url(url, user="u", hosts=HOSTS, ports=frozenset({143}))
    assert err.value.code is not None and err.value.code.startswith("BADURL")


def test_parse_url_reads_rfc5092_urls() -> None:
    u = parse_url("imap://u;AUTH=*@Alice.Localhost:143/F%C3%BCr;UIDVALIDITY=7/;UID=3"
                  "/;SECTION=1.MIME/;PARTIAL=10.20", user="u", hosts=HOSTS,
                  ports=frozenset({143}))
    assert (u.mailbox, u.uidvalidity, u.uid, u.section, u.origin, u.length) == (
        "Für", 7, 3, "1.MIME", 10, 20)



def test_a_url_to_another_mailbox_gets_its_own_header_fields(account: Account) -> None:
    """Kept header fields are keyed by the message's own mailbox: with ``Other`` uid 1
    selected and its Subject kept, a URL to INBOX uid 1 gets INBOX's Subject."""
    account.deliver(MSG)
    r = login(account)
    assert cmd(r, "a", b"CREATE Other")[-1].startswith(b"a OK")
    other = MSG.replace(b"Subject: one", b"Subject: other")
    assert cmd(r, "b", b"APPEND Other " + lit(other))[-1].startswith(b"b OK")
    assert cmd(r, "c", b"SELECT Other")[-1].startswith(b"c OK")
    fetched = b"".join(cmd(r, "d", b"FETCH 1 BODY.PEEK[HEADER.FIELDS (Subject)]"))
    assert b"Subject: other" in fetched
    out = cmd(r, "e", b'APPEND Other CATENATE (URL "/INBOX/;UID=1/;SECTION=HEADER.FIELDS%20'
                      b'(Subject)")')
    assert out[-1].startswith(b"e OK [APPENDUID"), out
    assert body(r, "Other", 2) == b"Subject: one\r\n\r\n"
