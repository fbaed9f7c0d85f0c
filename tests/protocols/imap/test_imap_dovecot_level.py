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


def test_copy_and_append_over_quota_say_overquota_not_trycreate(quota_twin: ThreadTwin) -> None:
    """Issue #19.5: COPY answered TRYCREATE for any failure, and did not check the
    quota at all; RFC 9208 section 4.3 wants NO [OVERQUOTA], TRYCREATE only for
    a destination that does not exist."""
    login, password = quota_twin.new_user()
    big = MSG + b"x" * (6 * 1024 * 1024)  # two of them exceed the quota of 10 MiB
    quota_twin.deliver(login, big)
    r = Raw(quota_twin.port)
    r.login(Account(quota_twin, login, password))
    assert r.cmd("SELECT INBOX")[-1].split()[1] == b"OK"
    def told(text: str) -> bytes:  # the tagged answer without its tag
        return r.cmd(text)[-1].split(b" ", 1)[1]

    assert told("COPY 1 NoSuchBox").startswith(b"NO [TRYCREATE]")
    assert told("COPY 1 Trash").startswith(b"NO [OVERQUOTA]")
    assert told("UID COPY 1 Trash").startswith(b"NO [OVERQUOTA]")
    assert r.cmd("STATUS Trash (MESSAGES)")[0] == b"* STATUS Trash (MESSAGES 0)"
    assert told("MOVE 1 Trash").startswith(b"OK")  # a move takes no more room
    r.n += 1
    r.sock.sendall(b"t%d APPEND Trash {%d}\r\n" % (r.n, len(big)))
    assert r.readline().startswith(b"+")
    r.sock.sendall(big + b"\r\n")
    assert r.readline().startswith(b"t%d NO [OVERQUOTA]" % r.n)
    r.close()


def test_imaplib_still_parses_quota(account: Account) -> None:
    c = imaplib.IMAP4("127.0.0.1", account.port)
    c.login(account.login, account.password)
    typ, _ = c.getquotaroot("INBOX")
    assert typ == "OK"
    c.logout()


# -- untagged responses in an order the client can follow (RFC 3501 §7, §5.2)

def _two(account: Account) -> tuple[Raw, Raw]:
    a, b = Raw(account.port), Raw(account.port)
    a.login(account)
    b.login(account)
    assert a.cmd("SELECT INBOX")[-1].split()[1] == b"OK"
    assert b.cmd("SELECT INBOX")[-1].split()[1] == b"OK"
    return a, b


def test_a_new_keyword_is_announced_before_a_fetch_uses_it(account: Account) -> None:
    account.deliver(MSG)
    a, b = _two(account)
    b.cmd("STORE 1 +FLAGS ($Fresh)")
    out = a.cmd("NOOP")
    fetch = next(i for i, line in enumerate(out) if b"FETCH" in line)
    flags = next(i for i, line in enumerate(out) if line.startswith(b"* FLAGS "))
    assert flags < fetch and b"$Fresh" in out[flags], out
    assert any(b"PERMANENTFLAGS" in line and b"$Fresh" in line for line in out[:fetch]), out
    own = b.cmd("STORE 1 +FLAGS ($Own)")  # the session's own STORE too
    assert own[0].startswith(b"* FLAGS ") and b"$Own" in own[0], own
    a.close()
    b.close()


def test_exists_comes_before_a_fetch_of_a_new_message(account: Account) -> None:
    account.deliver(MSG)
    a, b = _two(account)
    account.deliver(MSG)
    assert b"* 2 EXISTS" in b.cmd("NOOP")
    b.cmd("STORE 2 +FLAGS (\\Flagged)")
    out = a.cmd("NOOP")
    assert out.index(b"* 2 EXISTS") < next(i for i, x in enumerate(out) if b"2 FETCH" in x), out
    a.close()
    b.close()


