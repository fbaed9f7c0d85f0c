"""``twin mail users|passwd|passwords|aliases|queue|quarantine|dkim|send|...``: mail admin.

``import`` and ``export`` live in ``core.cli.mail_transfer``.

``quarantine`` lists, retries or deletes deliveries the filer set aside
(``core.mail.quarantine``): through the running twin's owner-only local API
(``core.owner.mail``) when it runs, else on the store opened here.

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
from typing import TYPE_CHECKING, Any

from core.cli import mail_transfer, open_service
from core.cli.storage import running_twin
from core.errors import Conflict, Invalid, NotFound, TwinError, from_code
from core.mail.quarantine import printable
from core.routing import Routed
from core.users import normalize_login

if TYPE_CHECKING:
    from core.service import Service

MAX_BODY = 10 * 1024 * 1024


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("mail", help="mail users, passwords, aliases, queue, DKIM, send")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("users", help="list, add or remove users")
    a.add_argument("do", nargs="?", default="list", choices=["list", "add", "rm"],
                   help="list (default), add a user, or remove one that holds no mail")
    a.add_argument("login", nargs="?", help="the user's address (add, rm)")
    a.add_argument("--new-domain", action="store_true",
                   help="add: accept a domain no user has yet (the twin will serve it)")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a = actions.add_parser("passwd", help="make a new app password (shown once)")
    a.add_argument("login", nargs="?", help="default: the owner")
    a.add_argument("--label", default="default", help="one label per device")
    a.add_argument("--revoke", action="store_true", help="revoke the labelled password instead")
    a = actions.add_parser("passwords", help="list app passwords, or remove one")
    a.add_argument("do", nargs="?", default="list", choices=["list", "rm"],
                   help="list (default: every login's), or rm LABEL [LOGIN]")
    a.add_argument("words", nargs="*", metavar="ARG", help="list: [LOGIN]; rm: LABEL [LOGIN]")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a = actions.add_parser("aliases", help="list, add or remove aliases")
    a.add_argument("do", nargs="?", default="list", choices=["list", "add", "rm"],
                   help="list (default), add ADDRESS LOGIN, or rm ADDRESS")
    a.add_argument("address", nargs="?", help="the alias address (add, rm)")
    a.add_argument("login", nargs="?", help="the login it delivers to (add)")
    a = actions.add_parser("queue", help="the legacy outbound queue")
    a.add_argument("queue_action", nargs="?", default="list", choices=["list", "flush", "drop"],
                   help="list (default), flush (retry all now), drop ID")
    a.add_argument("id", nargs="?", type=int, help="message id for drop")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a = actions.add_parser("quarantine", help="deliveries that could not be filed")
    a.add_argument("quarantine_action", nargs="?", default="list",
                   choices=["list", "retry", "rm"], help="list (default), retry ID, rm ID")
    a.add_argument("id", nargs="?", type=int, help="quarantine id for retry and rm")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a = actions.add_parser("dkim", help="the DKIM DNS record to publish")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a = actions.add_parser("send", help="send stdin as a message, through core routing")
    a.add_argument("--to", action="append", required=True, help="recipient (repeatable)")
    a.add_argument("--subject", default="", help="the Subject line")
    a.add_argument("--from", dest="sender", help="sender address (default: the owner)")
    mail_transfer.register(actions)
    p.set_defaults(func=run)


def owner(service: Service) -> str:
    return f"{service.config.name}@{service.config.domain}"


def run(args: argparse.Namespace) -> int:
    if args.action in ("import", "export"):
        return mail_transfer.run(args)
    service = open_service(args)
    try:
        handler = {"users": users, "passwd": passwd, "passwords": passwords,
                   "aliases": aliases, "queue": queue,
                   "quarantine": quarantined, "dkim": dkim_record, "send": send}[args.action]
        return handler(service, args)
    finally:
        service.close()


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


def users(service: Service, args: argparse.Namespace) -> int:
    if args.do == "add":
        if not args.login:
            raise Invalid("usage: twin mail users add LOGIN [--new-domain]")
        _check_domain(service, args.login, args.new_domain)
        user = service.users.add(args.login)
        asyncio.run(service.mail.ensure_user(user.login))
        password = service.users.set_password(user.login)
        print(json.dumps({"login": user.login, "password": password}) if args.json
              else f"user {user.login} created; app password: {password}   (shown once)")
        return 0
    if args.do == "rm":
        if not args.login:
            raise Invalid("usage: twin mail users rm LOGIN")
        login = normalize_login(args.login)
        used, _ = asyncio.run(service.mail.quota(login))
        if used:  # nothing lost: the owner moves or exports it first
            raise Conflict(f"{login} still holds {used} bytes of mail: export it "
                           f"(twin mail export) or delete it first")
        service.users.remove(login)
        print(f"user {login} removed, with its aliases and app passwords")
        return 0
    listed = service.users.all()
    if args.json:
        print(json.dumps([{"login": u.login, "role": u.role, "addresses": list(u.addresses)}
                          for u in listed]))
        return 0
    for u in listed:
        print(f"{u.login:<40} {u.role:<6} {' '.join(u.addresses[1:])}")
    return 0


def _check_domain(service: Service, address: str, new_domain: bool) -> None:
    """A typo in a domain must not quietly make the twin serve (and accept mail for) it."""
    domain = address.rpartition("@")[2].lower()
    served = {service.config.domain.lower()} | {
        a.rpartition("@")[2] for u in service.users.all() for a in u.addresses}
    if domain and domain not in served and not new_domain:
        raise Invalid(f"this twin serves {', '.join(sorted(served))}, not {domain}: add "
                      f"--new-domain to serve it too (then publish its records: twin dns)")


def passwd(service: Service, args: argparse.Namespace) -> int:
    login = (args.login or owner(service)).lower()
    if args.revoke:
        service.users.revoke(login, args.label)
        print(f"app password {args.label!r} of {login} revoked")
        return 0
    old = [p for p in service.users.passwords(login) if p.label == args.label]
    password = service.users.set_password(login, args.label)
    replaced = f" (replaces the one made {_when(old[0].created)})" if old else ""
    print(f"new app password {args.label!r} for {login}{replaced}: {password}   (shown once)")
    return 0


def passwords(service: Service, args: argparse.Namespace) -> int:
    if args.do == "rm":
        if not 1 <= len(args.words) <= 2:
            raise Invalid("usage: twin mail passwords rm LABEL [LOGIN]")
        label = args.words[0]
        login = (args.words[1] if len(args.words) == 2 else owner(service)).lower()
        service.users.revoke(login, label)
        print(f"app password {label!r} of {login} revoked")
        return 0
    if len(args.words) > 1:
        raise Invalid("usage: twin mail passwords [list] [LOGIN]")
    listed = service.users.passwords(normalize_login(args.words[0]) if args.words else None)
    if args.json:
        print(json.dumps([{"login": p.login, "label": p.label, "created": _when(p.created)}
                          for p in listed]))
        return 0
    if not listed:
        print("no app passwords")
    for p in listed:
        print(f"{p.login:<40} {p.label:<16} made {_when(p.created)}")
    return 0


def aliases(service: Service, args: argparse.Namespace) -> int:
    if args.do == "add":
        if not args.address or not args.login:
            raise Invalid("usage: twin mail aliases add ADDRESS LOGIN")
        service.users.add_alias(args.address, args.login.lower())
        print(f"{args.address.lower()} -> {args.login.lower()}")
        return 0
    if args.do == "rm":
        if not args.address:
            raise Invalid("usage: twin mail aliases rm ADDRESS")
        login = service.users.remove_alias(args.address)
        print(f"alias {args.address.lower()} (-> {login}) removed")
        return 0
    found = [(alias, user.login) for user in service.users.all()
             for alias in user.addresses[1:]]
    if not found:
        print("no aliases")
    for alias, login in found:
        print(f"{alias:<40} -> {login}")
    return 0


def queue(service: Service, args: argparse.Namespace) -> int:
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


def quarantined(service: Service, args: argparse.Namespace) -> int:
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


def _local_mail(data: Path, twin: tuple[str, str]) -> Any:
    """An HTTP client of the running twin's owner-only mail API (``core.owner.mail``)."""
    import httpx

    from core import tls
    from core.owner.mail import LOCAL_MAIL

    origin, token = twin
    return httpx.AsyncClient(base_url=f"{origin}{LOCAL_MAIL}", verify=tls.local_context(data),
                             headers={"authorization": f"Bearer {token}"}, timeout=60.0)


