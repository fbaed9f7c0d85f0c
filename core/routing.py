"""Where a message goes: the one routing decision for every path into the twin.

Per recipient, in this order:

1. an address in one of our own domains -> the owner's Inbox (``core.mail``);
2. an address or domain the phonebook resolves to another twin -> one signed
   ``mail.deliver`` envelope per twin through the durable peer outbox (no SMTP
   hop; the receiving twin vouches for the sender in the headers it adds);
3. anything else -> the legacy outbound queue (DKIM-signed SMTP).

Every branch is durable before ``route`` returns, which is what lets the SMTP
adapter answer 250. Adapters call ``check_recipient`` early (at RCPT) and
``route`` once the data is in; the peer layer calls ``receive_from_twin``.

Trust headers (``X-Twin-Verified``, ``X-Twin-Warning`` and an
``Authentication-Results`` naming our domain) are only ever written by this
twin: ``strip_trust_headers`` removes look-alikes that came from outside
(RFC 8601 §5) before we add our own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any, Protocol

from core.delivered import DeliveredLog, message_key
from core.errors import Forbidden, Invalid, NotFound, TwinError, Unavailable
from core.mail.junk import junk_mailbox
from core.mail.mime import MAX_ADDRESS_FIELD, addresses, to_crlf
from core.nativemail import compose
from core.outbound.bounce import Failure
from core.peer.peer import current_envelope
from phonebook.record import TwinRecord

if TYPE_CHECKING:
    from core.config import Config
    from core.db import Database
    from core.mail import MailStore
    from core.outbound import OutboundQueue
    from core.peer import Peer
    from core.users import Users

log = logging.getLogger("twin.routing")
KIND = "mail.deliver"
CACHE_SECONDS = 10.0
TRUST_HEADERS = (b"x-twin-verified", b"x-twin-warning")
MAX_HEADER_BLOCK = 1024 * 1024
MAX_SENDERS = 100  # From and Sender addresses of one message (``from_addresses``)


# -- header helpers (bytes in, bytes out: the body is never re-encoded)

def split_message(message: bytes) -> tuple[list[bytes], bytes]:
    """Header fields (each with its folded continuation lines) and the rest."""
    end = message.find(b"\r\n\r\n")
    if end < 0:
        head, rest = message, b""
        if head.endswith(b"\r\n"):
            head = head[:-2]
    else:
        head, rest = message[:end], message[end + 2:]
    if len(head) > MAX_HEADER_BLOCK:
        raise Invalid("header block too large")
    fields: list[bytes] = []
    for line in head.split(b"\r\n") if head else []:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    return fields, rest if end >= 0 else b"\r\n"


def header_name(field_: bytes) -> bytes:
    return field_.split(b":", 1)[0].strip().lower()


def header_values(message: bytes, name: str) -> list[str]:
    fields, _ = split_message(message)
    wanted = name.lower().encode()
    return [f.split(b":", 1)[1].decode("utf-8", "replace").strip()
            for f in fields if header_name(f) == wanted and b":" in f]


def from_addresses(message: bytes) -> list[str]:
    """Addresses in the From (and Sender) header fields, lowercased: all of them.

    They decide whether a message may claim a sender (submission) and whether
    it impersonates a twin (inbound, peer), so none may go unchecked: a field
    longer than ``MAX_ADDRESS_FIELD`` or more than ``MAX_SENDERS`` addresses is
    refused (Invalid), not cut short."""
    fields, _ = split_message(message)
    found: list[str] = []
    for f in fields:
        if header_name(f) not in (b"from", b"sender") or b":" not in f:
            continue
        value = f.split(b":", 1)[1].decode("utf-8", "replace").strip()
        if len(value) > MAX_ADDRESS_FIELD:
            raise Invalid(f"a From or Sender field over {MAX_ADDRESS_FIELD} bytes")
        found += [addr.lower() for _, addr in addresses(value) if addr]
        if len(found) > MAX_SENDERS:
            raise Invalid(f"more than {MAX_SENDERS} From and Sender addresses")
    return found


def strip_trust_headers(message: bytes, *authserv_ids: str) -> bytes:
    """Remove headers that would claim *we* verified something (RFC 8601 §5).

    ``authserv_ids``: every name this twin writes Authentication-Results under
    (its domain for twin-to-twin mail, its SMTP hostname for inbound SMTP)."""
    ours = {i.lower().encode() for i in authserv_ids}

    def claims_us(f: bytes) -> bool:
        name = header_name(f)
        if name in TRUST_HEADERS:
            return True
        if name != b"authentication-results":
            return False
        value = f.split(b":", 1)[1].strip().lower() if b":" in f else b""
        return value.split(b";", 1)[0].strip() in ours
    return drop_fields(message, claims_us)


def drop_fields(message: bytes, drop: Callable[[bytes], bool]) -> bytes:
    """``message`` without the header fields ``drop`` says yes to; a message that is
    all header gets the empty line that ends a header (RFC 5322 §2.1)."""
    fields, rest = split_message(message)
    return b"\r\n".join(f for f in fields if not drop(f)) + b"\r\n" + rest


def prepend_headers(message: bytes, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = b"".join(f"{name}: {value}\r\n".encode() for name, value in headers)
    return lines + message


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().lower().rstrip(".")


def envelope_uid() -> str:
    """The uid of the envelope being handled (as its sender's outbox logs it), or "-"."""
    e = current_envelope.get(None)
    return e.uid.hex()[:16] if e is not None else "-"


# -- the router

@dataclass
class Routed:
    """What happened to one message (for logs and the CLI)."""

    local: list[str] = field(default_factory=list)  # logins whose Inbox gets it
    twins: dict[str, str] = field(default_factory=dict)  # twin name -> envelope uid
    queued: int | None = None  # legacy queue id
    legacy: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # had it from an earlier attempt
    journal: dict[str, int] = field(default_factory=dict)  # login -> mail journal seq

    def to_json(self) -> dict[str, Any]:
        return {"local": self.local, "twins": self.twins, "queued": self.queued,
                "legacy": self.legacy, "skipped": self.skipped, "journal": self.journal}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Routed:
        return cls(d["local"], d["twins"], d["queued"], d["legacy"], d["skipped"],
                   d.get("journal", {}))

    def trace(self) -> str:
        """Where the message went, by the ids the next hop logs it under: the mail
        journal's seq (``filed journal #N``), the envelope uid (the receiving twin's
        ``mail from twin``) and the legacy queue id. What lets one delivery be
        followed from its SMTP line to the IDLE push."""
        parts = [f"journal={','.join(f'{login}#{seq}' for login, seq in self.journal.items())}"
                 ] if self.journal else []
        if self.twins:
            parts.append("envelope=" + ",".join(f"{n}:{u[:16]}" for n, u in self.twins.items()))
        if self.queued is not None:
            parts.append(f"queued=#{self.queued}")
        return " ".join(parts)


class TwinFinder(Protocol):
    """The phonebook's answer for an address: the twin serving it, or None.

    ``wait`` bounds the time spent on the backend (``Service.twin_for_address``)."""

    async def __call__(self, address: str, *, wait: float | None = None
                       ) -> TwinRecord | None: ...


class MailRouter:
    """The routing decision and both sides of ``mail.deliver`` (its ``install``)."""

    def __init__(self, *, config: Config, db: Database, users: Users, mail: MailStore,
                 outbound: OutboundQueue, peer: Peer, find_twin: TwinFinder) -> None:
        self.config = config
        self.users = users
        self.mail = mail
        self.outbound = outbound
        self.peer = peer
        self.find_twin = find_twin
        self.domain = config.domain.lower()
        self._owners: dict[str, tuple[str | None, float]] = {}
        self._twins: dict[str, tuple[TwinRecord | None, float]] = {}
        self._domains: tuple[frozenset[str], float] = (frozenset(), 0.0)
        self.delivered = DeliveredLog(db)

    def install(self, peer: Peer) -> None:
        """Mail between twins: receiving, bounces and acks of ``mail.deliver``, and a
        copy of each native message in the owner's mail Inbox."""
        peer.register(KIND, self.receive_from_twin)
        peer.on_bounce(KIND, self.peer_bounced)
        peer.on_ack(KIND, self.peer_acked)
        peer.on_message(self.message_to_mail)

    # -- who we are

    async def own_domains(self) -> frozenset[str]:
        domains, expires = self._domains
        if expires > time.monotonic():
            return domains
        users = await asyncio.to_thread(self.users.all)
        found = {self.domain} | {domain_of(a) for u in users for a in u.addresses}
        self._domains = (frozenset(found), time.monotonic() + CACHE_SECONDS)
        return self._domains[0]

    async def owner_of(self, address: str) -> str | None:
        """``users.owner_of``, off the loop and cached briefly (it is asked per RCPT)."""
        address = address.strip().lower()
        hit = self._owners.get(address)
        if hit and hit[1] > time.monotonic():
            return hit[0]
        owner = await asyncio.to_thread(self.users.owner_of, address)
        if len(self._owners) > 10_000:
            self._owners.clear()
        self._owners[address] = (owner, time.monotonic() + CACHE_SECONDS)
        return owner

    async def twin_for(self, address: str) -> TwinRecord | None:
        """``find_twin`` (the phonebook) cached briefly per domain (asked per message)."""
        domain = domain_of(address)
        hit = self._twins.get(domain)
        if hit and hit[1] > time.monotonic():
            return hit[0]
        twin = await self.find_twin(address, wait=self.config.float("phonebook.mail_wait"))
        if len(self._twins) > 10_000:
            self._twins.clear()
        self._twins[domain] = (twin, time.monotonic() + CACHE_SECONDS)
        return twin

    async def is_local(self, address: str) -> bool:
        return domain_of(address) in await self.own_domains()

    async def check_recipient(self, address: str, *, may_relay: bool) -> None:
        """Refuse early: unknown local user (NotFound), relaying for strangers (Forbidden)."""
        if await self.is_local(address):
            if await self.owner_of(address) is None:
                raise NotFound(f"no mailbox here for {address}")
            return
        if not may_relay:
            raise Forbidden(f"relaying to {domain_of(address)} is not allowed")

    # -- routing

    async def route(self, mail_from: str, rcpts: Sequence[str], message: bytes, *,
                    sent: bytes | None = None, junk: bool = False) -> Routed:
        """Deliver or durably hand off ``message`` to every recipient.

        ``junk``: local copies go to each owner's Junk mailbox, not the Inbox
        (inbound mail a DMARC policy asks to quarantine, ``core.mail.junk``).

        ``sent``, the bytes as the client sent them, makes a client's retry
        after a partial failure skip the recipients that already have the
        message (see ``core.delivered``). Their key is hashed only when needed:
        when the log holds entries, or to add one.
        """
        message = to_crlf(message)
        routed = Routed()
        done_before = (self.delivered.already(message_key(mail_from, sent))
                       if sent is not None and self.delivered.remembers_any() else frozenset())
        owners: dict[str, list[str]] = {}
        by_twin: dict[str, tuple[TwinRecord, list[str]]] = {}
        for rcpt in dict.fromkeys(r.strip() for r in rcpts):
            if rcpt.lower() in done_before:
                routed.skipped.append(rcpt)
                continue
            if await self.is_local(rcpt):
                owner = await self.owner_of(rcpt)
                if owner is None:
                    raise NotFound(f"no mailbox here for {rcpt}")
                owners.setdefault(owner, []).append(rcpt)
                continue
            twin = await self.twin_for(rcpt)
            if twin is not None and twin.name != self.config.name:
                by_twin.setdefault(twin.name, (twin, []))[1].append(rcpt)
            else:
                routed.legacy.append(rcpt)
        jobs: list[Any] = [self._deliver_local(o, message, junk=junk) for o in owners]
        jobs += [self._send_to_twin(name, mail_from, group, message)
                 for name, (_, group) in by_twin.items()]
        if routed.legacy:
            jobs.append(self.outbound.enqueue(mail_from, routed.legacy, message))
        results = await _all(jobs)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            branches = [*owners.values(), *(group for _, group in by_twin.values())]
            if routed.legacy:
                branches.append(routed.legacy)
            succeeded = [r for group, result in zip(branches, results, strict=True)
                         if not isinstance(result, BaseException) for r in group]
            if sent is not None and succeeded:  # the retry skips these
                await self.delivered.remember(message_key(mail_from, sent), succeeded)
            raise errors[0] if isinstance(errors[0], TwinError) else Unavailable(
                f"delivery failed: {errors[0]}")
        done: list[Any] = list(results)
        routed.local.extend(owners)
        routed.journal = {o: seq for o, seq in zip(owners, done, strict=False)
                          if isinstance(seq, int)}
        for name, envelope_uid in zip(by_twin, done[len(owners):], strict=False):
            routed.twins[name] = str(envelope_uid)
        if routed.legacy:
            routed.queued = int(done[-1])
        log.debug("routed mail from %s: %d local, %d twin(s), %d legacy, %d done before",
                 mail_from or "<>", len(routed.local), len(routed.twins), len(routed.legacy),
                 len(routed.skipped))
        return routed

    async def _deliver_local(self, login: str, message: bytes, *,
                             junk: bool = False) -> int | None:
        """Into ``login``'s Inbox through the journal: the journal seq (None: Junk)."""
        try:
            if junk:  # rare: straight to the store, not through the Inbox journal
                folder = await junk_mailbox(self.mail, login)
                await self.mail.deliver(login, message, mailbox=folder)
                return None
            return await self.mail.accept(login, message)
        except TwinError:
            raise
        except Exception as exc:
            log.exception("local delivery to %s failed", login)
            raise Unavailable(f"the mail store is unavailable: {exc}") from exc

    async def _send_to_twin(self, name: str, mail_from: str, rcpts: list[str],
                            message: bytes) -> str:
        payload = {"rcpt": rcpts, "mail_from": mail_from, "message": message}
        return str(await self.peer.send(name, KIND, payload))

    # -- the receiving side of mail.deliver

    async def receive_from_twin(self, sender: TwinRecord, payload: Any) -> dict[str, Any]:
        """Deliver a verified twin's message to our users, marked as verified."""
        conf = self.config
        if not isinstance(payload, dict):
            raise Invalid("mail.deliver payload must be a map")
        rcpts, mail_from, message = (payload.get("rcpt"), payload.get("mail_from"),
                                     payload.get("message"))
        if (not isinstance(rcpts, list) or not rcpts or not all(isinstance(r, str) for r in rcpts)
                or not isinstance(mail_from, str) or not isinstance(message, bytes)):
            raise Invalid("mail.deliver needs rcpt (list), mail_from (text), message (bytes)")
        if len(rcpts) > conf.int("smtp.max_recipients"):
            raise Invalid("too many recipients")
        if len(message) > conf.int("smtp.max_message_size"):
            raise Invalid("message too large")
        owners: dict[str, list[str]] = {}
        unknown: list[str] = []
        key = message_key(f"twin {sender.name} {mail_from}", message)  # the peer retries too
        done_before = self.delivered.already(key)
        for rcpt in rcpts:
            owner = await self.owner_of(rcpt) if await self.is_local(rcpt) else None
            if owner is None:
                unknown.append(rcpt)
            elif rcpt.strip().lower() not in done_before:
                owners.setdefault(owner, []).append(rcpt)
        if not owners and not done_before:
            raise NotFound(f"no mailbox here for {', '.join(unknown)}")
        marked = self.mark_from_twin(sender, mail_from, to_crlf(message))
        results = await _all([self._deliver_local(o, marked) for o in owners])
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            succeeded = [r for group, result in zip(owners.values(), results, strict=True)
                         if not isinstance(result, BaseException) for r in group]
            if succeeded:
                await self.delivered.remember(key, succeeded)
            raise errors[0]
        # per message: debug, unless a recipient was refused (worth a line at info)
        journal = ",".join(f"{o}#{seq}" for o, seq in zip(owners, results, strict=True)
                           if isinstance(seq, int))
        log.log(logging.INFO if unknown else logging.DEBUG,
                "mail from twin %s (%s) envelope=%s delivered to %d user(s)%s journal=%s",
                sender.name, mail_from or "<>", envelope_uid(), len(owners),
                f", {len(unknown)} unknown (refused in the ack)" if unknown else "", journal)
        # Unknown recipients are refused in the ack, never bounced from here: the
        # sending twin tells its own user (``peer_acked``). A DSN from here would go
        # to whatever ``mail_from`` the peer chose, DKIM-signed by us, with its
        # headers: a reflector for anyone with a phonebook entry.
        return {"delivered": len(owners), "unknown": unknown}

    async def message_to_mail(self, sender: TwinRecord, uid: bytes, text: str) -> None:
        """A native message (``twin send``) as mail in the owner's Inbox, so mail
        clients show it too. Only while the mail store is open (``twin serve``); a
        crash between the two stores leaves it only in ``twin inbox``."""
        if self.mail.store is None:
            return
        conf = self.config
        owner = f"{conf.name}@{conf.domain}"
        address = f"{sender.name}@{sender.mail_domains[0]}" if sender.mail_domains else ""
        mail = compose(from_=address or f"twin {sender.name}", to=owner,
                       subject=f"Message from twin {sender.name}", date=format_datetime_now(),
                       message_id=f"<{uid.hex()}@{conf.domain}>", text=text)
        await self.mail.accept(owner, self.mark_from_twin(sender, address, mail))

    def mark_from_twin(self, sender: TwinRecord, mail_from: str, message: bytes) -> bytes:
        message = strip_trust_headers(message, self.domain)
        domains = {d.lower() for d in sender.mail_domains}
        claimed = {domain_of(a) for a in from_addresses(message)}
        if mail_from:
            claimed.add(domain_of(mail_from))
        key = sender.public_key.hex()[:16]
        verdict = "pass" if claimed <= domains else "fail"
        headers = [
            ("Authentication-Results",
             f"{self.domain}; twin={verdict} (signed envelope from twin {sender.name}) "
             f"smtp.mailfrom={mail_from or '<>'}"),
            ("X-Twin-Verified", f"{sender.name} (key {key}…)"),
        ]
        if verdict != "pass":
            headers.append(("X-Twin-Warning",
                            f"twin {sender.name} sent mail claiming an address outside its "
                            f"domains ({', '.join(sorted(claimed - domains))})"))
        headers.insert(0, ("Received", f"from twin {sender.name} (key {key}) by {self.domain} "
                                       f"with TWIN; {format_datetime_now()}"))
        return prepend_headers(message, headers)

    async def peer_bounced(self, recipient: str, payload: Any, reason: str) -> None:
        """The peer outbox gave up on a ``mail.deliver``: tell the local sender."""
        if not isinstance(payload, dict):
            return
        rcpts = payload.get("rcpt") or [recipient]
        message = payload.get("message") if isinstance(payload.get("message"), bytes) else b""
        await self.outbound.bounce(
            str(payload.get("mail_from") or ""), message or b"\r\n",
            [Failure(str(r), "4.4.7" if "expired" in reason else "5.0.0", reason)
             for r in rcpts])


    async def peer_acked(self, recipient: str, payload: Any, result: Any) -> None:
        """A twin acked a ``mail.deliver``: bounce the recipients it refused as unknown.

        Only recipients we sent it are bounced (the ack cannot make us name
        others), and only to the local sender (``outbound.bounce`` delivers
        into a local Inbox or nowhere)."""
        if not isinstance(payload, dict) or not isinstance(result, dict):
            return
        unknown = result.get("unknown")
        sent = payload.get("rcpt")
        if not isinstance(unknown, list) or not isinstance(sent, list) or not unknown:
            return
        ours = {r.strip().lower(): r for r in sent if isinstance(r, str)}
        refused = list(dict.fromkeys(ours[u.strip().lower()] for u in unknown
                                     if isinstance(u, str) and u.strip().lower() in ours))
        if not refused:
            return
        message = payload.get("message") if isinstance(payload.get("message"), bytes) else b""
        await self.outbound.bounce(
            str(payload.get("mail_from") or ""), message or b"\r\n",
            [Failure(r, "5.1.1", f"550 5.1.1 no such mailbox at twin {recipient}")
             for r in refused])


@functools.lru_cache(maxsize=2)
def _date(second: int) -> str:
    return format_datetime(dt.datetime.fromtimestamp(second, dt.UTC))


def format_datetime_now() -> str:
    """Now as an RFC 5322 date (UTC, whole seconds, as Received and Date fields have
    it). Formatted once per second, not per message: ``format_datetime`` was a
    few per cent of a message's CPU on each twin."""
    return _date(int(time.time()))


async def _all(jobs: list[Any]) -> list[Any]:
    """``gather(..., return_exceptions=True)``, without a task for the usual single branch."""
    if len(jobs) != 1:
        return list(await asyncio.gather(*jobs, return_exceptions=True))
    try:
        return [await jobs[0]]
    except Exception as exc:
        return [exc]