def test_nothing_but_the_tagged_answer_follows_bye(account: Account) -> None:
    account.deliver(MSG)
    account.deliver(MSG)
    a, b = _two(account)
    b.cmd("STORE 1 +FLAGS (\\Deleted)")
    b.cmd("EXPUNGE")
    out = a.cmd("LOGOUT")
    bye = next(i for i, line in enumerate(out) if line.startswith(b"* BYE"))
    assert out[bye + 1:] == [out[-1]] and b"OK" in out[-1], out
    assert b"* 1 EXPUNGE" in out[:bye]
    a.close()
    b.close()


# -- UIDVALIDITY never repeats for a name (RFC 3501 §2.3.1.1)

def recreate_rounds(r: Raw, rounds: int) -> tuple[int, set[int]]:
    """Delete, create, append, fetch and search one name ``rounds`` times: wrong answers."""
    wrong = 0
    seen: set[int] = set()
    r.cmd("CREATE probe")
    for n in range(rounds):
        assert r.cmd("DELETE probe")[-1].split()[1] == b"OK"
        assert r.cmd("CREATE probe")[-1].split()[1] == b"OK"
        body = b"Subject: round%d\r\n\r\nbody of round %d\r\n" % (n, n)
        r.cmd(b"APPEND probe {%d+}\r\n" % len(body) + body)
        out = r.cmd("SELECT probe")
        validity = next(int(x.split()[3].rstrip(b"]")) for x in out if b"UIDVALIDITY" in x)
        fetched = r.cmd("FETCH 1 BODY.PEEK[TEXT]")
        found = r.cmd(f"UID SEARCH SUBJECT round{n}")
        ok = (validity not in seen and fetched[1] == b"body of round %d" % n
              and fetched[-1].split()[1] == b"OK" and found[0] == b"* SEARCH 1")
        wrong += not ok
        seen.add(validity)
        r.cmd("UNSELECT")
    return wrong, seen


def test_recreated_mailbox_never_serves_the_old_ones_data(raw: Raw) -> None:
    wrong, seen = recreate_rounds(raw, 150)
    assert wrong == 0
    assert len(seen) == 150


# -- subscriptions are names (RFC 3501 §6.3.6-6.3.9, RFC 5258)

def test_subscriptions_are_names_apart_from_mailboxes(raw: Raw) -> None:
    assert raw.cmd("CREATE a/b/c")[-1].split()[1] == b"OK"
    assert raw.cmd("LSUB \"\" a*")[:-1] == []  # CREATE subscribes nothing, parents neither
    raw.cmd("SUBSCRIBE a/b/c")
    raw.cmd("SUBSCRIBE gone")
    assert raw.cmd("LSUB \"\" a/%")[:-1] == [b'* LSUB (\\Noselect) "/" a/b']
    assert b'* LSUB () "/" gone' in raw.cmd('LSUB "" *')  # no mailbox needed
    raw.cmd("CREATE gone")
    raw.cmd("DELETE gone")  # the subscription stays (§6.3.6: MUST NOT remove it)
    out = raw.cmd('LIST (SUBSCRIBED) "" gone')
    assert out[0] == b'* LIST (\\NonExistent \\Subscribed) "/" gone', out
    assert raw.cmd("UNSUBSCRIBE gone")[-1].split()[1] == b"OK"
    assert raw.cmd("UNSUBSCRIBE never-was")[-1].split()[1] == b"OK"
    out = raw.cmd('LIST (SUBSCRIBED RECURSIVEMATCH) "" a/%')
    assert out[0] == b'* LIST (\\HasChildren) "/" a/b ("CHILDINFO" ("SUBSCRIBED"))', out
    out = raw.cmd('LIST "" a/b/% RETURN (SUBSCRIBED CHILDREN)')
    assert out[0] == b'* LIST (\\HasNoChildren \\Subscribed) "/" a/b/c', out


@pytest.mark.parametrize("command", ['LIST (RECURSIVEMATCH REMOTE) "" ""',
                                     'LIST (RECURSIVEMATCH) "" "*"',
                                     'LIST "" "" RETURN (imaptest)',
                                     'LIST (imaptest) "" ""'])
