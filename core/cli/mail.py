"""``twin mail users|passwd|aliases|queue|quarantine|dkim|send|import|export``: mail administration.

``import`` and ``export`` live in ``core.cli.mail_transfer``.

``quarantine`` lists, retries or deletes deliveries the filer set aside
(``core.mail.quarantine``): through the running twin's owner-only local API
(``core.peer.local_mail``) when it runs, else on the store opened here.

``send`` is for scripts: it builds a plain-text message from stdin and hands it
to core routing as the owner (or ``--from``, which must be the owner's), the
same path a Thunderbird submission takes after AUTH, so a cron job can mail
twins and the legacy world without an SMTP client or a password.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import time
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from core.cli import mail_transfer, open_service
from core.cli.storage import running_twin
from core.errors import Forbidden, Invalid, NotFound, TwinError
from core.mail.quarantine import printable

MAX_BODY = 10 * 1024 * 1024


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("mail", help="mail users, passwords, aliases, queue, DKIM, send")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("users", help="list users, or add one")
    a.add_argument("add", nargs="?", choices=["add"], help="add a user")
    a.add_argument("login", nargs="?", help="the new user's address")
    a.add_argument("--json", action="store_true")
    a = actions.add_parser("passwd", help="make a new app password (shown once)")
    a.add_argument("login", nargs="?", help="default: the owner")
    a.add_argument("--label", default="default", help="one label per device")
    a.add_argument("--revoke", action="store_true", help="revoke the labelled password instead")
    a = actions.add_parser("aliases", help="list aliases, or add one")
    a.add_argument("add", nargs="?", choices=["add"])
    a.add_argument("address", nargs="?")
    a.add_argument("login", nargs="?")
    a = actions.add_parser("queue", help="the legacy outbound queue")
    a.add_argument("queue_action", nargs="?", default="list", choices=["list", "flush", "drop"])
    a.add_argument("id", nargs="?", type=int, help="message id for drop")
    a.add_argument("--json", action="store_true")
    a = actions.add_parser("quarantine", help="deliveries that could not be filed")
    a.add_argument("quarantine_action", nargs="?", default="list",
                   choices=["list", "retry", "rm"])
    a.add_argument("id", nargs="?", type=int, help="quarantine id for retry and rm")
    a.add_argument("--json", action="store_true")
    a = actions.add_parser("dkim", help="the DKIM DNS record to publish")
    a.add_argument("--json", action="store_true")
    a = actions.add_parser("send", help="send stdin as a message, through core routing")
    a.add_argument("--to", action="append", required=True, help="recipient (repeatable)")
    a.add_argument("--subject", default="")
    a.add_argument("--from", dest="sender", help="sender address (default: the owner)")
    mail_transfer.register(actions)
    p.set_defaults(func=run)


def owner(service: Any) -> str:
    return f"{service.config.name}@{service.config.domain}"


def run(args: argparse.Namespace) -> int:
    if args.action in ("import", "export"):
        return mail_transfer.run(args)
    service = open_service(args)
    try:
        handler = {"users": users, "passwd": passwd, "aliases": aliases, "queue": queue,
                   "quarantine": quarantined, "dkim": dkim_record, "send": send}[args.action]
        return handler(service, args)
    finally:
        service.close()


def users(service: Any, args: argparse.Namespace) -> int:
    if args.add:
        if not args.login:
            raise Invalid("usage: twin mail users add LOGIN")
        user = service.users.add(args.login)
        asyncio.run(service.mail.ensure_user(user.login))
        password = service.users.set_password(user.login)
        print(json.dumps({"login": user.login, "password": password}) if args.json
              else f"user {user.login} created; app password: {password}   (shown once)")
        return 0
    listed = service.users.all()
    if args.json:
        print(json.dumps([{"login": u.login, "role": u.role, "addresses": list(u.addresses)}
                          for u in listed]))
    for u in listed if not args.json else []:
        print(f"{u.login:<40} {u.role:<6} {' '.join(u.addresses[1:])}")
    return 0


def passwd(service: Any, args: argparse.Namespace) -> int:
    login = (args.login or owner(service)).lower()
    if args.revoke:
        service.users.revoke(login, args.label)
        print(f"app password {args.label!r} of {login} revoked")
        return 0
    password = service.users.set_password(login, args.label)
    print(f"new app password {args.label!r} for {login}: {password}   (shown once)")
    return 0


def aliases(service: Any, args: argparse.Namespace) -> int:
    if args.add:
        if not args.address or not args.login:
            raise Invalid("usage: twin mail aliases add ADDRESS LOGIN")
        service.users.add_alias(args.address, args.login.lower())
        print(f"{args.address.lower()} -> {args.login.lower()}")
        return 0
    for user in service.users.all():
        for alias in user.addresses[1:]:
            print(f"{alias:<40} -> {user.login}")
    return 0


def queue(service: Any, args: argparse.Namespace) -> int:
    q = service.outbound
    if args.queue_action == "flush":
        print(f"{q.flush()} recipient(s) due now (the running twin retries within 10 s)")
        return 0
    if args.queue_action == "drop":
        if args.id is None:
            raise Invalid("usage: twin mail queue drop ID")
        q.drop(args.id)
        print(f"message {args.id} dropped from the queue")
        return 0
    entries = q.entries()
    if args.json:
        print(json.dumps([e.to_json() for e in entries]))
        return 0
    if not entries:
        print("the legacy queue is empty")
    now = time.time()
    for e in entries:
        print(f"{e.id:>6}  {e.mail_from or '<>'} -> {e.rcpt}  {e.size} bytes, "
              f"{e.attempts} attempt(s), next in {max(0, int(e.next_attempt - now))} s"
              + (f"\n        last error: {e.last_error}" if e.last_error else ""))
    return 0


def quarantined(service: Any, args: argparse.Namespace) -> int:
    action = args.quarantine_action
    if action != "list" and args.id is None:
        raise Invalid(f"usage: twin mail quarantine {action} ID")
    twin = running_twin(Path(args.data).expanduser().resolve())
    if twin is not None:
        answer = asyncio.run(_ask_running(Path(args.data).expanduser().resolve(), twin,
                                          action, args.id))
    else:
        answer = asyncio.run(_on_own_store(service, action, args.id))
    if action == "retry":
        print(f"quarantine #{args.id} filed into the Inbox as uid {answer['uid']}")
    elif action == "rm":
        print(f"quarantine #{args.id} deleted")
    elif args.json:
        print(json.dumps(answer))
    else:
        if not answer:
            print("the quarantine is empty")
        for q in answer:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(q["at"]))
            print(f"{q['id']:>6}  {printable(q['login'])}  {q['size']} bytes, set aside "
                  f"{when}\n        {printable(q['reason'])}")
    return 0


async def _ask_running(data: Path, twin: tuple[str, str], action: str, qid: int | None
                       ) -> Any:
    import httpx

    from core import tls
    from core.peer.local_mail import LOCAL_MAIL

    origin, token = twin
    async with httpx.AsyncClient(
            base_url=f"{origin}{LOCAL_MAIL}", verify=tls.local_context(data),
            headers={"authorization": f"Bearer {token}"}, timeout=60.0) as http:
        if action == "list":
            resp = await http.get("/quarantine")
        elif action == "retry":
            resp = await http.post(f"/quarantine/{qid}/retry")
        else:
            resp = await http.delete(f"/quarantine/{qid}")
    body = resp.json()
    if resp.status_code == 404:
        raise NotFound(body.get("message", "not found"))
    if resp.status_code != 200:
        raise Invalid(f"the running twin says: {body.get('message', resp.status_code)}")
    return body


async def _on_own_store(service: Any, action: str, qid: int | None) -> Any:
    if action == "list":
        return [q.to_json() for q in await service.mail.quarantined()]
    service.store = await asyncio.to_thread(service.open_store)
    service.mail.attach(service.store)
    try:
        if action == "retry":
            assert qid is not None
            try:
                return {"uid": await service.mail.retry_quarantined(qid)}
            except TwinError:
                raise
            except Exception as exc:  # it stays in the quarantine: say why
                raise Invalid(f"quarantine #{qid} still cannot be filed: "
                              f"{type(exc).__name__}: {exc}") from exc
        assert qid is not None
        await service.mail.drop_quarantined(qid)
        return {"deleted": qid}
    finally:
        await service.store.close()
        service.store = None


def dkim_record(service: Any, args: argparse.Namespace) -> int:
    key = service.outbound.dkim
    if args.json:
        print(json.dumps({"name": key.record_name, "type": "TXT", "value": key.txt_record(),
                          "strings": key.txt_strings()}))
        return 0
    print(f"Publish this TXT record so receivers can check mail signed by {key.domain}")
    print("(one record; DNS keeps at most 255 bytes per quoted string, receivers join them):\n")
    quoted = " ".join(f'"{part}"' for part in key.txt_strings())
    print(f"{key.record_name}. IN TXT ( {quoted} )")
    return 0


def build_message(sender: str, to: list[str], subject: str, body: str, domain: str) -> bytes:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    msg["Message-ID"] = make_msgid(domain=domain)
    msg.set_content(body)
    return msg.as_bytes()


def send(service: Any, args: argparse.Namespace) -> int:
    sender = (args.sender or owner(service)).lower()
    if service.users.owner_of(sender) != owner(service):
        raise Forbidden(f"{sender} is not an address of {owner(service)}")
    body = sys.stdin.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise Invalid(f"message body over {MAX_BODY} bytes")
    message = build_message(sender, args.to, args.subject, body, service.config.domain)

    async def go() -> Any:
        service.store = await asyncio.to_thread(service.open_store)
        service.mail.attach(service.store)
        try:
            return await service.router.route(sender, args.to, message)
        finally:
            await service.store.close()
            service.store = None

    routed = asyncio.run(go())
    print(f"sent: {len(routed.local)} local, {len(routed.twins)} twin(s), "
          f"{len(routed.legacy)} legacy" + (f" (queue id {routed.queued})"
                                            if routed.queued is not None else ""))
    return 0
