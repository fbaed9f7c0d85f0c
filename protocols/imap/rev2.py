"""IMAP4rev2 (RFC 9051) alongside IMAP4rev1: what changes once a client ENABLEs it.

Both are advertised; a session speaks rev1 until ``ENABLE IMAP4rev2``
(RFC 9051 §6.3.1, Appendix E). The differences this server makes then:

- no ``\\Recent`` and no ``RECENT`` responses (Appendix E item 2): the
  session's view keeps no recent set, so neither FETCH FLAGS nor the counts
  name it; STATUS still answers a RECENT item asked for by name;
- SELECT/EXAMINE return a ``LIST`` response with the mailbox's name
  (§6.3.2) and ``OK [CLOSED]`` when another mailbox was open (§7.1);
- SEARCH without RETURN answers with ESEARCH, as ``RETURN (ALL)`` (§6.4.4,
  §7.3.4), never with the old SEARCH response;
- mailbox names are UTF-8, not modified UTF-7 (§5.1), and strings may
  carry UTF-8 (the session's ``utf8`` is on, as with UTF8=ACCEPT's names).

Everything rev2 made base (ESEARCH, SEARCHRES, MOVE, UIDPLUS, NAMESPACE,
UNSELECT, ENABLE, IDLE, LIST-EXTENDED, LIST-STATUS, STATUS=SIZE and DELETED,
BINARY, SPECIAL-USE, LITERAL+ as a superset of LITERAL-) is already offered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.mail import DELIM
from protocols.imap import render
from protocols.imap.commands import args
from protocols.imap.returns import Return

if TYPE_CHECKING:
    from protocols.imap.selected import Selected
    from protocols.imap.session import Session

NAME = "IMAP4rev2"
ALL = Return(frozenset({"ALL"}))


def enabled(s: Session) -> bool:
    return NAME in s.enabled


# RFC 9051 §6.3.2 SELECT (and §6.3.3 EXAMINE): its rev2-only responses
def on_select(s: Session, sel: Selected, name: str) -> None:
    if not enabled(s):
        return
    sel.recent = set()  # Appendix E: \Recent is gone; other sessions' claims are unaffected
    sel.told_recent = 0
    sel.no_recent = True
    s.untagged(b'LIST () "' + DELIM.encode() + b'" '
               + render.astring(args.mailbox_out(s, name), utf8=True))


# RFC 9051 §6.4.4 SEARCH: results come as ESEARCH (§7.3.4)
def search_return(s: Session, ret: Return | None) -> Return | None:
    return ALL if ret is None and enabled(s) else ret