def test_list_options_that_are_errors(raw: Raw, command: str) -> None:
    assert raw.cmd(command)[-1].split()[1] == b"BAD"


# -- section numbers through message/rfc822 (RFC 3501 §6.4.5)

INNER = (b"From: sub@example.org\r\nSubject: submsg\r\n"
         b"Content-Type: multipart/digest; boundary=\"foo\"\r\n\r\nprologue\r\n\r\n"
         b"--foo\r\n\r\nFrom: m1@example.com\r\nSubject: m1\r\n\r\nm1 body\r\n"
         b"--foo\r\nX-Mime: m2 header\r\n\r\nFrom: m2@example.com\r\nSubject: m2\r\n\r\n"
         b"m2 body\r\n--foo--\r\n")
FORWARD = (b"From: user@example.org\r\nMime-Version: 1.0\r\nContent-Type: message/rfc822\r\n"
           b"\r\n" + INNER)


def _section(raw: Raw, section: str) -> bytes:
    out = raw.cmd(f"FETCH 1 BODY.PEEK[{section}]")
    assert out[-1].split()[1] == b"OK", out
    text = b"\r\n".join(out[:-1])
    head, _, rest = text.partition(b"}\r\n")
    return rest[:int(head.rsplit(b"{", 1)[1])]


def test_parts_of_an_encapsulated_message(account: Account, raw: Raw) -> None:
    account.deliver(FORWARD)
    raw.cmd("SELECT INBOX")
    assert _section(raw, "1") == INNER  # the whole encapsulated message
    assert _section(raw, "1.HEADER").startswith(b"From: sub@example.org")
    assert _section(raw, "1.TEXT").startswith(b"prologue")
    assert _section(raw, "1.1") == b"From: m1@example.com\r\nSubject: m1\r\n\r\nm1 body"
    assert _section(raw, "1.2.MIME") == b"X-Mime: m2 header\r\n\r\n"
    assert _section(raw, "1.2.HEADER") == b"From: m2@example.com\r\nSubject: m2\r\n\r\n"
    assert _section(raw, "1.2.TEXT") == b"m2 body"


# -- ENVELOPE groups and routes, SEARCH through comments (RFC 3501 §7.4.2, §6.4.4)

GROUPS = (b"From: user@example.org (Real Name)\r\n"
          b"To: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\r\n"
          b"Cc: group:;, group2: (foo) ;\r\nSubject: groups\r\n\r\nbody\r\n")
ROUTED = b"From: <user-from (comment)@ (comment) example.org>\r\nTo: <@route:u@d>\r\n\r\nx\r\n"


def test_envelope_keeps_groups_routes_and_comment_names(account: Account, raw: Raw) -> None:
    account.deliver(GROUPS)
    account.deliver(ROUTED)
    raw.cmd("SELECT INBOX")
    out = raw.cmd("FETCH 1:2 ENVELOPE")
    assert (b'(("Real Name" NIL "user" "example.org")) (("Real Name" NIL "user" "example.org"))'
            in out[0]), out[0]
    assert (b'((NIL NIL "group" NIL)(NIL NIL "g1" "d1.org")(NIL NIL "g2" "d2.org")'
            b'(NIL NIL NIL NIL)(NIL NIL "group2" NIL)(NIL NIL "g3" "d3.org")'
            b'(NIL NIL NIL NIL)) ((NIL NIL "group" NIL)(NIL NIL NIL NIL)'
            b'(NIL NIL "group2" NIL)(NIL NIL NIL NIL))') in out[0], out[0]
    assert b'((NIL "@route" "u" "d"))' in out[1], out[1]
    assert raw.cmd("SEARCH FROM user-from@example.org")[0] == b"* SEARCH 2"
    assert raw.cmd("SEARCH TO g3@d3.org")[0] == b"* SEARCH 1"


# -- atoms and mailbox names (RFC 3501 §9)

