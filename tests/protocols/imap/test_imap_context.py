"""CONTEXT=SEARCH / CONTEXT=SORT (RFC 5267) and PARTIAL (RFC 9394): results kept up to
date, ranges of results, and every malformed option refused before anything runs."""

from __future__ import annotations

import pytest

from protocols.imap.errors import ImapError
from protocols.imap.returns import Partial, parse_partial
from tests.protocols.imap.conftest import Account
from tests.protocols.imap.test_imap_catenate import cmd, login
from tests.protocols.imap.test_imap_hostile import Raw


def msg(n: int, body: str = "plain") -> bytes:
    return (f"From: s{n}@example.org\r\nSubject: m{n}\r\nDate: Mon, {n} Jan 2024 10:00:00 +0000"
            f"\r\n\r\n{body} {n}\r\n").encode()


def selected(acc: Account, count: int = 5, body: str = "plain") -> Raw:
    for n in range(1, count + 1):
        acc.deliver(msg(n, body))
    r = login(acc)
    assert cmd(r, "s", b"SELECT INBOX")[-1].startswith(b"s OK")
    return r


def esearch(lines: list[bytes]) -> list[bytes]:
    return [line for line in lines if line.startswith(b"* ESEARCH")]


def test_partial_picks_positions_from_either_end() -> None:
    nums = [10, 20, 30, 40, 50]
    assert parse_partial("4:2") == Partial(2, 4)
    assert Partial(2, 4).pick(nums) == [20, 30, 40]
    assert parse_partial("-1:-2") == Partial(-2, -1)
    assert Partial(-2, -1).pick(nums) == [40, 50]
    assert Partial(-9, -4).pick(nums) == [10, 20]
    assert Partial(-9, -7).pick(nums) == []
    assert Partial(6, 9).pick(nums) == []


@pytest.mark.parametrize("text", ["1", "1:*", "*:1", "0:1", "-1:2", "1:-2", "1:99999999999",
                                  "1:4294967296", "a:b", "", "1:2:3", "--1:-2"])
def test_partial_refuses_malformed_ranges(text: str) -> None:
    with pytest.raises(ImapError) as err:
        parse_partial(text)
    assert err.value.status == "BAD"


def test_search_and_sort_partial_over_the_wire(account: Account) -> None:
    r = selected(account)
    assert esearch(cmd(r, "a", b"SEARCH RETURN (PARTIAL 2:3) 1:2,4:5")) == [
        b'* ESEARCH (TAG "a") PARTIAL (2:3 2,4)']
    assert esearch(cmd(r, "b", b"SEARCH RETURN (PARTIAL -1:-2 COUNT) ALL")) == [
        b'* ESEARCH (TAG "b") PARTIAL (-2:-1 4:5) COUNT 5']
    assert esearch(cmd(r, "c", b"UID SEARCH RETURN (PARTIAL 9:9) ALL")) == [
        b'* ESEARCH (TAG "c") UID PARTIAL (9:9 NIL)']
    assert esearch(cmd(r, "d", b"SORT RETURN (PARTIAL 1:3) (REVERSE DATE) US-ASCII ALL")) == [
        b'* ESEARCH (TAG "d") PARTIAL (1:3 5,4,3)']
    for bad in (b"SEARCH RETURN (PARTIAL) ALL", b"SEARCH RETURN (PARTIAL 1:*) ALL",
                b"SEARCH RETURN (PARTIAL 1:2 PARTIAL 3:4) ALL", b"SEARCH RETURN (BOGUS) ALL",
                b"SORT RETURN (PARTIAL 1) (DATE) US-ASCII ALL"):
        assert cmd(r, "x", bad)[-1].startswith(b"x BAD"), bad
    r.alive()


def other_session(acc: Account) -> Raw:
    o = login(acc)
    assert cmd(o, "s", b"SELECT INBOX")[-1].startswith(b"s OK")
    return o


def test_updates_follow_other_sessions_changes(account: Account) -> None:
    r = selected(account, body="needle")
    o = other_session(account)
    assert esearch(cmd(r, "u1", b"SEARCH RETURN (UPDATE ALL) BODY needle SEEN")) == [
        b'* ESEARCH (TAG "u1")']
    assert cmd(o, "a", b"STORE 2,4 +FLAGS (\\Seen)")[-1].startswith(b"a OK")
    assert esearch(cmd(r, "n1", b"NOOP")) == [b'* ESEARCH (TAG "u1") ADDTO (0 2,4)']
    assert cmd(o, "b", b"STORE 2 -FLAGS (\\Seen)")[-1].startswith(b"b OK")
    assert cmd(o, "c", b"STORE 5 +FLAGS (\\Seen \\Deleted)")[-1].startswith(b"c OK")
    assert esearch(cmd(r, "n2", b"NOOP")) == [
        b'* ESEARCH (TAG "u1") REMOVEFROM (0 2) ADDTO (0 5)']
    assert cmd(o, "d", b"EXPUNGE")[-1].startswith(b"d OK")
    lines = cmd(r, "n3", b"NOOP")
    removal = lines.index(b'* ESEARCH (TAG "u1") REMOVEFROM (0 5)')
    assert removal < lines.index(b"* 5 EXPUNGE"), lines  # while 5 still means it
    account.deliver(msg(6, "needle"))
    assert cmd(o, "e0", b"NOOP")[-1].startswith(b"e0 OK")
    assert cmd(o, "e", b"UID STORE 6 +FLAGS (\\Seen)")[-1].startswith(b"e OK")
    lines = cmd(r, "n4", b"NOOP")
    assert lines.index(b"* 5 EXISTS") < lines.index(b'* ESEARCH (TAG "u1") ADDTO (0 5)'), lines
    assert cmd(r, "cu", b'CANCELUPDATE "u1"')[-1].startswith(b"cu OK")
    assert cmd(o, "f", b"STORE 1 +FLAGS (\\Seen)")[-1].startswith(b"f OK")
    assert esearch(cmd(r, "n5", b"NOOP")) == []
    assert cmd(r, "cu2", b'CANCELUPDATE "u1"')[-1].startswith(b"cu2 BAD")


