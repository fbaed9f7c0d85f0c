"""The aiosmtpd handlers: inbound (the port-25 role) and submission.

Both translate SMTP to core calls and leave the decisions to core: which
recipients exist and whether relaying is allowed (``router.check_recipient``),
where each recipient's copy goes (``router.route``). Each hook is wrapped in
``errors.replies`` so any failure becomes exactly one reply line. 250 after
DATA is sent only when ``route`` has returned, i.e. every copy is durable.
``route`` also gets the client's bytes as sent, so that after a 4xx the
client's retry does not give a second copy to the recipients that already
have one (``core.delivered``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
import weakref
from email.utils import make_msgid
from typing import TYPE_CHECKING

from aiosmtpd.smtp import Envelope, Session

from core.routing import (
    Routed,
    domain_of,
    format_datetime_now,
    from_addresses,
    header_values,
    prepend_headers,
    strip_trust_headers,
)
from core.spam import Transaction
from protocols.smtp.errors import SmtpError, replies
from protocols.smtp.policy import Decision, decide
from protocols.smtp.session import Login, TwinSMTP
from protocols.smtp.spam import refuse, strip_spam_headers, summary, verdict_headers
from protocols.smtp.verify import AuthResults, Verifier, from_domains

if TYPE_CHECKING:
    from core.service import Service

log = logging.getLogger("twin.smtp")
QUEUE_IDS_PER_READ = 512


class QueueIds:
    """Random 12-hex-digit queue ids (Received header, 250 reply, logs).

    Read from the OS 512 at a time: ``os.urandom`` gives up the GIL for its
    syscall, and on the busy SMTP thread getting it back cost about 7 % of
    that thread's time under load (py-spy --idle, bench/smtp.py)."""

    def __init__(self) -> None:
        self._hex, self._at = "", 0

    def next(self) -> str:
        if self._at >= len(self._hex):
            self._hex, self._at = os.urandom(6 * QUEUE_IDS_PER_READ).hex(), 0
        self._at += 12
        return self._hex[self._at - 12:self._at]


def _received(server: TwinSMTP, session: Session, envelope: Envelope, hostname: str,
              queue_id: str) -> str:
    """A Received field (RFC 5321 §4.4) with the RFC 3848 / RFC 6531 protocol name."""
    proto = ("UTF8SMTP" if envelope.smtp_utf8 else "ESMTP") + ("S" if server.tls_active else "") \
        + ("A" if session.authenticated else "")
    helo = (session.host_name or "unknown").replace("(", "").replace(")", "")[:100]
    for_clause = f"\r\n\tfor <{envelope.rcpt_tos[0]}>" if len(envelope.rcpt_tos) == 1 else ""
    return (f"from {helo} ([{server.peer_ip}])\r\n\tby {hostname} (twin) with {proto} "
            f"id {queue_id}{for_clause};\r\n\t{format_datetime_now()}")