def test_an_atom_may_hold_an_open_bracket(raw: Raw) -> None:
    out = raw.cmd("SELECT !#$&'+,-.0123456789:;<=>?@^_`|[}")
    assert out[-1].split()[1] == b"NO", out  # well-formed, no such mailbox
    out = raw.cmd("LIST \"\" !#$&'+,-.0123456789:;<=>?@^_`|[}%*")
    assert out[-1].split()[1] == b"OK", out


# -- RECENT (RFC 3501 §2.3.2, §6.3.2, §6.3.10)

def test_recent_in_examine_and_status(account: Account) -> None:
    account.deliver(MSG)
    account.deliver(MSG)
    r, other = Raw(account.port), Raw(account.port)
    r.login(account)
    other.login(account)
    assert b"* 2 RECENT" in r.cmd("EXAMINE INBOX")  # reported, not claimed
    r.cmd("CLOSE")
    assert other.cmd("STATUS INBOX (RECENT)")[0] == b"* STATUS INBOX (RECENT 2)"
    assert b"* 2 RECENT" in r.cmd("SELECT INBOX")  # claimed now
    assert other.cmd("STATUS INBOX (RECENT)")[0] == b"* STATUS INBOX (RECENT 0)"
    account.deliver(MSG)  # arrives while r has it selected: r claims it
    assert b"* 3 EXISTS" in r.cmd("NOOP")
    assert other.cmd("STATUS INBOX (RECENT)")[0] == b"* STATUS INBOX (RECENT 0)"
    r.close()
    other.close()


def test_a_long_selected_session_keeps_no_record_of_each_message_it_claimed(
        account: Account) -> None:
    """The store's side of a session's claim (``Watch.recent``) is handed over when the
    session takes the message in; it used to keep every uid a long IDLE ever saw (a
    soak's tracemalloc: +0.5 MiB in 20 minutes on one session, without bound)."""
    r = Raw(account.port)
    r.login(account)
    r.cmd("SELECT INBOX")
    for _ in range(30):
        account.deliver(MSG)
    assert b"* 30 RECENT" in r.cmd("NOOP")
    mail = account.twin.service.mail
    watches = [w for idx in mail._indexes.values() for w in idx.watches]
    assert watches and all(not w.recent for w in watches)
    out = r.cmd("FETCH 1:* FLAGS")
    assert sum(b"\\Recent" in line for line in out) == 30  # still recent to the session
    r.close()


# -- a client that goes away during IDLE (RFC 2177)

def test_disconnect_during_idle_leaves_no_unretrieved_task(
        account: Account, caplog: pytest.LogCaptureFixture) -> None:
    import gc
    import struct
    import time

    for _ in range(5):
        r = Raw(account.port)
        r.login(account)
        r.cmd("SELECT INBOX")
        r.sock.sendall(b"i IDLE\r\n")
        assert r.readline().startswith(b"+")
        r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        r.sock.close()  # a reset, as a client killed mid-IDLE
        account.deliver(MSG)
    time.sleep(0.5)

    async def collect() -> None:
        gc.collect()
    account.twin.call(collect())
    assert "never retrieved" not in caplog.text, caplog.text


# -- BODYSTRUCTURE parameters to a client without UTF8=ACCEPT (RFC 2231, RFC 6855)

EURO = (b"From: a@example.org\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
        b"Content-Type: text/plain\r\n\r\nsee attached\r\n--B\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment; filename*=utf-8''%E2%82%AC%20rates.txt\r\n\r\n"
        b"xx\r\n--B--\r\n")


def test_bodystructure_keeps_8bit_parameters_rfc2231_encoded(account: Account, raw: Raw) -> None:
    account.deliver(EURO)
    raw.cmd("SELECT INBOX")
    out = raw.cmd("FETCH 1 BODYSTRUCTURE")
    assert b"\"filename*\" \"utf-8''%E2%82%AC%20rates.txt\"" in out[0], out
    assert all(line.isascii() for line in out), out
    raw.cmd("ENABLE UTF8=ACCEPT")
    out = raw.cmd("FETCH 1 BODYSTRUCTURE")
    assert '"filename" "€ rates.txt"'.encode() in out[0], out


