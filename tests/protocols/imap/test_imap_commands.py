"""IMAP4rev1 command groups over real sockets with imaplib and imapclient."""

from __future__ import annotations

import imaplib
import ssl
import time

import imapclient
import pytest

from tests.protocols.imap.conftest import Account

MSG = (b"From: Alice <alice@example.org>\r\nTo: Bob <bob@example.org>\r\n"
       b"Subject: Hello there\r\nDate: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
       b"Message-ID: <m1@example.org>\r\n\r\nThe quick brown fox\r\njumps over\r\n")
MULTI = (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
         b"Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n"
         b"--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nfirst part\r\n"
         b"--B\r\nContent-Type: message/rfc822\r\n\r\n"
         b"From: inner@example.org\r\nSubject: inner\r\n\r\ninner body\r\n"
         b"--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
         b"\r\nAAECAw==\r\n--B--\r\n")


def connect(acc: Account) -> imaplib.IMAP4:
    c = imaplib.IMAP4("127.0.0.1", acc.port)
    c.login(acc.login, acc.password)
    return c


def client(acc: Account) -> imapclient.IMAPClient:
    c = imapclient.IMAPClient("127.0.0.1", port=acc.port, ssl=False, timeout=10)
    c.login(acc.login, acc.password)
    return c


def test_capability_and_login(account: Account) -> None:
    c = imaplib.IMAP4("127.0.0.1", account.port)
    assert "STARTTLS" in c.capabilities and "AUTH=PLAIN" in c.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        c.login(account.login, "wrong")
    typ, _ = c.login(account.login, account.password)
    assert typ == "OK"
    _, caps = c.capability()
    for cap in (b"UIDPLUS", b"MOVE", b"IDLE", b"CONDSTORE", b"QRESYNC", b"SPECIAL-USE",
                b"APPENDLIMIT=", b"LIST-STATUS", b"UTF8=ACCEPT"):
        assert cap in caps[0]
    assert b"QUOTA" not in caps[0]  # no mail.quota: no quota root to announce (RFC 9208)
    c.logout()


def test_authenticate_plain_with_sasl_ir(account: Account) -> None:
    c = imapclient.IMAPClient("127.0.0.1", port=account.port, ssl=False)
    c.plain_login(account.login, account.password)
    assert c.select_folder("INBOX")[b"EXISTS"] == 0
    c.logout()


def test_starttls_and_implicit_tls(account: Account) -> None:
    ctx = ssl.create_default_context(cafile=str(account.twin.data / "tls" / "cert.pem"))
    c = imaplib.IMAP4("127.0.0.1", account.port)
    c.starttls(ctx)
    c.login(account.login, account.password)
    c.logout()
    c2 = imaplib.IMAP4_SSL("127.0.0.1", account.twin.tls_port, ssl_context=ctx)
    assert "STARTTLS" not in c2.capabilities
    c2.login(account.login, account.password)
    c2.logout()


def test_select_fetch_envelope_structure_and_seen(account: Account) -> None:
    account.deliver(MSG, internal_date=1_700_000_000.0)
    c = client(account)
    info = c.select_folder("INBOX")
    assert info[b"EXISTS"] == 1 and info[b"UIDNEXT"] == 2 and b"\\Seen" in info[b"FLAGS"]
    r = c.fetch([1], ["ENVELOPE", "BODYSTRUCTURE", "RFC822.SIZE", "INTERNALDATE", "FLAGS"])[1]
    env = r[b"ENVELOPE"]
    assert env.subject == b"Hello there" and env.from_[0].mailbox == b"alice"
    assert env.to[0].name == b"Bob" and env.message_id == b"<m1@example.org>"
    assert r[b"RFC822.SIZE"] == len(MSG)
    assert r[b"BODYSTRUCTURE"][0] == b"TEXT" and r[b"BODYSTRUCTURE"][7] == 2
    assert r[b"INTERNALDATE"].timestamp() == pytest.approx(1_700_000_000, abs=1)
    assert b"\\Seen" not in r[b"FLAGS"]
    peek = c.fetch([1], ["BODY.PEEK[]"])[1][b"BODY[]"]
    assert peek == MSG and b"\\Seen" not in c.get_flags([1])[1]
    body = c.fetch([1], ["BODY[TEXT]"])[1]
    assert body[b"BODY[TEXT]"] == b"The quick brown fox\r\njumps over\r\n"
    assert b"\\Seen" in c.get_flags([1])[1]
    c.logout()


