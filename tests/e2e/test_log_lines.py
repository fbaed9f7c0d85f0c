"""Nothing a client sends can forge a line in the twin's log (issue #15, item 10).

An IMAP LOGIN whose login is a literal may carry an LF; logged raw, the rest
of it became a line of its own, indistinguishable from the twin's.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Callable

from core import logsafe
from tests.twins import TwinProcess

FORGED = "2026-01-01 00:00:00,000 ERROR   twin.forged: the owner deleted everything"


def test_a_login_with_a_line_feed_stays_on_its_line(twins: Callable[..., TwinProcess]) -> None:
    alice = twins("alice")
    login = f"mallory\n{FORGED}\r".encode()
    with socket.create_connection(("127.0.0.1", alice.port("imap")), timeout=10) as s:
        f = s.makefile("rwb")
        f.readline()  # greeting
        f.write(b"a1 LOGIN {%d}\r\n" % len(login))
        f.flush()
        assert f.readline().startswith(b"+")
        f.write(login + b" wrong\r\n")
        f.flush()
        assert f.readline().startswith(b"a1 NO")
        f.write(b"a2 LOGOUT\r\n")
        f.flush()
        f.readline()
    log = alice.log()
    assert "mallory" in log  # the attempt is logged...
    assert not [line for line in log.splitlines() if line.startswith(FORGED[:23])]  # ...on one line
    assert "mallory\\x0a2026" in log


def test_one_line_escapes_every_control_character() -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "login %s from %s",
                               ("a\nb\r\x00c\u2028", "1.2.3.4"), None)
    assert logsafe.OneLine().filter(record)
    assert record.getMessage() == "login a\\x0ab\\x0d\\x00c\\x2028 from 1.2.3.4"


def test_one_line_per_smtp_transaction_with_id_parties_refusals_and_result(
        twins: Callable[..., TwinProcess]) -> None:
    import re
    import smtplib

    alice = twins("alice")
    with smtplib.SMTP("127.0.0.1", alice.port("smtp"), timeout=30) as smtp:
        smtp.ehlo("mx.example.org")
        smtp.mail("someone@example.org")
        assert smtp.rcpt(alice.login)[0] == 250
        assert smtp.rcpt("nobody@alice.localhost")[0] == 550
        code, answer = smtp.data(b"From: someone@example.org\r\nSubject: hi\r\n\r\nhello\r\n")
    assert code == 250
    queue_id = answer.decode().rsplit(" id ", 1)[1]
    [line] = [x for x in alice.log().splitlines() if f"id={queue_id}" in x]
    assert "INFO" in line and "smtp in:" in line, line
    assert re.search(r"client=127\.0\.0\.1 helo=mx\.example\.org tls=no "
                     r"from=<someone@example\.org> to=<alice@alice\.localhost> "
                     r"refused=nobody@alice\.localhost \(550\) size=\d+ "
                     r'result="250 2\.0\.0 OK id [0-9a-f]+" ms=\d+', line), line


async def _send(port: int, mail_from: str, rcpt: str, login: tuple[str, str] | None) -> str:
    """One message; the SMTP queue id from the 250 (``OK id QID``)."""
    import aiosmtplib

    from tests.protocols.smtp.helpers import client_tls

    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=login is not None,
                               tls_context=client_tls()) as smtp:
        if login is not None:
            await smtp.login(*login)
        _, reply = await smtp.sendmail(mail_from, [rcpt],
                                       f"From: <{mail_from}>\r\nSubject: trace\r\n\r\nhi\r\n")
    return reply.rsplit(" id ", 1)[1].strip()


def _one(pattern: str, text: str) -> re.Match[str]:
    found = list(re.finditer(pattern, text, re.M))
    assert len(found) == 1, (pattern, [m.group(0) for m in found], text[-3000:])
    return found[0]


def _filed_uid(log: str, seq: int) -> int:
    """The uid the filing line gave journal seq ``seq`` (``filed journal #a,#b as uid u:v``)."""
    for m in re.finditer(r"filed journal (\S+) for \S+ as uid (\d+)(?::\d+)?", log):
        seqs = [int(s) for s in re.findall(r"#(\d+)", m.group(1))]
        if seq in seqs:
            return int(m.group(2)) + seqs.index(seq)
    raise AssertionError(f"journal #{seq} was never filed: {log[-3000:]}")


async def test_one_delivery_is_followed_by_its_ids_from_smtp_to_the_idle_push(
        twins: Callable[..., TwinProcess]) -> None:
    """Issue 21 item 4: the SMTP line names the journal seq (or the envelope to
    another twin), the filing line maps that seq to a uid, the IDLE push names the
    uid; on the receiving twin the envelope's uid leads to its journal seq."""
    from tests.imapidle import IdleWatcher

    debug = ["log.level=debug"]
    alice, bob = twins("alice", sets=debug), twins("bob", sets=debug)
    watcher = await IdleWatcher.open(bob.port("imaps"), bob.login, bob.password)
    try:
        # local: SMTP inbound on bob -> bob's journal -> filed -> pushed
        qid = await _send(bob.port("smtp"), "someone@example.com", bob.login, None)
        await watcher.until(1, timeout=20)
        # twin to twin: alice's submission -> envelope -> bob's journal -> filed -> pushed
        qid2 = await _send(alice.port("submission"), alice.login, bob.login,
                           (alice.login, alice.password))
        await watcher.until(2, timeout=20)
        await asyncio.sleep(0.3)  # the push's log line follows the push
    finally:
        await watcher.close()
    blog, alog = bob.log(), alice.log()

    line = _one(rf"smtp in: id={qid} .*$", blog).group(0)
    seq = int(_one(r"journal=\S+#(\d+)", line).group(1))
    uid = _filed_uid(blog, seq)
    assert re.search(rf"imap idle: pushed 1 EXISTS to \S+ in INBOX \(last uid {uid}\)", blog)

    line = _one(rf"smtp submission: id={qid2} .*$", alog).group(0)
    envelope = _one(r"envelope=bob:([0-9a-f]{16})", line).group(1)
    line = _one(rf"mail from twin alice .* envelope={envelope} .*$", blog).group(0)
    seq2 = int(_one(r"journal=\S+#(\d+)", line).group(1))
    uid2 = _filed_uid(blog, seq2)
    assert uid2 == uid + 1
    assert re.search(rf"imap idle: pushed 2 EXISTS to \S+ in INBOX \(last uid {uid2}\)", blog)


async def test_one_line_per_https_request_and_per_peer_envelope(
        twins: Callable[..., TwinProcess]) -> None:
    """Issue 21 item 4: an HTTPS request's line has method, path (never its query),
    status, bytes, ms and client; a received envelope's line has kind, sender, uid
    and the outcome, ``ok`` or the refusal code."""
    import httpx

    alice, bob = twins("alice"), twins("bob", sets=["log.http_requests=false"])
    async with httpx.AsyncClient(verify=False, timeout=30) as http:
        got = await http.get(f"{alice.url}/twin/v1/health?token=s3cret")
        assert got.status_code == 200
        await http.get(f"{bob.url}/twin/v1/health")
        refused = await http.post(f"{alice.url}/twin/v1/envelope", content=b"\x00garbage")
        assert refused.status_code >= 400
    await _send(alice.port("submission"), alice.login, bob.login, (alice.login, alice.password))
    for _ in range(100):  # the outbox delivers behind the 250
        if "peer in: kind=mail.deliver" in bob.log():
            break
        await asyncio.sleep(0.1)
    alog, blog = alice.log(), bob.log()

    line = _one(r"http: GET /twin/v1/health .*$", alog).group(0)
    assert re.search(rf"GET /twin/v1/health 200 {len(got.content)}B \d+ms client=127\.0\.0\.1",
                     line), line
    assert "s3cret" not in alog and "token=" not in alog
    assert "http: " not in blog  # log.http_requests = false
    assert re.search(r"http: POST /twin/v1/envelope 4\d\d ", alog)
    assert re.search(r"peer in: kind=\? from=\S+ uid=\? ms=\d+ outcome=\w+ ", alog)
    assert re.search(r"peer in: kind=mail\.deliver from=alice uid=[0-9a-f]{16} ms=\d+ outcome=ok",
                     blog), blog[-2000:]