# -- ESEARCH (RFC 4731) and SEARCHRES (RFC 5182)

def test_esearch_and_saved_results(account: Account, raw: Raw) -> None:
    for _ in range(6):
        account.deliver(MSG)
    raw.cmd("SELECT INBOX")
    raw.cmd("STORE 2,4 +FLAGS (\\Seen)")
    assert raw.cmd("SEARCH RETURN () ALL")[0] == b'* ESEARCH (TAG "t4") ALL 1:6'
    assert raw.cmd("UID SEARCH RETURN (MIN MAX COUNT) SEEN")[0] == \
        b'* ESEARCH (TAG "t5") UID MIN 2 MAX 4 COUNT 2'
    assert raw.cmd("SEARCH RETURN (COUNT) 1000")[0] == b'* ESEARCH (TAG "t6") COUNT 0'
    out = raw.cmd("SEARCH RETURN (SAVE) UNSEEN")
    assert len(out) == 1 and out[0].startswith(b"t7 OK")  # SAVE alone answers nothing
    assert raw.cmd("FETCH $ (UID)")[:-1] == [b"* %d FETCH (UID %d)" % (n, n)
                                            for n in (1, 3, 5, 6)]
    assert raw.cmd("SEARCH $ 4:6")[0] == b"* SEARCH 5 6"
    assert raw.cmd("SEARCH RETURN (BOGUS) ALL")[-1].split()[1] == b"BAD"


# -- MULTIAPPEND (RFC 3502)

def test_multiappend_all_or_nothing(raw: Raw) -> None:
    one, two = b"Subject: one\r\n\r\n1\r\n", b"Subject: two\r\n\r\n2\r\n"
    out = raw.cmd(b"APPEND INBOX (\\Seen) {%d+}\r\n%s (\\Flagged) {%d+}\r\n%s"
                  % (len(one), one, len(two), two))
    assert out[-1].split()[1] == b"OK" and b"[APPENDUID " in out[-1], out
    assert out[-1].split()[4] == b"1:2]", out
    # the second message is refused (an unknown system flag): neither is kept
    out = raw.cmd(b"APPEND INBOX {%d+}\r\n%s (\\Bogus) {%d+}\r\n%s"
                  % (len(one), one, len(two), two))
    assert out[-1].split()[1] in (b"NO", b"BAD"), out
    out = raw.cmd("SELECT INBOX")
    assert b"* 2 EXISTS" in out, out
    assert raw.cmd("NOOP")[-1].split()[1] == b"OK"  # still in step with the client
    flags = raw.cmd("FETCH 1:* (FLAGS)")
    assert b"\\Seen" in flags[0] and b"\\Flagged" in flags[1], flags


# -- SORT (RFC 5256, RFC 5957) and THREAD=ORDEREDSUBJECT

def _mail(frm: str, subject: str, date: str, size: int = 0) -> bytes:
    return (f"From: {frm}\r\nSubject: {subject}\r\nDate: {date}\r\n\r\n".encode()
            + b"x" * size + b"\r\n")


