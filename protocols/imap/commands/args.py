"""Checking command arguments taken from parser tokens (RFC 3501 §9 grammar)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocols.imap import utf7
from protocols.imap.errors import Bad, ImapError, No
from protocols.imap.parser import Atom, String, Token

if TYPE_CHECKING:
    from protocols.imap.session import Session


def count(args: list[Token], least: int, most: int | None = None) -> None:
    if len(args) < least or (most is not None and len(args) > most):
        raise Bad("wrong number of arguments")


def astring(tok: Token) -> str:
    if isinstance(tok, list):
        raise Bad("expected a string, got a list")
    return str(tok)


def atom(tok: Token) -> str:
    if not isinstance(tok, Atom):
        raise Bad("expected an atom")
    return str(tok)


def plist(tok: Token) -> list[Token]:
    if not isinstance(tok, list):
        raise Bad("expected a parenthesised list")
    return tok


def number(tok: Token, *, bits: int = 32) -> int:
    text = atom(tok)
    if not text.isdigit() or len(text) > 20:
        raise Bad(f"expected a number, got {text[:20]!r}")
    value = int(text)
    if value >= 1 << bits:
        raise Bad("number out of range")
    return value


def mailbox(session: Session, tok: Token) -> str:
    """A mailbox name as the store names it: modified UTF-7 decoded unless UTF8=ACCEPT."""
    name = astring(tok)
    if name.upper() == "INBOX":
        return "INBOX"
    if session.utf8:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if not name.isascii():
        raise Bad("8-bit mailbox name without ENABLE UTF8=ACCEPT")
    try:
        return utf7.decode(name)
    except ImapError as exc:  # a well-formed astring naming no possible mailbox (as Dovecot)
        raise No(exc.text, "CANNOT") from None


def mailbox_out(session: Session, name: str) -> str:
    return name if session.utf8 else utf7.encode(name)


def is_string(tok: Token) -> bool:
    return isinstance(tok, String)