def test_a_sequence_set_program_is_searched_whole_again(account: Account) -> None:
    r = selected(account, count=3)
    assert esearch(cmd(r, "u", b"UID SEARCH RETURN (UPDATE) 2:*")) == [
        b'* ESEARCH (TAG "u") UID']
    account.deliver(msg(4))
    lines = cmd(r, "n", b"NOOP")
    assert esearch(lines) == [b'* ESEARCH (TAG "u") UID ADDTO (0 4)'], lines


def test_updates_arrive_while_idling(account: Account) -> None:
    r = selected(account, count=2)
    assert esearch(cmd(r, "u", b"SEARCH RETURN (UPDATE) FLAGGED")) == [b'* ESEARCH (TAG "u")']
    o = other_session(account)
    r.send(b"i IDLE\r\n")
    assert r.line().startswith(b"+")
    assert cmd(o, "a", b"STORE 1 +FLAGS (\\Flagged)")[-1].startswith(b"a OK")
    seen = [r.line() for _ in range(2)]
    assert b'* ESEARCH (TAG "u") ADDTO (0 1)' in seen, seen
    r.send(b"DONE\r\n")
    assert r.until(b"i")[-1].startswith(b"i OK")


def test_updates_are_bounded_and_refused_where_not_offered(account: Account) -> None:
    r = selected(account, count=2)
    for n in range(16):
        lines = cmd(r, f"t{n}", b"SEARCH RETURN (UPDATE) SEEN")
        assert not any(b"NOUPDATE" in line for line in lines)
    lines = cmd(r, "t16", b"SEARCH RETURN (UPDATE) SEEN")
    assert lines[-1].startswith(b"t16 OK") and b'* NO [NOUPDATE "t16"]' in lines[0], lines
    lines = cmd(r, "t0", b"SEARCH RETURN (UPDATE) FLAGGED")  # a tag reused replaces its own
    assert not any(b"NOUPDATE" in line for line in lines)
    lines = cmd(r, "p", b"SEARCH RETURN (UPDATE PARTIAL 1:2) ALL")
    assert any(b'NO [NOUPDATE "p"]' in line for line in lines), lines
    lines = cmd(r, "q", b"SORT RETURN (UPDATE) (DATE) UTF-8 ALL")
    assert any(b'NO [NOUPDATE "q"]' in line for line in lines), lines
    assert cmd(r, "c", b"CANCELUPDATE " + b" ".join(b"t%d" % n for n in range(17)))[-1] \
        .startswith(b"c BAD")
    # closing the mailbox ends its updates
    assert cmd(r, "x", b"UNSELECT")[-1].startswith(b"x OK")
    assert cmd(r, "y", b"SELECT INBOX")[-1].startswith(b"y OK")
    assert cmd(r, "z", b'CANCELUPDATE "t1"')[-1].startswith(b"z BAD")


def test_sort_updates_carry_positions(account: Account) -> None:
    r = selected(account)  # dated 1..5 Jan: REVERSE DATE is 5 4 3 2 1
    o = other_session(account)
    assert esearch(cmd(r, "u", b"SORT RETURN (UPDATE ALL) (REVERSE DATE) UTF-8 UNSEEN")) == [
        b'* ESEARCH (TAG "u") ALL 5,4,3,2,1']
    assert cmd(o, "a", b"STORE 4 +FLAGS (\\Seen)")[-1].startswith(b"a OK")
    assert esearch(cmd(r, "n1", b"NOOP")) == [b'* ESEARCH (TAG "u") REMOVEFROM (2 4)']
    account.deliver(msg(9))  # the newest: first in REVERSE DATE
    lines = cmd(r, "n2", b"NOOP")
    assert esearch(lines) == [b'* ESEARCH (TAG "u") ADDTO (1 6)'], lines
    assert cmd(o, "b0", b"NOOP")[-1].startswith(b"b0 OK")
    assert cmd(o, "b", b"STORE 3 +FLAGS (\\Deleted)")[-1].startswith(b"b OK")
    assert cmd(o, "c", b"EXPUNGE")[-1].startswith(b"c OK")
    lines = cmd(r, "n3", b"NOOP")  # list 6 5 3 2 1: message 3 was third
    assert lines.index(b'* ESEARCH (TAG "u") REMOVEFROM (3 3)') < lines.index(b"* 3 EXPUNGE")
    for n in range(3):  # four SORT contexts at most
        assert not any(b"NOUPDATE" in x for x in cmd(r, f"v{n}", b"SORT RETURN (UPDATE) "
                                                        b"(SIZE) UTF-8 ALL"))
    assert any(b'NO [NOUPDATE "w"]' in x for x in cmd(r, "w", b"SORT RETURN (UPDATE) (SIZE) "
                                                               b"UTF-8 ALL"))