def test_sort_and_ordered_subject_threads(account: Account, raw: Raw) -> None:
    account.deliver(_mail("Zed <a@z.org>", "Re: [list] Plans", "Mon, 01 Jan 2024 12:00:00 +0000"))
    account.deliver(_mail("b@y.org", "plans (fwd)", "Mon, 01 Jan 2024 10:00:00 +0000", 500))
    account.deliver(_mail("Amy <c@x.org>", "Other", "Mon, 01 Jan 2024 11:00:00 +0000", 100))
    account.deliver(_mail("d@w.org", "Fwd: Re: plans", "Mon, 01 Jan 2024 13:00:00 +0000"))
    raw.cmd("SELECT INBOX")
    assert raw.cmd("SORT (SUBJECT) UTF-8 ALL")[0] == b"* SORT 3 1 2 4"
    assert raw.cmd("SORT (DATE) UTF-8 ALL")[0] == b"* SORT 2 3 1 4"
    assert raw.cmd("SORT (REVERSE SIZE) UTF-8 ALL")[0] == b"* SORT 2 3 1 4"
    assert raw.cmd("SORT (FROM) UTF-8 ALL")[0] == b"* SORT 1 2 3 4"
    assert raw.cmd("SORT (DISPLAYFROM) UTF-8 ALL")[0] == b"* SORT 3 2 4 1"
    assert raw.cmd("UID SORT (SUBJECT) UTF-8 NOT FROM amy")[0] == b"* SORT 1 2 4"
    assert raw.cmd("THREAD ORDEREDSUBJECT UTF-8 ALL")[0] == b"* THREAD (2 (1)(4))(3)"
    assert raw.cmd("SORT (BOGUS) UTF-8 ALL")[-1].split()[1] == b"BAD"
    # ESORT (RFC 5267 §3): MIN and MAX in sort order, ALL as a set in sort order
    assert raw.cmd("SORT RETURN (MIN MAX ALL COUNT) (SUBJECT) UTF-8 ALL")[0] == \
        b'* ESEARCH (TAG "t11") MIN 3 MAX 4 ALL 3,1:2,4 COUNT 4'


def test_thread_references(account: Account, raw: Raw) -> None:
    account.deliver(b"Message-ID: <a@b>\r\nSubject: s\r\nDate: Mon, 01 Jan 2024 17:00:00 +0000"
                    b"\r\n\r\nx\r\n")
    account.deliver(b"Message-ID: <b@b>\r\nReferences: <a@b> <c@b>\r\nSubject: t\r\n"
                    b"Date: Mon, 01 Jan 2024 15:00:00 +0000\r\n\r\nx\r\n")
    account.deliver(b"Message-ID: <c@b>\r\nReferences: <b@b>\r\nSubject: u\r\n"
                    b"Date: Mon, 01 Jan 2024 16:00:00 +0000\r\n\r\nx\r\n")
    account.deliver(b"Message-ID: <d@b>\r\nIn-Reply-To: <a@b>\r\nSubject: Re: s\r\n"
                    b"Date: Mon, 01 Jan 2024 18:00:00 +0000\r\n\r\nx\r\n")
    raw.cmd("SELECT INBOX")
    # c's guessed parent (a, from b's References) gives way; c->b would be a loop
    assert raw.cmd("THREAD REFERENCES UTF-8 ALL")[0] == b"* THREAD (3 2)(1 4)"
    assert raw.cmd("UID THREAD REFERENCES UTF-8 NOT SUBJECT u")[0] == b"* THREAD (1 (2)(4))"


