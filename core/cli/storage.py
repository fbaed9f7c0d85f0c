"""``twin storage``: look after the dispersed store from the command line.

Every subcommand does one thing and prints the result on stdout (progress on
stderr), whether or not the twin runs:

- twin stopped (``Offline``): the command opens the store of the data dir with
  the twin's own keys and closes it when done.
- twin running (``Online``): ``twin serve`` holds the store (its local backends
  are locked by one process at a time), so the command asks the running twin
  to do the work through its owner-only local storage API
  (``core.owner.storage``): https to 127.0.0.1 on the port in
  ``run/status.json``, the twin's own certificate as the only trusted CA (the
  connection is verified, never trusted blindly), the token from
  ``run/local.token``. Files are streamed both ways, never held in memory.

Both targets answer the same calls with the same storage dataclasses, and one
set of printers formats them, so the output is the same in both modes. A store
locked by a process that does not answer (a twin starting or stopping, another
``twin storage``) fails at once with exit code 2 and a message naming its pid
(not a misleading "not enough shares").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import quote

import httpx

from core import backends
from core.backends import BackendRow
from core.cli import binary_stdout
from core.errors import TwinError
from core.owner.storage import (
    LOCAL_STORAGE,
    StoreStatus,
    health_json,
    repair_from_json,
    verify_from_json,
)
from core.progress import Progress as Steps
from core.progress import heartbeat
from storage import (
    DrainProgress,
    ObjectInfo,
    ObjectRef,
    RepairReport,
    StorageError,
    Store,
    StoreInUse,
    VerifyReport,
    open_store,
)
from storage.model import ref_id

MiB = 1024 * 1024
SLOW = httpx.Timeout(60.0, read=None)  # verify, repair, backup: as long as the store needs


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("storage", help="the dispersed object store: put, get, verify, repair")
    cmds = p.add_subparsers(dest="storage_command", metavar="SUBCOMMAND", required=True)
    c = cmds.add_parser("put", help="store a file; prints its reference")
    c.add_argument("file", type=Path, help="the file to store")
    c = cmds.add_parser("get", help="read an object to a file (or stdout)")
    c.add_argument("ref", help="the reference put printed")
    c.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    cmds.add_parser("ls", help="list objects")
    c = cmds.add_parser("rm", help="delete an object")
    c.add_argument("ref", help="the object's reference")
    c = cmds.add_parser("status", help="backends and their health")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c = cmds.add_parser("verify", help="check every share (or a sample) and find orphans")
    c.add_argument("--sample", type=float, metavar="F", help="fraction of objects to check")
    c.add_argument("--clean", action="store_true", help="delete orphan shares")
    cmds.add_parser("repair", help="rebuild missing or corrupt shares")
    cmds.add_parser("backup", help="back twin.db and the catalogue up into the store now")
    _register_backends(cmds)
    p.set_defaults(func=run)
    for name in ("verify", "repair", "backup"):  # the long ones: progress and a summary
        c = cmds.choices[name]
        c.add_argument("--json", action="store_true", help="the summary as JSON")
        c.add_argument("--progress", action="store_true",
                       help="progress on stderr even when it is not a terminal")


def _register_backends(cmds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = cmds.add_parser("backends", help="list, add, drain and remove the store's backends")
    sub = p.add_subparsers(dest="backends_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="each backend: kind, location, shares held, failure domain")
    c = sub.add_parser("add", help="add a backend (to the running store and twin.toml)")
    c.add_argument("name", help="its name (letters, digits, - and _)")
    c.add_argument("kind", choices=("local", "resp"),
                   help="a directory, or a Redis-protocol server")
    c.add_argument("location", help="local: a directory (relative to the data dir); resp: "
                                    "redis://host:port/db or zdb://host:port/namespace")
    c.add_argument("--password", action="store_true",
                   help="ask for the server's password (read from stdin when not a terminal)")
    c.add_argument("--password-file", metavar="PATH",
                   help="a file holding the password (relative to the data dir)")
    c.add_argument("--force", action="store_true", help="add it even if it weakens the "
                   "store's spread over failure domains")
    c = sub.add_parser("drain", help="move every share off a backend, online and resumable")
    c.add_argument("name", help="the backend's name")
    c.add_argument("--force", action="store_true", help="drain it even if the shares then "
                   "span fewer failure domains")
    c = sub.add_parser("rm", help="remove a drained backend (from the store and twin.toml)")
    c.add_argument("name", help="the backend's name")
    c.add_argument("--force", action="store_true", help="remove it even if the shares then "
                   "span fewer failure domains")


def open_from_config(data: Path, overrides: dict[str, Any] | None = None) -> Store:
    """The store as the data dir's config, with the command line's ``--set``, says."""
    from core import config as cfg
    from core import identity

    conf = cfg.load(data, overrides)
    ident = identity.load(conf.data_dir)
    return open_store(
        conf.data_dir, k=conf.int("storage.k"), n=conf.int("storage.n"),
        segment_size=conf.int("storage.segment_size"), backends=conf.list("storage.backends"),
        master_key=ident.derive_key("storage"), metadata_key=ident.derive_key("metadata"))


def run(args: argparse.Namespace) -> int:
    try:
        return _run(Path(args.data).expanduser().resolve(), _COMMANDS[args.storage_command],
                    args)
    except (StorageError, TwinError, httpx.HTTPError, OSError, ValueError) as exc:
        print(f"twin storage: {exc}", file=sys.stderr)
        return 2


def _run(data: Path, command: Command, args: argparse.Namespace) -> int:
    """Through the running twin if there is one, else on the store opened here.

    A connection refused means nothing was sent: the status file may be stale
    (the twin was killed), so the store is tried directly; if it is locked all
    the same, the message says who holds it and why the twin did not answer.
    """
    unanswered: httpx.ConnectError | None = None
    twin = running_twin(data)
    if twin is not None:
        try:
            return asyncio.run(_online(data, twin, command, args))
        except httpx.ConnectError as exc:
            unanswered = exc
    try:
        store = open_from_config(data, _overrides(args))
    except StoreInUse as exc:
        twin = None if unanswered else running_twin(data)  # it may have just started
        if twin is not None:
            try:
                return asyncio.run(_online(data, twin, command, args))
            except httpx.ConnectError as again:
                unanswered = again
        print(f"twin storage: {_in_use(exc, unanswered)}", file=sys.stderr)
        return 2
    return asyncio.run(_on(Offline(store), command, args))


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from core.cli import overrides

    return overrides(args)


def _in_use(exc: StoreInUse, unanswered: Exception | None) -> str:
    who = f"pid {exc.pid}" if exc.pid is not None else "another process"
    why = f": {unanswered}" if unanswered else " (run/status.json or run/local.token missing)"
    return (f"the twin's storage is in use by {who}, but no running `twin serve` answers "
            f"on its local storage API{why}; is it starting or stopping? Try again, or "
            f"stop it; {exc.path} is locked")


def running_twin(data: Path) -> tuple[str, str] | None:
    """The running twin's HTTPS origin and local token, or None (then the store is ours)."""
    from core.cli.peer import _running_twin
    from core.owner import TOKEN_FILE

    origin = _running_twin(data)
    if origin is None:
        return None
    try:
        token = (data / TOKEN_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return (origin, token) if token else None


async def _online(data: Path, twin: tuple[str, str], command: Command,
                  args: argparse.Namespace) -> int:
    return await _on(Online(data, *twin), command, args)


async def _on(target: Target, command: Command, args: argparse.Namespace) -> int:
    try:
        if isinstance(target, Offline):  # what can never work is refused before any work
            await target.store.check_backends()
        return await command(target, args)
    finally:
        await target.close()


class Target(Protocol):
    """What the subcommands need of the store, wherever it is open."""

    async def put(self, source: AsyncIterator[bytes]) -> str: ...
    async def open(self, ref: str) -> tuple[int | None, AsyncIterator[bytes]]: ...
    def objects(self) -> AsyncIterator[ObjectInfo]: ...
    async def delete(self, ref: str) -> None: ...
    async def status(self) -> StoreStatus: ...
    async def verify(self, sample: float | None, clean: bool) -> VerifyReport: ...
    async def repair(self) -> RepairReport: ...
    async def backup(self) -> str: ...
    async def backends(self) -> list[BackendRow]: ...
    async def add_backend(self, spec: dict[str, str], force: bool) -> BackendRow: ...
    async def drain(self, name: str, force: bool,
                    progress: Callable[[DrainProgress], None]) -> DrainProgress: ...
    async def remove_backend(self, name: str, force: bool) -> None: ...
    async def close(self) -> None: ...


Command = Callable[[Target, argparse.Namespace], Awaitable[int]]


class Offline:
    """The store of the data dir, opened by this process: the twin is not running."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def put(self, source: AsyncIterator[bytes]) -> str:
        return str(await self.store.put(source))

    async def open(self, ref: str) -> tuple[int | None, AsyncIterator[bytes]]:
        stream = await self.store.get(ref)  # ObjectNotFound now, before any output
        return stream.size, aiter(stream)

    def objects(self) -> AsyncIterator[ObjectInfo]:
        return self.store.iter_objects()

    async def delete(self, ref: str) -> None:
        await self.store.delete(ref)

    async def status(self) -> StoreStatus:
        return await StoreStatus.of(self.store)

    async def verify(self, sample: float | None, clean: bool) -> VerifyReport:
        return await self.store.verify(sample, clean=clean)

    async def repair(self) -> RepairReport:
        return await self.store.repair()

    async def backup(self) -> str:
        from core import backup
        from core.db import Database
        from core.service import DB_FILE

        db = Database(self.store.data_dir / DB_FILE)
        try:
            return await backup.backup_all(db, self.store)
        finally:
            db.close()

    async def backends(self) -> list[BackendRow]:
        return await backends.rows(self.store)

    async def add_backend(self, spec: dict[str, str], force: bool) -> BackendRow:
        return await backends.add(self.store, self.store.data_dir, spec, force)

    async def drain(self, name: str, force: bool,
                    progress: Callable[[DrainProgress], None]) -> DrainProgress:
        return await backends.drain(self.store, name, progress, force)

    async def remove_backend(self, name: str, force: bool) -> None:
        await backends.remove(self.store, self.store.data_dir, name, force)

    async def close(self) -> None:
        await self.store.close()


class Online:
    """The running twin's store, through its local storage API (one request per call)."""

    def __init__(self, data: Path, origin: str, token: str) -> None:
        from core import tls

        self.http = httpx.AsyncClient(
            base_url=f"{origin}{LOCAL_STORAGE}",
            verify=tls.local_context(data),  # the twin's own certificate, pinned as the CA
            headers={"authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(60.0, connect=10.0))

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = await self.http.request(method, path, **kwargs)
        _check(resp)
        return resp.json()

    async def put(self, source: AsyncIterator[bytes]) -> str:
        body = await self._call("PUT", "/objects", content=source)
        return str(body["ref"])

    async def open(self, ref: str) -> tuple[int | None, AsyncIterator[bytes]]:
        request = self.http.build_request("GET", _object_path(ref))
        resp = await self.http.send(request, stream=True)
        if resp.status_code != 200:
            await resp.aread()
            await resp.aclose()
            _check(resp)
        length = resp.headers.get("content-length", "")
        return (int(length) if length.isdigit() else None), _body(resp)

    async def objects(self) -> AsyncIterator[ObjectInfo]:
        async with self.http.stream("GET", "/objects") as resp:
            if resp.status_code != 200:
                await resp.aread()
                _check(resp)
            async for line in resp.aiter_lines():
                if line:
                    yield ObjectInfo(**json.loads(line))

    async def delete(self, ref: str) -> None:
        await self._call("DELETE", _object_path(ref))

    async def status(self) -> StoreStatus:
        return StoreStatus.from_json(await self._call("GET", "/status"))

    async def verify(self, sample: float | None, clean: bool) -> VerifyReport:
        params = {"clean": "1" if clean else "0"}
        if sample is not None:
            params["sample"] = repr(sample)
        return verify_from_json(await self._call("POST", "/verify", params=params,
                                                 timeout=SLOW))

    async def repair(self) -> RepairReport:
        return repair_from_json(await self._call("POST", "/repair", timeout=SLOW))

    async def backup(self) -> str:
        return str((await self._call("POST", "/backup", timeout=SLOW))["name"])

    async def backends(self) -> list[BackendRow]:
        return [BackendRow.from_json(r) for r in await self._call("GET", "/backends")]

    async def add_backend(self, spec: dict[str, str], force: bool) -> BackendRow:
        return BackendRow.from_json(await self._call(
            "POST", "/backends", json=spec, params={"force": "1" if force else "0"},
            timeout=SLOW))

    async def drain(self, name: str, force: bool,
                    progress: Callable[[DrainProgress], None]) -> DrainProgress:
        path = f"/backends/{quote(name, safe='')}/drain"
        final: DrainProgress | None = None
        async with self.http.stream("POST", path, params={"force": "1" if force else "0"},
                                    timeout=SLOW) as resp:
            if resp.status_code != 200:
                await resp.aread()
                _check(resp)
            async for line in resp.aiter_lines():
                if not line:
                    continue
                body = json.loads(line)
                if "error" in body:
                    raise TwinError(str(body["error"]))
                last = body.pop("final", False)
                step = backends.progress_from_json(body)
                progress(step)
                final = step if last else None
        if final is None:
            raise TwinError(f"the running twin ended the drain of {name} without a result "
                            "(run it again: it resumes)")
        return final

    async def remove_backend(self, name: str, force: bool) -> None:
        await self._call("DELETE", f"/backends/{quote(name, safe='')}",
                         params={"force": "1" if force else "0"})

    async def close(self) -> None:
        await self.http.aclose()


def _object_path(ref: str) -> str:
    ref_id(ref)  # a malformed ref fails here exactly as offline, never reaching the twin
    return f"/objects/{quote(ref.strip(), safe='')}"


async def _body(resp: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.aiter_raw():
            yield chunk
    finally:
        await resp.aclose()


def _check(resp: httpx.Response) -> None:
    """A refusal as one clear line: the twin's own message (the same one as offline)."""
    if resp.is_success:
        return
    try:
        body = resp.json()
        message, code = str(body["message"]), str(body["code"])
    except (ValueError, KeyError, TypeError):
        message, code = f"HTTP {resp.status_code}", "error"
    if code == "forbidden":
        message = f"the running twin refused its local token ({message}); is it restarting?"
    raise TwinError(message, code=code)


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


async def _put(target: Target, args: argparse.Namespace) -> int:
    path: Path = args.file
    with open(path, "rb") as f:  # noqa: ASYNC230 - opening is instant; reads go to a thread
        progress = Progress(f"put {path.name}", os.fstat(f.fileno()).st_size)
        ref = await target.put(_read_file(f, progress))
    progress.finish()
    print(ref)
    return 0


async def _get(target: Target, args: argparse.Namespace) -> int:
    size, chunks = await target.open(args.ref)
    progress = Progress("get", size)
    out = open(args.output, "wb") if args.output else binary_stdout()  # noqa: ASYNC230, SIM115
    try:
        async for chunk in chunks:
            out.write(chunk)
            progress.add(len(chunk))
    finally:
        if args.output:
            out.close()
        else:
            out.flush()
    progress.finish()
    return 0


async def _ls(target: Target, args: argparse.Namespace) -> int:
    async for info in target.objects():
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.created))
        print(f"{ObjectRef(info.id, info.size)}  {info.size:>14}  {created}  "
              f"{info.segments} seg  {info.k}-of-{info.n}")
    return 0


async def _rm(target: Target, args: argparse.Namespace) -> int:
    await target.delete(args.ref)
    return 0


async def _status(target: Target, args: argparse.Namespace) -> int:
    from core import domains

    status = await target.status()
    where = [status.domains.get(h.name, "?") for h in status.backends]
    spread = domains.summarise(where, status.k, status.n)
    if args.json:  # the list of backends as before, each with its failure domain
        print(json.dumps([{**health_json(h), "failure_domain": d}
                          for h, d in zip(status.backends, where, strict=True)], indent=2))
        return 0
    print(f"store: {status.k}-of-{status.n}, segments of {status.segment_size} bytes")
    for h, d in zip(status.backends, where, strict=True):
        free = "?" if h.free_bytes is None else f"{h.free_bytes / 2**30:.1f} GiB free"
        state = ("ok" if h.writable else f"READ-ONLY ({h.detail})") if h.reachable \
            else f"UNREACHABLE ({h.detail})"
        flags = f" [{h.flags}]" if h.flags else ""
        print(f"{h.name:<12} {h.kind:<6} {h.location:<40} {state}, {free}, {h.errors} "
              f"errors{flags}, {d}")
    print(f"failure domains: {spread.count} (at most {spread.largest} backends in one)")
    if spread.warning:
        print(f"WARNING: {spread.warning}")
    return 0 if all(h.reachable and h.writable for h in status.backends) else 1


async def _verify(target: Target, args: argparse.Namespace) -> int:
    steps = Steps("verify", forced=args.progress)
    report = await heartbeat(steps, target.verify(args.sample, args.clean),
                                  "checking shares")
    for problem in report.problems if not args.json else []:
        print(f"share {problem.index} of segment {problem.segment} of {problem.object_id} "
              f"on {problem.backend}: {problem.reason}")
    counts = {k: v for k, v in asdict(report).items() if k != "problems"}
    if args.json:
        counts["problems"] = [asdict(p) for p in report.problems]
    steps.summary(counts, f"verified {report.objects_checked} object(s), "
                  f"{report.shares_checked} share(s): {len(report.problems)} problem(s), "
                  f"{len(report.degraded)} degraded, {len(report.unreadable)} unreadable, "
                  f"{report.orphans} orphan share(s) ({report.orphans_removed} removed)"
                  + (f"; backends unreachable: {', '.join(report.unreachable_backends)}"
                     if report.unreachable_backends else ""), as_json=args.json)
    return 0 if report.healthy or (args.clean and not (report.degraded or report.unreadable))\
        else 1


async def _repair(target: Target, args: argparse.Namespace) -> int:
    steps = Steps("repair", forced=args.progress)
    report = await heartbeat(steps, target.repair(), "rebuilding shares")
    text = (f"repaired: {report.objects_checked} object(s) checked, "
            f"{report.segments_repaired} segment(s) repaired, {report.shares_rebuilt} share(s) "
            "rebuilt, "
            f"{len(report.unrecoverable)} unrecoverable, {len(report.failures)} failure(s)")
    for line in [] if args.json else [*report.unrecoverable, *report.failures]:
        print(f"  not repaired: {line}")
    steps.summary(asdict(report), text, as_json=args.json)
    return 0 if not (report.unrecoverable or report.failures) else 1


async def _backup(target: Target, args: argparse.Namespace) -> int:
    steps = Steps("backup", forced=args.progress)
    name = await heartbeat(steps, target.backup(), "backing twin.db and the catalogue up")
    if args.json:
        steps.summary({"name": name}, "", as_json=True)
    else:
        print(name)  # the name alone on stdout, for scripts; the time on stderr
        steps.summary({}, f"backed up as {name}", out=sys.stderr)
    return 0


async def _backends(target: Target, args: argparse.Namespace) -> int:
    action = args.backends_command
    if action == "list":
        print(f"{'NAME':<12} {'KIND':<6} {'LOCATION':<40} {'SHARES':>8}  {'STATE':<10} "
              "FAILURE DOMAIN")
        for r in await target.backends():
            state = "draining" if r.draining else "ok" if r.reachable else "UNREACHABLE"
            print(f"{r.name:<12} {r.kind:<6} {r.location:<40} {r.shares:>8}  {state:<10} "
                  f"{r.domain}" + (f"  ({r.detail})" if r.detail and not r.reachable else ""))
        return 0
    if action == "add":
        spec = {"name": args.name, "kind": args.kind, "location": args.location}
        if args.password:
            spec["password"] = _read_password()
        if args.password_file:
            spec["password_file"] = args.password_file
        row = await target.add_backend(spec, args.force)
        print(f"added {row.name} ({row.kind} {row.location}, {row.domain}): new shares go "
              f"to it; shares already stored stay where they are (a drain moves them)")
        return 0
    if action == "drain":
        return await _drain(target, args)
    await target.remove_backend(args.name, args.force)
    print(f"removed {args.name} from the store and from twin.toml")
    return 0


def _read_password() -> str:
    """The password from the terminal (not echoed) or the first line of stdin."""
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("password: ")
    return sys.stdin.readline(4097).rstrip("\r\n")


async def _drain(target: Target, args: argparse.Namespace) -> int:
    last = 0.0
    told_resumed = False

    def heard(p: DrainProgress) -> None:
        nonlocal last, told_resumed
        if p.resumed and not told_resumed:
            told_resumed = True
            print(f"drain {p.backend}: resuming an interrupted drain, {p.total - p.left} of "
                  f"{p.total} shares moved before", file=sys.stderr, flush=True)
        now = time.monotonic()
        if now - last < 0.5 and not p.done:
            return
        last = now
        rate = p.bytes_written / MiB / max(p.seconds, 1e-6)
        print(f"drain {p.backend}: {p.total - p.left} of {p.total} shares moved, {p.left} "
              f"left ({p.bytes_written / MiB:.1f} MiB this run, {rate:.1f} MiB/s)",
              file=sys.stderr, flush=True)

    result = await target.drain(args.name, args.force, heard)
    rate = result.bytes_written / MiB / max(result.seconds, 1e-6)
    summary = (f"{result.moved} shares moved this run ({result.bytes_written / MiB:.1f} MiB "
               f"in {result.seconds:.1f} s, {rate:.1f} MiB/s)")
    if result.done:
        print(f"{result.backend} drained: {summary}; it holds no share now, "
              f"`twin storage backends rm {result.backend}` removes it")
        return 0
    print(f"{result.backend} not drained: {summary}, {result.left} shares left; run it "
          f"again to resume")
    for failure in result.failures:
        print(f"  {failure}")
    return 1


_COMMANDS: dict[str, Command] = {
    "put": _put, "get": _get, "ls": _ls, "rm": _rm, "status": _status,
    "verify": _verify, "repair": _repair, "backup": _backup, "backends": _backends}
