"""Twin-to-twin from the command line: contacts, circles, shares, messages, fetch.

``twin contacts add|list|rm``, ``twin circle add|rm|list``, ``twin share``,
``twin unshare``, ``twin shares``, ``twin send``, ``twin inbox``,
``twin outbox``, ``twin fetch``.

Everything here works on the data dir (twin.db is shared safely with a
running twin through SQLite), so the running twin sees a new grant on its next
request. ``send`` asks a running twin to queue the message (its outbox
worker then sends at once; a row queued here would wait for its next poll);
with no twin running it queues into the outbox itself. The other thing
that needs the running twin is storing a file into the dispersed store
(``share FILE --as /path``): the store belongs to one process, so the file is
streamed to the twin's local owner endpoint; when the twin is not running the
command opens the store itself.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from core.cli import binary_stdout, open_service
from core.errors import ErrorCode, Invalid, NotFound, Unavailable, from_code
from core.peer.content import SharedObjects
from core.progress import Progress, human_bytes

if TYPE_CHECKING:
    from core.service import Service


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("contacts", help="twins you know by name")
    a = p.add_subparsers(dest="action", required=True)
    x = a.add_parser("add", help="add twins (each must resolve in the phonebook)")
    x.add_argument("names", nargs="+", help="twin names, as the phonebook knows them")
    x = a.add_parser("rm", help="remove a contact (and from every circle)")
    x.add_argument("name", help="the contact's twin name")
    x = a.add_parser("list", help="every contact")
    x.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_run(contacts))

    p = sub.add_parser("circle", help="named groups of contacts")
    a = p.add_subparsers(dest="action", required=True)
    x = a.add_parser("add", help="create a circle and/or add members: circle add family bob")
    x.add_argument("circle", help="the circle's name")
    x.add_argument("members", nargs="*", help="contacts to add to it")
    x = a.add_parser("rm", help="remove members, or the circle when none are named")
    x.add_argument("circle", help="the circle's name")
    x.add_argument("members", nargs="*", help="members to remove (none: the circle)")
    x = a.add_parser("list", help="circles and their members")
    x.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_run(circles))

    p = sub.add_parser("share", help="grant a twin, a circle, the public or another local login "
                                      "(user:LOGIN, over WebDAV) access to a path")
    p.add_argument("path", help="a content path (/photos/ for a prefix), or with --as a file")
    p.add_argument("--as", dest="as_path", metavar="/PATH",
                   help="store the local file PATH in the dispersed store at /PATH, then share")
    p.add_argument("--with", dest="grantee", required=True,
                   metavar="NAME|circle:CIRCLE|user:LOGIN|public", help="who is granted")
    p.add_argument("--rights", default="r", help="r, rw, rws or read,write,share (default r)")
    p.add_argument("--write", action="store_true",
                   help="add the write right (as --rights rw): the grantee's twin may put, "
                        "rename and delete below PATH, charged to this twin's webdav.quota")
    p.add_argument("--until", help="expiry: ISO date or date-time (local time)")
    p.add_argument("--progress", action="store_true",
                   help="with --as: progress on stderr even when it is not a terminal")
    p.set_defaults(func=_run(share))

    p = sub.add_parser("unshare", help="revoke a grant, for a prefix (/photos/) also every "
                                        "grant below it (takes effect on the next request)")
    p.add_argument("path", help="the shared path (a prefix ends in /)")
    p.add_argument("--with", dest="grantee", required=True,
                   metavar="NAME|circle:CIRCLE|user:LOGIN|public", help="whose grant goes")
    p.set_defaults(func=_run(unshare))

    p = sub.add_parser("shares", help="every grant and every shared object")
    p.add_argument("prefix", nargs="?", help="only grants on this path and below it")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_run(shares))

    p = sub.add_parser("send", help="send a native message to a twin (queued, retried)")
    p.add_argument("name", help="the twin to send to")
    p.add_argument("text", help="the message")
    p.set_defaults(func=_run(send))

    p = sub.add_parser("inbox", help="native messages received (and bounce notes)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--limit", type=int, default=100, help="newest N (default 100)")
    p.set_defaults(func=_run(inbox))

    p = sub.add_parser("outbox", help="envelopes waiting for an ack")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_run(outbox))

    p = sub.add_parser("fetch", help="read (or --list) what another twin shared with you")
    p.add_argument("name", help="the twin that shared it")
    p.add_argument("path", help="the shared path")
    p.add_argument("-o", "--output", help="write here instead of stdout")
    p.add_argument("--list", action="store_true", help="list a directory")
    p.add_argument("--start", type=int, default=0, help="first byte offset")
    p.add_argument("--end", type=int, default=None, help="exclusive end offset")
    p.add_argument("--json", action="store_true", help="with --list: machine-readable")
    p.add_argument("--progress", action="store_true",
                   help="progress on stderr even when it is not a terminal")
    p.set_defaults(func=_run(fetch))


def _run(fn: Callable[[Service, argparse.Namespace], Awaitable[int]]) -> Callable[..., int]:
    def run(args: argparse.Namespace) -> int:
        service = open_service(args)

        async def main() -> int:
            try:
                return await fn(service, args)
            finally:
                await service.peer.stop()
        try:
            return asyncio.run(main())
        finally:
            service.close()
    return run


async def contacts(service: Service, args: argparse.Namespace) -> int:
    if args.action == "add":
        for name in args.names:
            record = await service.resolve(name)  # exists, verified, key pinned
            new = await service.contacts.add(record.name)
            print(f"{record.name}: {'added' if new else 'already a contact'}")
    elif args.action == "rm":
        await service.contacts.remove(args.name)
        print(f"{args.name}: removed")
    else:
        names = await service.contacts.list()
        print(json.dumps(names) if args.json else "\n".join(names))
    return 0


async def circles(service: Service, args: argparse.Namespace) -> int:
    if args.action == "add":
        for name in args.members:
            await service.resolve(name)
        await service.contacts.circle_add(args.circle, args.members)
        print(f"circle {args.circle}: {', '.join(args.members) or 'created'}")
    elif args.action == "rm":
        await service.contacts.circle_remove(args.circle, args.members)
        what = "removed " + ", ".join(args.members) if args.members else "deleted"
        print(f"circle {args.circle}: {what}")
    else:
        found = await service.contacts.circles()
        if args.json:
            print(json.dumps(found))
        for circle, members in {} if args.json else found.items():
            print(f"{circle}: {' '.join(members)}")
    return 0


def _until(text: str | None) -> float | None:
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise Invalid(f"--until {text!r}: use an ISO date like 2030-01-31 or 2030-01-31T18:00") \
            from None
    return when.timestamp()


async def share(service: Service, args: argparse.Namespace) -> int:
    from core.acl import parse_rights

    path = args.path
    await _check_grantee(service, args.grantee)  # before storing anything
    if args.as_path:
        path = args.as_path
        await _publish_file(service, Path(args.path), path,
                            Progress(f"share {args.path}", forced=args.progress))
    else:
        await _check_path(service, path)
    rights = parse_rights(args.rights) + (("write",) if args.write else ())
    grant = await service.access.grant(path, args.grantee, rights, _until(args.until))
    print(f"shared {grant.path} with {grant.who} ({','.join(grant.rights)})"
          + (f" until {dt.datetime.fromtimestamp(grant.until).isoformat()}" if grant.until
             else ""))
    await _tell(service, grant.path, args.grantee, grant.rights, revoked=False)
    return 0


async def _check_grantee(service: Service, grantee: str) -> None:
    """A twin grantee must resolve in the phonebook, as for ``contacts add``: a typo
    must not become a standing grant for whoever registers that name later."""
    from core.contacts import check_name

    name = grantee.strip().lower()
    if name == "public" or name.startswith("circle:"):
        return
    if name.startswith("user:"):  # one of this twin's own logins (#15.8)
        from core.users import normalize_login

        login = normalize_login(name.removeprefix("user:"))
        if service.users.is_owner(login):
            raise Invalid(f"{login} is the owner's login: it has every right already")
        if service.users.owner_of(login) != login:
            raise NotFound(f"no login {login!r} on this twin (twin mail users add); "
                           "nothing was shared")
        return
    if await service.contacts.is_circle(check_name(name)):
        return
    try:
        await service.resolve(name)
    except NotFound:
        raise NotFound(f"no twin or circle named {name!r} (the phonebook does not know it); "
                       "nothing was shared") from None


async def _check_path(service: Service, path: str) -> None:
    """Share only what exists: a prefix must be a folder, a file path a file."""
    from core.acl import normalize

    path = normalize(path)
    try:
        entry = await service.files.stat(path)
    except NotFound:
        raise NotFound(f"{path}: no such file or folder in this twin's files; nothing was "
                       "shared (to share a local file use PATH --as /NAME)") from None
    if path.endswith("/") and not entry.is_dir:
        raise Invalid(f"{path} is a file, not a folder: drop the trailing /")


async def _tell(service: Service, path: str, grantee: str, rights: tuple[str, ...], *,
                revoked: bool) -> None:
    """share.notify to the grantees (core/peer/shares.py); a failure keeps the grant."""
    from core.peer.shares import notify

    queued, failed = await notify(service.contacts, service.peer, path, grantee, rights,
                                  revoked=revoked)
    if queued:
        print(f"notifying {', '.join(queued)}")
    if failed:
        print(f"could not notify {', '.join(failed)} (the grant stands)", file=sys.stderr)


async def _publish_file(service: Service, file: Path, path: str, progress: Progress) -> None:
    if not await asyncio.to_thread(file.is_file):
        raise NotFound(f"{file}: no such file")
    size = (await asyncio.to_thread(file.stat)).st_size
    running = _running_twin(service.data_dir)
    if running is not None:
        entry = await asyncio.to_thread(_upload, service.data_dir, running, file, path,
                                        progress)
        progress.summary({}, f"stored {file} as {entry['path']} ({entry['size']} bytes) "
                         "via the running twin")
        return
    from core.owner.api import publish

    async with service.opened_store():
        stored = await publish(service.files, path, _file_chunks(file, progress, size))
    progress.summary({}, f"stored {file} as {stored.path} ({stored.size} bytes)")


async def _file_chunks(file: Path, progress: Progress, size: int) -> AsyncIterator[bytes]:
    sent = 0
    with file.open("rb") as f:
        while block := await asyncio.to_thread(f.read, 1024 * 1024):
            sent += len(block)
            progress.step(f"{human_bytes(sent)} of {human_bytes(size)}")
            yield block


def _running_twin(data: Path) -> str | None:
    """The running twin's HTTPS origin (``https://HOST:PORT``), or None.

    The host its HTTPS listener is bound to (``listen.host``), loopback when
    that is a wildcard: the owner's local API answers wherever the twin listens."""
    try:
        state = json.loads((data / "run" / "status.json").read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    for info in state["listeners"]:
        if info["name"] == "https":
            host = str(info.get("host") or "127.0.0.1")
            host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 - a wildcard is reached on loopback
            return f"https://[{host}]:{info['port']}" if ":" in host else \
                f"https://{host}:{info['port']}"
    return None


def _upload(data: Path, origin: str, file: Path, path: str, progress: Progress
            ) -> dict[str, Any]:
    import httpx

    from core import tls
    from core.owner import TOKEN_FILE
    from core.owner.api import LOCAL_OBJECTS

    token = (data / TOKEN_FILE).read_text().strip()

    def chunks() -> Iterator[bytes]:
        sent, size = 0, file.stat().st_size
        with file.open("rb") as f:
            while block := f.read(1024 * 1024):
                sent += len(block)
                progress.step(f"{human_bytes(sent)} of {human_bytes(size)}")
                yield block

    try:
        resp = httpx.put(f"{origin}{LOCAL_OBJECTS}", params={"path": path},
                         content=chunks(), headers={"authorization": f"Bearer {token}"},
                         verify=tls.local_context(data), timeout=600)
    except httpx.HTTPError as exc:
        raise Unavailable(f"the running twin did not take the file: {exc}") from exc
    body: dict[str, Any] = resp.json()
    if resp.status_code != 200:
        message = f"the running twin refused the file: {body.get('message')}"
        raise from_code(str(body.get("code", "")), message) or Invalid(message)
    return body


def _local_send(data: Path, origin: str, to: str, text: str) -> dict[str, Any]:
    import httpx

    from core import tls
    from core.owner import TOKEN_FILE
    from core.owner.api import LOCAL_SEND

    token = (data / TOKEN_FILE).read_text().strip()
    try:
        resp = httpx.post(f"{origin}{LOCAL_SEND}", json={"to": to, "text": text},
                          headers={"authorization": f"Bearer {token}"},
                          verify=tls.local_context(data), timeout=60)
        body: dict[str, Any] = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise Unavailable(f"the running twin did not take the message: {exc}") from exc
    if resp.status_code != 200 and body.get("code") == ErrorCode.NOT_FOUND:
        raise NotFound(str(body.get("message")))
    if resp.status_code != 200:
        raise Invalid(f"the running twin refused the message: {body.get('message')}")
    return body


async def unshare(service: Service, args: argparse.Namespace) -> int:
    for path in await service.access.revoke(args.path, args.grantee):
        print(f"revoked {path} for {args.grantee}")
        await _tell(service, path, args.grantee, (), revoked=True)
    return 0


async def shares(service: Service, args: argparse.Namespace) -> int:
    from core.acl import normalize

    grants = await service.access.grants(under=normalize(args.prefix) if args.prefix else None)
    legacy = SharedObjects(service.db, lambda: service.store)  # `twin share` before the tree
    objects = await legacy.list("/") if await _any_objects(legacy) else []
    if args.json:
        print(json.dumps({"grants": [g.to_json() for g in grants],
                          "objects": [o.to_wire() for o in objects]}))
        return 0
    for g in grants:
        until = dt.datetime.fromtimestamp(g.until).isoformat() if g.until else "-"
        print(f"{g.path:<40} {g.who:<20} {','.join(g.rights):<16} until {until}")
    return 0


async def _any_objects(legacy: SharedObjects) -> bool:
    try:
        await legacy.stat("/")
        return True
    except NotFound:
        return False


async def send(service: Service, args: argparse.Namespace) -> int:
    """Queue a message; through the running twin when there is one, so it leaves at
    once (a row queued here would wait for that twin's next outbox poll)."""
    running = _running_twin(service.data_dir)
    if running is not None:
        uid = (await asyncio.to_thread(_local_send, service.data_dir, running, args.name,
                                       args.text))["uid"]
    else:
        uid = await service.peer.send(args.name, "message", {"text": args.text})
    print(f"queued {uid} for {args.name}")
    return 0


async def inbox(service: Service, args: argparse.Namespace) -> int:
    messages = await service.peer.inbox.list(args.limit)
    if args.json:
        print(json.dumps([m.to_json() for m in messages]))
        return 0
    for m in messages:
        when = dt.datetime.fromtimestamp(m.received).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{when}  {'bounce' if m.bounce else m.sender:<12} {m.text}")
    return 0


async def outbox(service: Service, args: argparse.Namespace) -> int:
    pending = await service.peer.outbox.list()
    if args.json:
        print(json.dumps([p.to_json() for p in pending]))
    for p in [] if args.json else pending:
        print(f"{p.uid.hex()}  {p.recipient:<12} {p.kind:<14} attempts {p.attempts}  "
              f"{p.last_error}")
    return 0


async def fetch(service: Service, args: argparse.Namespace) -> int:
    if args.list:
        entries = await service.peer.content_list(args.name, args.path)
        if args.json:
            print(json.dumps([e.to_wire() for e in entries]))
        for e in [] if args.json else entries:
            print(f"{'d' if e.is_dir else '-'} {e.size:>12}  {e.path}")
        return 0
    out: BinaryIO
    target = Path(args.output) if args.output else None
    tmp = target.with_name(target.name + ".part") if target else None
    out = tmp.open("wb") if tmp else binary_stdout()
    total = 0
    progress = Progress(f"fetch {args.path}", forced=args.progress)
    try:
        async for chunk in service.peer.content_get(args.name, args.path, args.start, args.end):
            await asyncio.to_thread(out.write, chunk)
            total += len(chunk)
            progress.step(human_bytes(total))
    except BaseException:
        if tmp:
            out.close()
            tmp.unlink(missing_ok=True)
        raise
    if tmp and target:
        out.close()
        os.replace(tmp, target)
    # the summary goes to stderr: stdout may be the content itself
    progress.summary({"path": args.path, "from": args.name, "bytes": total,
                      "output": str(target) if target else None},
                     f"fetched {args.path} from {args.name}: {total} bytes"
                     + (f" -> {target}" if target else ""),
                     as_json=args.json, out=sys.stderr)
    return 0