def test_sections_and_partial_fetch(account: Account) -> None:
    account.deliver(MULTI)
    c = connect(account)
    c.select("INBOX")

    def one(item: str) -> bytes:
        typ, data = c.fetch("1", f"({item})")
        assert typ == "OK", data
        return data[0][1]  # type: ignore[index]
    assert one("BODY.PEEK[1]") == b"first part"
    assert one("BODY.PEEK[1.MIME]") == b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    assert one("BODY.PEEK[2.HEADER]") == b"From: inner@example.org\r\nSubject: inner\r\n\r\n"
    assert one("BODY.PEEK[2.TEXT]") == b"inner body"
    assert one("BODY.PEEK[2.1]") == b"inner body"
    assert one("BODY.PEEK[3]") == b"AAECAw=="
    assert one("BODY.PEEK[HEADER.FIELDS (SUBJECT TO)]") == \
        b"To: b@example.org\r\nSubject: parts\r\n\r\n"
    assert b"Subject" not in one("BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)]")
    assert one("BODY.PEEK[]<0.4>") == b"From"
    assert one("BODY.PEEK[1]<6.100>") == b"part"
    assert one("BODY.PEEK[9]") == b""
    _, data = c.fetch("1", "(BODY.PEEK[]<10.5>)")
    assert b"BODY[]<10>" in data[0][0]  # type: ignore[index]
    _, data = c.fetch("1", "(BODYSTRUCTURE)")
    assert b'"MIXED"' in data[0] and b'"MESSAGE" "RFC822"' in data[0]  # type: ignore[operator]
    assert c.fetch("1", "(RFC822.HEADER)")[1][0][1].startswith(b"From: a@")  # type: ignore[index]
    c.logout()


def test_append_literal_streamed_with_appenduid(account: Account) -> None:
    big = MSG + b"x" * 1_500_000 + b"\r\n"
    c = client(account)
    res = c.append("Drafts", big, flags=[b"\\Draft"], msg_time=None)
    assert b"APPENDUID" in res
    c.select_folder("Drafts")
    got = c.fetch([1], ["BODY.PEEK[]", "FLAGS"])[1]
    assert got[b"BODY[]"] == big and b"\\Draft" in got[b"FLAGS"]
    with pytest.raises(imapclient.exceptions.IMAPClientError, match="TRYCREATE"):
        c.append("Nope", MSG)
    c.logout()


def test_append_nonsync_literal_and_date(account: Account) -> None:
    c = connect(account)
    tag = c._new_tag().decode()
    c.tagged_commands[tag.encode()] = None  # as imaplib's own _command does
    c.send(f'{tag} APPEND INBOX (\\Seen) "05-Jan-2024 10:11:12 +0100" {{{len(MSG)}+}}\r\n'.encode()
           + MSG + b"\r\n")
    typ, data = c._command_complete("APPEND", tag.encode())
    assert typ == "OK" and b"APPENDUID" in data[-1]
    c.select("INBOX")
    _, data = c.fetch("1", "(INTERNALDATE FLAGS)")
    assert b" 5-Jan-2024" in data[0]  # type: ignore[operator]
    when = imaplib.Internaldate2tuple(data[0])  # type: ignore[arg-type]
    assert when is not None and time.mktime(when) == 1704445872  # 09:11:12 UTC
    c.logout()


