"""BODY[HEADER.FIELDS (...)] and [HEADER.FIELDS.NOT (...)] (RFC 3501 §6.4.5).

``filter_header`` compares field names as ASCII-folded bytes; these cases pin
what a client sees: names match whatever their case, only whole names match,
folded (continued) fields come whole, order is the message's, and the result
always ends with the blank line.
"""

from __future__ import annotations

from protocols.imap.commands.fetch import filter_header

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
