"""BODY[HEADER.FIELDS (...)] and [HEADER.FIELDS.NOT (...)] (RFC 3501 §6.4.5).

``filter_header`` compares field names as ASCII-folded bytes; these cases pin
what a client sees: names match whatever their case, only whole names match,
folded (continued) fields come whole, order is the message's, and the result
always ends with the blank line.
"""

from __future__ import annotations

from protocols.imap.commands.fetch import filter_header
from tests.protocols.imap.conftest import Account
from tests.protocols.imap.test_imap_commands import MSG, connect

HEADER = (b"from: Ann <ann@example.org>\r\n"
          b"X-To: not this\r\n"
          b"To: bob@example.org,\r\n\tcarol@example.org\r\n"
          b"Subject : spaced name\r\n"
          b"X-\xc3\xa9t\xc3\xa9: non-ascii name\r\n"
          b"no colon on this line\r\n"
          b"To: second@example.org\r\n"
          b"\r\n")


def test_named_fields_whole_in_order_any_case() -> None:
    got = filter_header(HEADER, ("TO", "FROM", "SUBJECT"), True)
    assert got == (b"from: Ann <ann@example.org>\r\n"
                   b"To: bob@example.org,\r\n\tcarol@example.org\r\n"
                   b"Subject : spaced name\r\n"
                   b"To: second@example.org\r\n"
                   b"\r\n")


def test_not_keeps_every_other_field() -> None:
    got = filter_header(HEADER, ("to", "From", "subject"), False)
    assert got == b"X-To: not this\r\nX-\xc3\xa9t\xc3\xa9: non-ascii name\r\n\r\n"


def test_nothing_named_is_the_blank_line() -> None:
    assert filter_header(HEADER, ("CC",), True) == b"\r\n"
    assert filter_header(b"", ("CC",), True) == b"\r\n"
    assert filter_header(b"", ("CC",), False) == b"\r\n"


def test_kept_fields_answer_each_field_list_and_die_with_the_mailbox(account: Account) -> None:
    """FETCH keeps the fields it cut out per message (``ImapServer.header_fields``):
    another field list, ``.NOT``, a partial and a re-created mailbox of the same
    name (same uids, new UIDVALIDITY) each get their own answer."""
    c = connect(account)
    c.create("Kept")
    c.append("Kept", None, None, MSG)
    c.select("Kept")

    def fetch(what: str, partial: str = "") -> bytes:
        typ, data = c.fetch("1", f"(BODY.PEEK[{what}]{partial})")
        assert typ == "OK"
        return data[0][1]

    for _ in range(2):  # the second time from what was kept
        assert fetch("HEADER.FIELDS (From)") == b"From: Alice <alice@example.org>\r\n\r\n"
        assert fetch("HEADER.FIELDS (Subject)") == b"Subject: Hello there\r\n\r\n"
        assert fetch("HEADER.FIELDS.NOT (From To Date Message-ID)") == \
            b"Subject: Hello there\r\n\r\n"
        assert fetch("HEADER.FIELDS (Subject)", "<0.7>") == b"Subject"
    c.close()
    c.delete("Kept")
    c.create("Kept")
    c.append("Kept", None, None, MSG.replace(b"From: Alice", b"From: Other"))
    c.select("Kept")
    assert fetch("HEADER.FIELDS (From)") == b"From: Other <alice@example.org>\r\n\r\n"
    c.logout()