def test_a_whole_mailbox_thread_and_sort_are_kept_until_it_changes(account: Account,
                                                                     raw: Raw) -> None:
    """The next session's THREAD/SORT of ALL comes from the mailbox's kept index
    (``MailStore.derived``): the same answer, and a new one once the mailbox changes."""
    account.deliver(b"Message-ID: <a@k>\r\nSubject: b\r\n\r\nx\r\n")
    account.deliver(b"Message-ID: <b@k>\r\nIn-Reply-To: <a@k>\r\nSubject: Re: b\r\n\r\nx\r\n")
    account.deliver(b"Message-ID: <c@k>\r\nSubject: a\r\n\r\nx\r\n")
    raw.cmd("SELECT INBOX")
    assert raw.cmd("THREAD REFERENCES UTF-8 ALL")[0] == b"* THREAD (1 2)(3)"
    assert raw.cmd("SORT (SUBJECT) UTF-8 ALL")[0] == b"* SORT 3 1 2"
    mail = account.twin.service.mail
    inbox = account.twin.call(mail.mailbox(account.login, "INBOX"))
    assert len(mail.live.indexes[inbox.id].derived) == 2  # both kept
    kept = dict(mail.live.indexes[inbox.id].derived)
    raw.cmd("STORE 1:2 +FLAGS (\\Seen $Read)")  # flags: neither answer depends on them
    assert mail.live.indexes[inbox.id].derived == kept
    other = Raw(account.port)
    other.login(account)
    other.cmd("EXAMINE INBOX")
    assert other.cmd("THREAD REFERENCES UTF-8 ALL")[0] == b"* THREAD (1 2)(3)"
    assert other.cmd("SORT (SUBJECT) UTF-8 ALL")[0] == b"* SORT 3 1 2"
    assert mail.live.indexes[inbox.id].derived == kept  # the same answers, not new ones
    account.deliver(b"Message-ID: <d@k>\r\nReferences: <c@k>\r\nSubject: Re: a\r\n\r\nx\r\n")
    assert not mail.live.indexes[inbox.id].derived  # the change dropped them
    other.cmd("NOOP")
    assert other.cmd("THREAD REFERENCES UTF-8 ALL")[0] == b"* THREAD (1 2)(3 4)"
    assert other.cmd("SORT (SUBJECT) UTF-8 ALL")[0] == b"* SORT 3 4 1 2"
    # a session that has not seen the new message yet keeps its own view's answer
    assert raw.cmd("UID THREAD REFERENCES UTF-8 ALL")[0] == b"* THREAD (1 2)(3)"
    raw.cmd("NOOP")
    assert raw.cmd("THREAD REFERENCES UTF-8 ALL")[0] == b"* THREAD (1 2)(3 4)"
    raw.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
    raw.cmd("EXPUNGE")  # the set changed: the answers go
    assert not mail.live.indexes[inbox.id].derived
    assert raw.cmd("THREAD REFERENCES UTF-8 ALL")[0] == b"* THREAD (1)(2 3)"
    other.close()


def test_within_older_younger(account: Account, raw: Raw) -> None:
    old = b"Subject: old\r\n\r\nx\r\n"
    raw.cmd(b'APPEND INBOX "01-Jan-2020 10:00:00 +0000" {%d+}\r\n%s' % (len(old), old))
    account.deliver(MSG)
    raw.cmd("SELECT INBOX")
    assert raw.cmd("SEARCH YOUNGER 3600")[0] == b"* SEARCH 2"
    assert raw.cmd("SEARCH OLDER 3600")[0] == b"* SEARCH 1"
    assert raw.cmd("SEARCH OLDER x")[-1].split()[1] == b"BAD"


# -- BINARY (RFC 3516)

def test_fetch_binary_decodes_and_binary_append_is_stored_7bit(raw: Raw) -> None:
    msg = (b"From: a@example.org\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n  aGVs \r\nbG8=\r\n--B\r\n"
           b"Content-Transfer-Encoding: quoted-printable\r\n\r\nfoo=3Dbar  \r\nx=\r\ny\r\n"
           b"--B\r\nContent-Type: application/octet-stream\r\n"
           b"Content-Transfer-Encoding: binary\r\n\r\n\x00\x01\r\x02\r\n--B--\r\n")
    raw.sock.sendall(b"a APPEND INBOX ~{%d}\r\n" % len(msg))
    assert raw.readline().startswith(b"+")
    raw.sock.sendall(msg + b"\r\n")
    line = raw.readline()
    assert line.startswith(b"a OK"), line
    raw.cmd("SELECT INBOX")
    body3 = _section(raw, "3")
    assert b"\x00" not in body3 and body3.strip() == b"AAENAg=="  # stored as base64
    out = raw.cmd("FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1] BINARY.PEEK[2])")
    assert out[0] == b"* 1 FETCH (BINARY.SIZE[1] 5 BINARY[1] {5}", out
    assert out[1:4] == [b"hello BINARY[2] {11}", b"foo=bar", b"xy)"], out
    out = raw.cmd("FETCH 1 (BINARY.PEEK[3]<1.2>)")
    assert out[0] == b"* 1 FETCH (BINARY[3]<1> ~{2}", out  # not clean text: a literal8
