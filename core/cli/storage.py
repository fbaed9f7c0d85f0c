"""``twin storage``: look after the dispersed store from the command line.

Every subcommand opens the store of the data dir with the twin's own keys,
does one thing, prints the result on stdout (progress goes to stderr) and
closes it. The store's directories are locked by one process at a time: while
``twin serve`` runs, these fail at once with exit code 2 and a message naming
its pid (not a misleading "not enough shares").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import asdict
from pathlib import Path
from typing import Any, BinaryIO

from storage import ObjectRef, StorageError, Store, StoreInUse, open_store

MiB = 1024 * 1024


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("storage", help="the dispersed object store: put, get, verify, repair")
    cmds = p.add_subparsers(dest="storage_command", metavar="SUBCOMMAND", required=True)
    c = cmds.add_parser("put", help="store a file; prints its reference")
    c.add_argument("file", type=Path)
    c = cmds.add_parser("get", help="read an object to a file (or stdout)")
    c.add_argument("ref")
    c.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    cmds.add_parser("ls", help="list objects")
    c = cmds.add_parser("rm", help="delete an object")
    c.add_argument("ref")
    c = cmds.add_parser("status", help="backends and their health")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c = cmds.add_parser("verify", help="check every share (or a sample) and find orphans")
    c.add_argument("--sample", type=float, metavar="F", help="fraction of objects to check")
    c.add_argument("--clean", action="store_true", help="delete orphan shares")
    cmds.add_parser("repair", help="rebuild missing or corrupt shares")
    cmds.add_parser("backup", help="back twin.db and the catalogue up into the store now")
    p.set_defaults(func=run)


def open_from_config(data: Path) -> Store:
    from core import config as cfg
    from core import identity

    conf = cfg.load(data)
    ident = identity.load(conf.data_dir)
    return open_store(
        conf.data_dir, k=conf.int("storage.k"), n=conf.int("storage.n"),
        segment_size=conf.int("storage.segment_size"), backends=conf.list("storage.backends"),
        master_key=ident.derive_key("storage"), metadata_key=ident.derive_key("metadata"))


def run(args: argparse.Namespace) -> int:
    from core.service import store_in_use_message

    try:
        store = open_from_config(Path(args.data))
    except StoreInUse as exc:
        print(f"twin storage: {store_in_use_message(exc)}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"twin storage: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_closing(store, _COMMANDS[args.storage_command](store, args)))
    except (StorageError, OSError, ValueError) as exc:
        print(f"twin storage: {exc}", file=sys.stderr)
        return 2


async def _closing(store: Store, work: Coroutine[Any, Any, int]) -> int:
    try:
        return await work
    finally:
        await store.close()


class Progress:
    """One self-overwriting line on stderr, at most a few times a second."""

    def __init__(self, what: str, total: int | None) -> None:
        self.what, self.total, self.done = what, total, 0
        self.start = self.last = time.monotonic()

    def add(self, amount: int) -> None:
        self.done += amount
        now = time.monotonic()
        if now - self.last >= 0.25 and sys.stderr.isatty():
            self.last = now
            rate = self.done / MiB / max(now - self.start, 1e-6)
            of = f" of {self.total / MiB:.1f}" if self.total else ""
            print(f"\r{self.what}: {self.done / MiB:.1f}{of} MiB ({rate:.0f} MiB/s)",
                  end="", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if sys.stderr.isatty() and self.done:
            print(file=sys.stderr)


async def _read_file(f: BinaryIO, progress: Progress) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    while True:
        block = await loop.run_in_executor(None, f.read, 4 * MiB)
        if not block:
            return
        progress.add(len(block))
        yield block


async def _put(store: Store, args: argparse.Namespace) -> int:
    path: Path = args.file
    with open(path, "rb") as f:  # noqa: ASYNC230 - opening is instant; reads go to a thread
        progress = Progress(f"put {path.name}", os.fstat(f.fileno()).st_size)
        ref = await store.put(_read_file(f, progress))
    progress.finish()
    print(ref)
    return 0


async def _get(store: Store, args: argparse.Namespace) -> int:
    stream = await store.get(args.ref)
    progress = Progress("get", stream.size)
    out = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: ASYNC230, SIM115
    try:
        async for chunk in stream:
            out.write(chunk)
            progress.add(len(chunk))
    finally:
        if args.output:
            out.close()
        else:
            out.flush()
    progress.finish()
    return 0


async def _ls(store: Store, args: argparse.Namespace) -> int:
    async for info in store.iter_objects():
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.created))
        print(f"{ObjectRef(info.id, info.size)}  {info.size:>14}  {created}  "
              f"{info.segments} seg  {info.k}-of-{info.n}")
    return 0


async def _rm(store: Store, args: argparse.Namespace) -> int:
    await store.delete(args.ref)
    return 0


async def _status(store: Store, args: argparse.Namespace) -> int:
    healths = await store.health()
    if args.json:
        print(json.dumps([{"name": h.name, "kind": h.kind, "location": h.location,
                           "health": {"reachable": h.reachable, "free_bytes": h.free_bytes,
                                      "errors": h.errors, "detail": h.detail}}
                          for h in healths], indent=2))
        return 0
    print(f"store: {store.k}-of-{store.n}, segments of {store.segment_size} bytes")
    for h in healths:
        free = "?" if h.free_bytes is None else f"{h.free_bytes / 2**30:.1f} GiB free"
        state = "ok" if h.reachable else f"UNREACHABLE ({h.detail})"
        print(f"{h.name:<12} {h.kind:<6} {h.location:<40} {state}, {free}, {h.errors} errors")
    return 0 if all(h.reachable for h in healths) else 1


async def _verify(store: Store, args: argparse.Namespace) -> int:
    print("verifying…", file=sys.stderr)
    report = await store.verify(args.sample, clean=args.clean)
    for problem in report.problems:
        print(f"share {problem.index} of segment {problem.segment} of {problem.object_id} "
              f"on {problem.backend}: {problem.reason}")
    print(json.dumps({k: v for k, v in asdict(report).items() if k != "problems"}, indent=2))
    return 0 if report.healthy or (args.clean and not (report.degraded or report.unreadable))\
        else 1


async def _repair(store: Store, args: argparse.Namespace) -> int:
    print("repairing…", file=sys.stderr)
    report = await store.repair()
    print(json.dumps(asdict(report), indent=2))
    return 0 if not (report.unrecoverable or report.failures) else 1


async def _backup(store: Store, args: argparse.Namespace) -> int:
    from core import backup
    from core.db import Database
    from core.service import DB_FILE

    db = Database(store.data_dir / DB_FILE)
    try:
        print(await backup.backup_all(db, store))
    finally:
        db.close()
    return 0


_COMMANDS = {"put": _put, "get": _get, "ls": _ls, "rm": _rm, "status": _status,
             "verify": _verify, "repair": _repair, "backup": _backup}