async def _ask_running(data: Path, twin: tuple[str, str], action: str, qid: int | None
                       ) -> Any:
    async with _local_mail(data, twin) as http:
        if action == "list":
            resp = await http.get("/quarantine")
        elif action == "retry":
            resp = await http.post(f"/quarantine/{qid}/retry")
        else:
            resp = await http.delete(f"/quarantine/{qid}")
    return _answer(resp)


async def _post_running(data: Path, twin: tuple[str, str], path: str, body: bytes,
                        params: dict[str, Any]) -> Any:
    async with _local_mail(data, twin) as http:
        return _answer(await http.post(path, content=body, params=params))


def _answer(resp: Any) -> Any:
    """The running twin's JSON answer, or its error in core's vocabulary."""
    try:
        body = resp.json()
    except ValueError:  # not its API's answer: an older twin still running, or a proxy
        raise Invalid(f"the running twin answered {resp.status_code} without JSON: is it "
                      f"older than this command? restart it") from None
    if resp.status_code == 200:
        return body
    message = str(body.get("message", resp.status_code))
    # by the code it sent, not the status: the same error as on a stopped twin
    error = from_code(str(body.get("code", "")), message)
    if error is not None:
        raise error
    if resp.status_code == 404:
        raise NotFound(message)
    raise Invalid(f"the running twin says: {message}")


async def _on_own_store(service: Service, action: str, qid: int | None) -> Any:
    if action == "list":
        return [q.to_json() for q in await service.mail.quarantined()]
    async with service.opened_store():
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


def dkim_record(service: Service, args: argparse.Namespace) -> int:
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


def send(service: Service, args: argparse.Namespace) -> int:
    """Through the running twin when there is one (its store is locked by it), else on
    this process' own opening of the store."""
    from core.owner.mail import send_as_owner

    sender = (args.sender or owner(service)).lower()
    body = sys.stdin.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise Invalid(f"message body over {MAX_BODY} bytes")
    message = build_message(sender, args.to, args.subject, body, service.config.domain)
    data = Path(args.data).expanduser().resolve()
    twin = running_twin(data)

    async def go() -> Routed:
        if twin is not None:
            answer = await _post_running(data, twin, "/send", message,
                                         {"from": sender, "to": args.to})
            return Routed.from_json(answer)
        async with service.opened_store():
            return await send_as_owner(service, sender, args.to, message)

    routed = asyncio.run(go())
    print(f"sent: {len(routed.local)} local, {len(routed.twins)} twin(s), "
          f"{len(routed.legacy)} legacy" + (f" (queue id {routed.queued})"
                                            if routed.queued is not None else ""))
    return 0