class BaseHandler:
    @classmethod
    @functools.cache
    def _hook_names(cls) -> list[str]:
        return [name for name in dir(cls) if name.startswith(("handle_", "auth_"))]

    def __dir__(self) -> list[str]:
        """Only the hooks: aiosmtpd scans the handler (``dir``, ``inspect.getmembers``)
        for every new connection, and that scan was ~2 % of a one-message session."""
        return self._hook_names()

    def __init__(self, service: Service) -> None:
        self.service = service
        self.router = service.router
        conf = service.config
        self.hostname = conf.str("smtp.hostname") or conf.domain
        self.max_recipients = conf.int("smtp.max_recipients")
        self.queue_ids = QueueIds()
        # recipients refused during a transaction, and its spam verdict, for its log line
        self._refused: weakref.WeakKeyDictionary[Envelope, list[str]] = \
            weakref.WeakKeyDictionary()
        # where an accepted message went, for the same line
        self._routed: weakref.WeakKeyDictionary[Envelope, Routed] = weakref.WeakKeyDictionary()
        self._spam: weakref.WeakKeyDictionary[Envelope, str] = weakref.WeakKeyDictionary()

    def _count_ok(self, envelope: Envelope) -> None:
        if len(envelope.rcpt_tos) >= self.max_recipients:
            raise SmtpError(452, "4.5.3", "Too many recipients")

    # Each handler's own RCPT and DATA work (wrapped in ``replies``); the hooks
    # below add what both share: the refused recipients and the one log line.
    role = "smtp"

    async def _rcpt(self, server: TwinSMTP, session: Session, envelope: Envelope,
                    address: str, rcpt_options: list[str]) -> str:
        raise NotImplementedError

    async def _data(self, server: TwinSMTP, session: Session, envelope: Envelope) -> str:
        raise NotImplementedError

    async def handle_RCPT(self, server: TwinSMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        reply = await self._rcpt(server, session, envelope, address, rcpt_options)
        if not reply.startswith("2"):
            self._refused.setdefault(envelope, []).append(f"{address} ({reply[:3]})")
        return reply

    async def handle_DATA(self, server: TwinSMTP, session: Session, envelope: Envelope) -> str:
        started = time.monotonic()
        reply = await self._data(server, session, envelope)
        log.info("%s", transaction_line(self.role, server, session, envelope, reply,
                                         self._refused.pop(envelope, []),
                                         time.monotonic() - started,
                                         self._routed.pop(envelope, None),
                                         self._spam.pop(envelope, None)))
        return reply


def transaction_line(role: str, server: TwinSMTP, session: Session, envelope: Envelope,
                     reply: str, refused: list[str], seconds: float,
                     routed: Routed | None = None, spam: str | None = None) -> str:
    """One log line per SMTP transaction, as Postfix and mox write them: the
    queue id, who sent what to whom, who was refused, the answer, and where the
    message went (``Routed.trace``: the ids the next hops log it under)."""
    queue_id = reply.rsplit(" id ", 1)[1] if " id " in reply else "-"
    login = session.auth_data.login if isinstance(session.auth_data, Login) else None
    tls = "yes" if server.tls_active else "no"
    parts = [f"{role}: id={queue_id}", f"client={server.peer_ip}",
             f"helo={(session.host_name or '-')[:100]}", f"tls={tls}"]
    if login:
        parts.append(f"login={login}")
    parts += [f"from=<{envelope.mail_from or ''}>",
              "to=" + (",".join(f"<{r}>" for r in envelope.rcpt_tos[:20]) or "-")
              + (f",+{len(envelope.rcpt_tos) - 20}" if len(envelope.rcpt_tos) > 20 else "")]
    if refused:
        parts.append("refused=" + ",".join(refused[:20]))
    parts += [f"size={len(envelope.original_content or b'')}", f'result="{reply[:120]}"',
              f"ms={seconds * 1000:.0f}"]
    if routed is not None and (trace := routed.trace()):
        parts.append(trace)
    if spam:  # action/score/filter/symbols (protocols.smtp.spam.summary)
        parts.append(f'spam="{spam}"')
    return " ".join(parts)


class InboundHandler(BaseHandler):
    """Mail from the world for our own domains only: never an open relay."""

    role = "smtp in"

    def __init__(self, service: Service, verifier: Verifier) -> None:
        super().__init__(service)
        self.verifier = verifier
        self.spam = service.spam.filter  # None: no scanning (core.spam)

    # RFC 5321 §4.1.1.3 (RCPT): only our domains, only existing mailboxes
    @replies
    async def _rcpt(self, server: TwinSMTP, session: Session, envelope: Envelope,
                    address: str, rcpt_options: list[str]) -> str:
        self._count_ok(envelope)
        await self.router.check_recipient(address, may_relay=False)  # Forbidden: 550 5.7.1
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    # RFC 5321 §4.1.1.4 (DATA); RFC 8601 (Authentication-Results); protocols.smtp.policy
    @replies
    async def _data(self, server: TwinSMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        # checked as it arrived: a signature covers what the sender sent
        args = (raw, server.peer_ip, session.host_name or "", envelope.mail_from or "")
        results = (await asyncio.to_thread(self.verifier.check, *args)
                   if self.verifier.needs_work(raw, server.peer_ip)
                   else self.verifier.check(*args))
        decision = decide(results, from_domains(raw), await self.router.own_domains())
        if decision.action in ("reject", "defer"):
            log.info("smtp in: refused mail from <%s> (client %s): %s",
                     (envelope.mail_from or "")[:200], server.peer_ip, decision.reason)
            if decision.action == "reject":
                raise SmtpError(550, "5.7.1", decision.reason)
            raise SmtpError(451, "4.7.1", decision.reason)
        queue_id = self.queue_ids.next()
        verdict = None
        if self.spam is not None:  # protocols.smtp.spam: reject/defer raise SmtpError
            verdict = await self.spam.check(raw, Transaction(
                server.peer_ip, session.host_name or "", envelope.mail_from or "",
                tuple(envelope.rcpt_tos), queue_id, self.hostname, results.spf.result,
                results.dmarc.result))
            self._spam[envelope] = summary(verdict)
            refuse(verdict)
            if verdict.action == "junk" and decision.action == "deliver":
                decision = Decision("junk", verdict.reason)
        # RFC 8601 §5: no Authentication-Results under our names but ours
        message = strip_trust_headers(raw, self.hostname, self.service.config.domain)
        headers: list[tuple[str, str]] = []
        headers.append(("Received", _received(server, session, envelope, self.hostname,
                                              queue_id)))
        headers.append(("Authentication-Results", results.header(self.hostname)))
        if verdict is not None:
            message = strip_spam_headers(message, verdict.remove_headers)
            headers += verdict_headers(verdict)
        warning = await self._impersonation(message, results)
        if warning:
            headers.append(("X-Twin-Warning", warning))
        message = prepend_headers(message, headers)
        self._routed[envelope] = await self.router.route(
            envelope.mail_from or "", envelope.rcpt_tos, message, sent=raw,
            junk=decision.action == "junk")
        if decision.action == "junk":
            log.info("smtp in: id=%s filed into Junk: %s", queue_id, decision.reason)
        return f"250 2.0.0 OK id {queue_id}"

    async def _impersonation(self, message: bytes, results: AuthResults) -> str | None:
        """Mail claiming a twin's address must come twin-to-twin or carry its DKIM.

        Every From and Sender address is checked (``from_addresses`` bounds
        them), once per domain: a lookup is per domain anyway."""
        domains: set[str] = set()
        for address in from_addresses(message):
            if domain_of(address) in domains:
                continue
            domains.add(domain_of(address))
            twin = await self.router.twin_for(address)
            if twin is not None and not results.dkim_passed_for(domain_of(address)):
                log.warning("mail claiming to be from twin %s (%s) arrived over SMTP "
                            "without its DKIM signature", twin.name, address)
                return (f"claims to be from twin {twin.name} ({address}) but arrived over "
                        f"plain SMTP without a valid DKIM signature of {domain_of(address)}")
        return None


class SubmissionHandler(BaseHandler):
    """Mail from our own users' clients: authenticated, sent as themselves only."""

    role = "smtp submission"

    @staticmethod
    def _login(session: Session) -> str:
        auth = session.auth_data
        if not isinstance(auth, Login):  # aiosmtpd checks auth first; this is belt and braces
            raise SmtpError(530, "5.7.0", "Authentication required")
        return auth.login

    async def _owned(self, login: str, address: str) -> bool:
        return bool(address) and await self.router.owner_of(address) == login

    # RFC 6409 §6.1 (the submission server checks the sender), RFC 5321 §4.1.1.2
    @replies
    async def handle_MAIL(self, server: TwinSMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        login = self._login(session)
        if not await self._owned(login, address):
            raise SmtpError(553, "5.7.1", f"Sender address <{address}> is not yours "
                            f"(logged in as {login})")
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    # RFC 5321 §4.1.1.3
    @replies
    async def _rcpt(self, server: TwinSMTP, session: Session, envelope: Envelope,
                    address: str, rcpt_options: list[str]) -> str:
        self._login(session)
        self._count_ok(envelope)
        await self.router.check_recipient(address, may_relay=True)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    # RFC 5321 §4.1.1.4; RFC 6409 §8 (the submission server may add Date, Message-ID)
    @replies
    async def _data(self, server: TwinSMTP, session: Session, envelope: Envelope) -> str:
        login = self._login(session)
        message = raw = envelope.original_content or b""
        senders = from_addresses(message)
        if not senders:
            raise SmtpError(550, "5.6.0", "The message has no From header")
        for address in senders:
            if not await self._owned(login, address):
                raise SmtpError(553, "5.7.1", f"From address <{address}> is not yours "
                                f"(logged in as {login})")
        message = strip_trust_headers(message, self.service.config.domain)
        queue_id = self.queue_ids.next()
        headers = [("Received", _received(server, session, envelope, self.hostname, queue_id))]
        if not header_values(message, "date"):
            headers.append(("Date", format_datetime_now()))
        if not header_values(message, "message-id"):
            headers.append(("Message-ID", make_msgid(domain=self.service.config.domain)))
        message = prepend_headers(message, headers)
        self._routed[envelope] = await self.router.route(
            envelope.mail_from or "", envelope.rcpt_tos, message, sent=raw)
        return f"250 2.0.0 OK id {queue_id}"
