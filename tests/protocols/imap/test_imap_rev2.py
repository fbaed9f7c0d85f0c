"""IMAP4rev2 (RFC 9051) next to IMAP4rev1: the same twin, behaviour chosen by ENABLE."""

from __future__ import annotations

from tests.protocols.imap.conftest import Account
from tests.protocols.imap.test_imap_catenate import cmd, login

MSG = b"From: a@example.org\r\nSubject: s\r\n\r\nbody\r\n"


def test_rev1_until_enabled_then_rev2(account: Account) -> None:
    account.deliver(MSG)
    account.deliver(MSG)
    r = login(account)
    caps = b" ".join(cmd(r, "c", b"CAPABILITY")).split()
    assert b"IMAP4rev1" in caps and b"IMAP4rev2" in caps
    # rev1: RECENT, \Recent, the SEARCH response
    lines = cmd(r, "a", b"SELECT INBOX")
    assert b"* 2 RECENT" in lines and not any(x.startswith(b"* LIST") for x in lines)
    assert b"\\Recent" in b"".join(cmd(r, "b", b"FETCH 1 FLAGS"))
    assert b"* SEARCH 1 2" in cmd(r, "d", b"SEARCH ALL")
    assert cmd(r, "u", b"UNSELECT")[-1].startswith(b"u OK")

    assert b"* ENABLED IMAP4rev2" in cmd(r, "e", b"ENABLE imap4REV2")
    assert cmd(r, "e2", b"ENABLE IMAP4rev2")[0] == b"* ENABLED"  # once only
    lines = cmd(r, "f", b"SELECT INBOX")
    assert not any(b"RECENT" in x for x in lines), lines
    assert b'* LIST () "/" INBOX' in lines
    assert b"\\Recent" not in b"".join(cmd(r, "g", b"FETCH 1:* FLAGS"))
    assert cmd(r, "h", b"SEARCH ALL")[0] == b'* ESEARCH (TAG "h") ALL 1:2'
    assert cmd(r, "i", b"UID SEARCH DELETED")[0] == b'* ESEARCH (TAG "i") UID'
    assert cmd(r, "j", b"SEARCH RETURN (COUNT) ALL")[0] == b'* ESEARCH (TAG "j") COUNT 2'
    account.deliver(MSG)
    lines = cmd(r, "k", b"NOOP")
    assert b"* 3 EXISTS" in lines and not any(b"RECENT" in x for x in lines), lines
    assert b"\\Recent" not in b"".join(cmd(r, "l", b"FETCH 3 FLAGS"))
    assert cmd(r, "m", b"EXAMINE INBOX")[0] == b"* OK [CLOSED] previous mailbox closed"


def test_rev2_mailbox_names_are_utf8(account: Account) -> None:
    r = login(account)
    assert cmd(r, "a", b'CREATE "Entw&APw-rfe"')[-1].startswith(b"a OK")  # rev1: mUTF-7
    assert b"* ENABLED IMAP4rev2" in cmd(r, "e", b"ENABLE IMAP4rev2")
    lines = cmd(r, "b", b'LIST "" "Entw*"')
    assert lines[0] == '* LIST (\\HasNoChildren) "/" "Entwürfe"'.encode(), lines
    assert cmd(r, "c", 'SELECT "Entwürfe"'.encode())[-1].startswith(b"c OK")