def test_store_expunge_uidplus(account: Account) -> None:
    for _ in range(5):
        account.deliver(MSG)
    c = client(account)
    c.select_folder("INBOX")
    res = c.add_flags([2, 4], [b"\\Deleted", b"$Work"])
    assert b"$Work" in res[2] and b"\\Deleted" in res[4]
    assert c.remove_flags([4], [b"$Work"])[4] == (b"\\Deleted", b"\\Recent")
    c.set_flags([1], [b"\\Flagged"], silent=True)
    assert c.get_flags([1])[1] == (b"\\Flagged", b"\\Recent")
    c.uid_expunge([2])
    assert c.search("ALL") == [1, 3, 4, 5]
    c.expunge()
    assert c.search("ALL") == [1, 3, 5]
    c.logout()


def test_copy_move_with_copyuid(account: Account) -> None:
    for _ in range(3):
        account.deliver(MSG)
    c = connect(account)
    c.select("INBOX")
    typ, data = c.uid("COPY", "1:2", "Archive")
    assert typ == "OK"
    _, codes = c.response("COPYUID")
    assert codes[0].endswith(b" 1:2 1:2")  # type: ignore[union-attr]
    assert c.uid("MOVE", "3", "Trash")[0] == "OK"
    assert c.select("INBOX")[1] == [b"2"]
    assert c.select("Trash")[1] == [b"1"]
    assert c.select("Archive")[1] == [b"2"]
    typ, data = c.copy("1", "Missing")
    assert typ == "NO" and b"TRYCREATE" in data[0]  # type: ignore[operator]
    c.logout()


def test_search_keys(account: Account) -> None:
    account.deliver(MSG, internal_date=time.mktime((2024, 1, 10, 12, 0, 0, 0, 0, -1)))
    account.deliver(MULTI, flags=["\\Seen"])
    account.deliver("Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nFrom: x@y\r\n"
                    "Content-Type: text/plain; charset=utf-8\r\n\r\nkäse\r\n".encode())
    c = client(account)
    c.select_folder("INBOX")
    assert c.search(["SUBJECT", "hello"]) == [1]
    assert c.search(["FROM", "alice"]) == [1]
    assert c.search(["SEEN"]) == [2]
    assert c.search(["UNSEEN"]) == [1, 3]
    assert c.search(["BODY", "brown fox"]) == [1]
    assert c.search(["TEXT", "inner body"]) == [2]
    assert c.search(["OR", "SEEN", "SUBJECT", "hello"]) == [1, 2]
    assert c.search(["NOT", "SEEN", "LARGER", "100"]) == [1]
    assert c.search(["ON", "10-Jan-2024"]) == [1]
    assert c.search(["SENTBEFORE", "02-Jan-2024"]) == [1]
    assert c.search(["HEADER", "Message-ID", "m1@"]) == [1]
    assert c.search(["UID", "2:*"]) == [2, 3]
    assert c.search(["2:3", "UNSEEN"]) == [3]
    assert c.search(["SUBJECT", "Grüße"], charset="UTF-8") == [3]
    assert c.search(["BODY", "käse"], charset="UTF-8") == [3]
    with pytest.raises(imapclient.exceptions.IMAPClientError):
        c.search(["BOGUS"])
    c.logout()


def test_header_search_across_folds_and_fields(account: Account) -> None:
    """The whole-header fast reject must not hide matches in folded lines."""
    account.deliver(b"Subject: a long\r\n subject line\r\nX-Tag: blue\r\nFrom: x@y\r\n\r\nb\r\n")
    account.deliver(b"Subject: blue\r\nFrom: x@y\r\n\r\nb\r\n")
    c = client(account)
    c.select_folder("INBOX")
    assert c.search(["SUBJECT", "long subject"]) == [1]  # across the fold
    assert c.search(["SUBJECT", "blue"]) == [2]  # not X-Tag's blue
    assert c.search(["HEADER", "X-Tag", "BLUE"]) == [1]
    assert c.search(["SUBJECT", "purple"]) == []
    c.logout()


