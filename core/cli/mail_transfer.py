"""``twin mail import maildir|mbox|imap …`` and ``twin mail export --format F DEST``.

While the twin runs, its store is its own: the CLI reads the source or
writes the export and asks the running twin to file or read, through the
owner's local API (``core.owner.transfer``); when it is stopped, the
CLI opens the store itself. Same loops (``core.mail.transfer``), same output.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.cli import open_service
from core.cli.storage import running_twin
from core.errors import Forbidden, Invalid, NotFound, TwinError, Unavailable, from_code
from core.mail import transfer
from core.mail.imap_source import ImapOptions, ImapSource
from core.mail.imported import Filed, Incoming, Skipped
from core.mail.transfer import FileSource, FolderInfo, Listed, LocalMail
from core.progress import Progress


def register(actions: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    a = actions.add_parser("import", help="import mail from a Maildir, an mbox or an IMAP server")
    a.add_argument("kind", choices=["maildir", "mbox", "imap"], help="where the mail comes from")
    a.add_argument("path", nargs="?", help="the Maildir directory, mbox file or directory")
    a.add_argument("--host", help="imap: the server")
    a.add_argument("--port", type=int, help="imap: its port (default 993 with --tls, else 143)")
    a.add_argument("--user", help="imap: the login there")
    a.add_argument("--password-file", help="imap: a file holding the password "
                   "(default: $TWIN_IMPORT_PASSWORD, else asked on the terminal)")
    sec = a.add_mutually_exclusive_group()
    sec.add_argument("--tls", dest="security", action="store_const", const="tls",
                     help="imap: implicit TLS (IMAPS)")
    sec.add_argument("--starttls", dest="security", action="store_const", const="starttls",
                     help="imap: STARTTLS (the default)")
    sec.add_argument("--plain", dest="security", action="store_const", const="plain",
                     help="imap: no TLS at all (the password crosses in clear)")
    a.add_argument("--insecure", action="store_true",
                   help="imap: do not verify the server's certificate")
    a.add_argument("--folder", help="maildir/mbox: import under this folder; "
                   "imap: only this source folder (twin name) and those below it")
    _common(a)
    a = actions.add_parser("export", help="export mail to Maildir++ or mbox files")
    a.add_argument("--format", required=True, choices=["maildir", "mbox"],
                   help="Maildir++ (a folder per folder) or one mbox file per folder")
    a.add_argument("--folder", help="only this folder and those below it")
    a.add_argument("dest", help="a new (or empty) directory")
    _common(a)


def _common(a: argparse.ArgumentParser) -> None:
    a.add_argument("--login", help="whose mail (default: the owner)")
    a.add_argument("--progress", action="store_true",
                   help="progress on stderr even when it is not a terminal")
    a.add_argument("--json", action="store_true", help="the summary as JSON")


def run(args: argparse.Namespace) -> int:
    data = Path(args.data).expanduser().resolve()
    service = open_service(args)
    try:
        login = (args.login or f"{service.config.name}@{service.config.domain}").lower()
        if service.users.owner_of(login) != login:
            raise NotFound(f"no user {login}")
        max_size = service.config.int("smtp.max_message_size")
        source = _source(args, max_size) if args.action == "import" else None
        twin = running_twin(data)

        async def go() -> int:
            if twin is not None:
                remote = RemoteMail(data, *twin, login)
                try:
                    return await _work(args, remote, source)
                finally:
                    await remote.close()
            async with service.opened_store():
                return await _work(args, LocalMail(service.mail, login, max_size), source)
        return asyncio.run(go())
    finally:
        service.close()


def _source(args: argparse.Namespace, max_size: int) -> transfer.Source:
    if args.kind in ("maildir", "mbox"):
        if not args.path:
            raise Invalid(f"usage: twin mail import {args.kind} PATH")
        return FileSource(args.kind, Path(args.path).expanduser(), max_size, args.folder)
    if not args.host or not args.user:
        raise Invalid("usage: twin mail import imap --host H [--port P] --user U "
                      "[--password-file F] [--tls|--starttls|--plain]")
    security = args.security or "starttls"
    port = args.port or (993 if security == "tls" else 143)
    return ImapSource(ImapOptions(args.host, port, args.user, _password(args), security,
                                  not args.insecure), max_size)


def _password(args: argparse.Namespace) -> str:
    if args.password_file:
        try:
            return Path(args.password_file).read_text().splitlines()[0]
        except (OSError, IndexError) as exc:
            raise Invalid(f"cannot read a password from {args.password_file}: {exc}") from None
    if os.environ.get("TWIN_IMPORT_PASSWORD"):
        return os.environ["TWIN_IMPORT_PASSWORD"]
    if sys.stdin.isatty():
        return getpass.getpass(f"password of {args.user} on {args.host}: ")
    raise Invalid("no password: give --password-file or $TWIN_IMPORT_PASSWORD")


async def _work(args: argparse.Namespace, access: transfer.MailAccess,
                source: transfer.Source | None) -> int:
    if source is None:
        writer = await asyncio.to_thread(transfer.writer_for, args.format, args.dest)
        progress = Progress("export", forced=args.progress)
        done = await transfer.run_export(access, writer, progress, args.folder)
        progress.summary({"format": args.format, **done.counts()},
                         transfer.export_text(done, progress.seconds), as_json=args.json)
        return 0
    progress = Progress("import", forced=args.progress)
    only = args.folder if args.kind == "imap" else None
    if isinstance(source, ImapSource):
        await source.connect()
    try:
        summary = await transfer.run_import(access, source, progress, only)
    finally:
        await source.close()
    progress.summary({"source": source.name, **summary.counts()},
                     transfer.import_text(summary, progress.seconds), as_json=args.json)
    for s in [] if args.json else summary.skipped[:20]:
        print(f"  skipped {s.folder} {s.what}: {s.reason}", file=sys.stderr)
    return 0


class RemoteMail:
    """``MailAccess`` through the running twin's local API (``core.owner.transfer``)."""

    def __init__(self, data: Path, origin: str, token: str, login: str) -> None:
        import httpx

        from core import tls
        from core.owner.transfer import LOCAL_TRANSFER

        self.login = login
        self.http = httpx.AsyncClient(
            base_url=f"{origin}{LOCAL_TRANSFER}", verify=tls.local_context(data),
            headers={"authorization": f"Bearer {token}"}, timeout=300.0)

    async def close(self) -> None:
        await self.http.aclose()

    def _params(self, **more: str) -> dict[str, str]:
        return {"login": self.login, **more}

    async def _check(self, resp: Any) -> Any:
        if resp.status_code == 200:
            return resp
        try:
            body = resp.json()
            message = body.get("message", resp.status_code)
        except ValueError:
            body, message = {}, resp.status_code
        error = from_code(str(body.get("code", "")), str(message))  # the same error as offline
        if error is not None:
            raise error
        if resp.status_code == 404:
            raise NotFound(str(message))
        if resp.status_code == 403:
            raise Forbidden(str(message))
        if resp.status_code == 400:
            raise Invalid(f"the running twin says: {message}")
        raise Unavailable(f"the running twin says: {message}")

    async def known(self, source: str, keys: list[str]) -> set[str]:
        resp = await self._check(await self.http.post(
            "/known", params=self._params(), json={"source": source, "keys": keys}))
        return set(resp.json()["known"])

    async def file(self, folder: str, source: str, items: Sequence[Incoming]) -> Filed:
        head = transfer.dumps({"items": [{"key": i.key, "flags": sorted(i.flags),
                                          "date": i.date, "size": len(i.data)}
                                         for i in items]})
        body = head + b"\n" + b"".join(i.data for i in items)
        resp = await self._check(await self.http.post(
            "/import", params=self._params(folder=folder, source=source), content=body))
        got = resp.json()
        return Filed(int(got["added"]), int(got["bytes"]),
                     [Skipped(s["folder"], s["what"], s["reason"]) for s in got["skipped"]])

    async def folders(self) -> list[FolderInfo]:
        resp = await self._check(await self.http.get("/folders", params=self._params()))
        return [FolderInfo(f["name"], int(f["messages"]), int(f["bytes"])) for f in resp.json()]

    async def messages(self, folder: str) -> list[Listed]:
        resp = await self._check(await self.http.get("/messages",
                                                     params=self._params(folder=folder)))
        return [Listed.from_json(v) for v in resp.json()]

    async def bodies(self, folder: str, uids: Sequence[int]) -> list[bytes]:
        resp = await self._check(await self.http.post(
            "/bodies", params=self._params(folder=folder), json={"uids": list(uids)}))
        raw = resp.content
        end = raw.index(b"\n")
        sizes = json.loads(raw[:end])["sizes"]
        out: list[bytes] = []
        at = end + 1
        for size in sizes:
            out.append(raw[at:at + size])
            at += size
        if at != len(raw):
            raise TwinError("the running twin's answer does not match its sizes")
        return out