def test_list_lsub_status_special_use_children(account: Account) -> None:
    c = client(account)
    c.create_folder("Projects/2024")
    folders = {f[2]: f[0] for f in c.list_folders()}
    assert b"\\HasChildren" in folders["Projects"] and b"\\Sent" in folders["Sent"]
    assert [f[2] for f in c.list_folders(pattern="%")] == \
        ["Archive", "Drafts", "INBOX", "Junk", "Projects", "Sent", "Trash"]
    assert [f[2] for f in c.list_folders("Projects/", "%")] == ["Projects/2024"]
    assert "Projects/2024" not in {f[2] for f in c.list_sub_folders()}  # CREATE: no SUBSCRIBE
    c.subscribe_folder("Projects/2024")
    assert {f[2] for f in c.list_sub_folders()} >= {"INBOX", "Projects/2024"}
    c.unsubscribe_folder("Projects/2024")
    assert "Projects/2024" not in {f[2] for f in c.list_sub_folders()}
    assert c.find_special_folder(imapclient.imapclient.SENT) == "Sent"
    st = c.folder_status("INBOX", ["MESSAGES", "UIDNEXT", "UNSEEN", "HIGHESTMODSEQ"])
    assert st[b"MESSAGES"] == 0 and st[b"UIDNEXT"] == 1
    c.rename_folder("Projects", "Work")
    assert c.folder_exists("Work/2024") and not c.folder_exists("Projects")
    with pytest.raises(imapclient.exceptions.IMAPClientError, match=r"INUSE|children"):
        c.delete_folder("Work")
    c.delete_folder("Work/2024")
    c.delete_folder("Work")
    with pytest.raises(imapclient.exceptions.IMAPClientError, match="ALREADYEXISTS"):
        c.create_folder("Sent")
    c.logout()


def test_list_extended_and_list_status(account: Account) -> None:
    account.deliver(MSG)
    c = connect(account)
    typ, data = c._simple_command("LIST", '""', '"*"', "RETURN",
                                  "(SPECIAL-USE STATUS (MESSAGES UNSEEN))")
    typ, data = c._untagged_response(typ, data, "STATUS")
    assert any(b"INBOX (MESSAGES 1 UNSEEN 1)" in d for d in data)  # type: ignore[operator]
    c.untagged_responses.clear()
    typ, data = c._simple_command("LIST", "(SPECIAL-USE)", '""', '"*"')
    typ, data = c._untagged_response(typ, data, "LIST")
    assert len(data) == 5 and all(b"INBOX" not in d for d in data)  # type: ignore[operator]
    typ, data = c._simple_command("CREATE", "Saved", "(USE (\\Archive))")
    assert typ == "OK"
    c.untagged_responses.clear()
    typ, data = c._simple_command("LIST", '""', "Saved")
    typ, data = c._untagged_response(typ, data, "LIST")
    assert b"\\Archive" in data[0]  # type: ignore[operator]
    c.logout()


def test_utf7_and_utf8_mailbox_names(account: Account) -> None:
    c = connect(account)
    assert c.create('"Entw&APw-rfe"')[0] == "OK"  # "Entwürfe" in modified UTF-7
    _, data = c.list('""', '"Entw*"')
    assert data == [b'(\\HasNoChildren) "/" Entw&APw-rfe']
    c.logout()
    c2 = client(account)
    c2.enable("UTF8=ACCEPT")
    c2.folder_encode = False  # imapclient would read UTF-8 names as modified UTF-7
    names = [f[2] for f in c2.list_folders()]
    assert "Entwürfe".encode() in names
    c2.logout()
    c4 = connect(account)
    c4.enable("UTF8=ACCEPT")
    assert c4.create('"日本語"')[0] == "OK"
    c4.logout()
    c3 = client(account)  # without UTF8=ACCEPT the same mailbox comes back in modified UTF-7
    assert "日本語" in [f[2] for f in c3.list_folders()]  # imapclient decodes UTF-7
    c3.logout()


def test_namespace_id_quota(account: Account) -> None:
    account.deliver(MSG)
    c = client(account)
    ns = c.namespace()
    assert ns.personal[0][1] == "/"
    assert c.id_({"name": "test"})[0][:2] == (b"name", b"twin")
    # no limit configured: QUOTA is not advertised (test_imap_dovecot_level covers it)
    c.logout()


def test_condstore_and_qresync(account: Account) -> None:
    for _ in range(3):
        account.deliver(MSG)
    c = client(account)
    c.enable("QRESYNC")
    info = c.select_folder("INBOX")
    validity, highest = info[b"UIDVALIDITY"], info[b"HIGHESTMODSEQ"]
    c.add_flags([1], [b"\\Seen"])
    c.add_flags([2], [b"\\Deleted"])
    c.expunge()
    changed = c.fetch([1, 2], ["FLAGS"], modifiers=[f"CHANGEDSINCE {highest}"])
    assert list(changed) == [1] and changed[1][b"MODSEQ"][0] > highest
    c.unselect_folder()
    c2 = connect(account)
    typ, _ = c2._simple_command("ENABLE", "QRESYNC")
    typ, data = c2._simple_command("SELECT", "INBOX", f"(QRESYNC ({validity} {highest}))")
    assert typ == "OK"
    vanished = c2.untagged_responses.get("VANISHED", [])
    assert vanished == [b"(EARLIER) 2"]
    c2.state = "SELECTED"  # imaplib does not track a SELECT sent by hand
    fetches = c2.untagged_responses.get("FETCH", [])
    assert any(b"UID 1 " in f for f in fetches)  # type: ignore[operator]
    typ, data = c2._simple_command("UID", "STORE", "3", "(UNCHANGEDSINCE 1)", "+FLAGS", "(\\Seen)")
    assert typ == "OK" and b"MODIFIED 3" in data[-1]  # type: ignore[operator]
    c2.logout()
    c.logout()


def test_session_limit(imap_twin: object) -> None:
    from tests.protocols.imap.harness import ThreadTwin
    assert isinstance(imap_twin, ThreadTwin)
    login, pw = imap_twin.new_user()
    server = imap_twin.listener
    server.max_sessions = 2
    try:
        conns = []
        for _ in range(2):
            c = imaplib.IMAP4("127.0.0.1", imap_twin.port)
            c.login(login, pw)
            conns.append(c)
        c = imaplib.IMAP4("127.0.0.1", imap_twin.port)
        with pytest.raises(imaplib.IMAP4.error, match="LIMIT"):
            c.login(login, pw)
        for c in conns:
            c.logout()
    finally:
        server.max_sessions = 50


def test_a_login_never_opens_another_logins_mail(imap_twin: object) -> None:
    """#15.8: each login's mail is its own; no mailbox name reaches another login's."""
    from tests.protocols.imap.harness import ThreadTwin
    assert isinstance(imap_twin, ThreadTwin)
    alice, alice_pw = imap_twin.new_user()
    bob, bob_pw = imap_twin.new_user()
    imap_twin.deliver(alice, b"From: x@example.org\r\nSubject: for alice only\r\n\r\nsecret\r\n")
    a = imaplib.IMAP4("127.0.0.1", imap_twin.port)
    a.login(alice, alice_pw)
    assert a.create("Private")[0] == "OK"
    assert a.select("INBOX")[1] == [b"1"]
    a.logout()
    b = imaplib.IMAP4("127.0.0.1", imap_twin.port)
    b.login(bob, bob_pw)
    typ, listed = b.list()
    assert typ == "OK" and not any(b"Private" in (x or b"") for x in listed)
    assert b.select("INBOX")[1] == [b"0"]
    typ, found = b.search(None, "ALL")
    assert found == [b""]
    for name in ("Private", f'"{alice}/INBOX"', f'"{alice}/Private"', '"../Private"',
                 f'"~{alice}/INBOX"', '"#shared/Private"', f'"Other Users/{alice}/INBOX"'):
        assert b.select(name)[0] == "NO", name
        assert b.status(name, "(MESSAGES)")[0] == "NO", name
    b.logout()
