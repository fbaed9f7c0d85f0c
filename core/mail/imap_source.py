"""Reading another IMAP server's mail for ``twin mail import imap`` (aioimaplib).

Every selectable folder (LIST, RFC 3501 §6.3.8), opened read-only (EXAMINE,
§6.3.2: nothing on the source changes, not even \\Seen), is read in two
passes: ``UID FETCH 1:* (UID RFC822.SIZE)`` names every message and its size,
so the messages already imported (keyed by the folder's UIDVALIDITY and the
UID, §2.3.1.1) and those over the size limit are left out before any body
crosses the wire; then ``UID FETCH set (UID FLAGS INTERNALDATE BODY.PEEK[])``
(§6.4.8) in batches of bounded bytes. aioimaplib has no STARTTLS; it is done
here with the loop's ``start_tls`` on the client's transport (RFC 3501 §6.2.1).

aioimaplib keeps a whole response in memory, literals included, so every
command runs within a byte budget (``_Budget``): what the answer may hold
(for bodies: the sizes the server announced, plus room for the framing). A
server that sends more is cut off and the import stops with that reason,
instead of the twin's memory holding whatever it sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import Forbidden, Unavailable
from core.mail import folders as fn
from core.mail.imported import Incoming, Skipped, clean_flags

BATCH_BYTES = 8 * 1024 * 1024
BATCH_COUNT = 200
TIMEOUT = 120.0
GREETING = 15.0
_LIST = re.compile(rb'^\((?P<attrs>[^)]*)\) (?P<delim>NIL|"(?:\\.|[^"\\])*") (?P<name>.*)$')
_FETCH = re.compile(rb"^\d+ FETCH \(")
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")
_DATE = re.compile(rb'\bINTERNALDATE "([^"]+)"')
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_EXISTS = re.compile(rb"^(\d+) EXISTS$")


@dataclass(frozen=True)
class ImapOptions:
    host: str
    port: int
    user: str
    password: str
    security: str  # "tls", "starttls" or "plain"
    verify: bool = True


def quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquote(raw: bytes) -> bytes:
    if raw.startswith(b'"') and raw.endswith(b'"') and len(raw) >= 2:
        return re.sub(rb"\\(.)", rb"\1", raw[1:-1])
    return raw


def internal_date(text: str) -> float:
    """RFC 3501 date-time (``14-Nov-2023 22:13:20 +0000``) as seconds since the epoch."""
    try:
        return dt.datetime.strptime(text.strip(), "%d-%b-%Y %H:%M:%S %z").timestamp()
    except ValueError:
        return dt.datetime.now(dt.UTC).timestamp()


SMALL = 1024 * 1024  # the budget of a command whose answer holds no message
PER_MESSAGE = 4096  # framing of one FETCH response beyond its literal


class _Budget:
    """Bytes an IMAP answer may still bring; over it, the connection is closed."""

    def __init__(self, protocol: Any) -> None:
        self.limit = SMALL
        self.used = 0
        self.exceeded = asyncio.Event()
        self.protocol = protocol
        received = protocol.data_received

        def counted(data: bytes) -> None:
            self.used += len(data)
            if self.used > self.limit:
                if not self.exceeded.is_set():
                    self.exceeded.set()
                    protocol.transport.close()
                return
            received(data)
        protocol.data_received = counted

    async def run(self, work: Awaitable[Any], limit: int, what: str) -> Any:
        self.used, self.limit = 0, limit
        task = asyncio.ensure_future(work)
        over = asyncio.ensure_future(self.exceeded.wait())
        try:
            await asyncio.wait({task, over}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            over.cancel()
        if self.exceeded.is_set():
            task.cancel()
            raise Unavailable(f"the IMAP server sent more than {limit} bytes for {what}: "
                              "cut off")
        return task.result()


class ImapSource:
    """One IMAP account, read folder by folder."""

    def __init__(self, options: ImapOptions, max_size: int) -> None:
        self.options = options
        self.max_size = max_size
        # the account, not the port: 143 and 993 of one server are one source
        self.name = f"imap://{options.user}@{options.host.lower()}"
        self.client: Any = None
        self.budget: _Budget | None = None

    async def connect(self) -> None:
        import aioimaplib

        o = self.options
        context = ssl.create_default_context()
        if not o.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if o.security == "tls":
            self.client = aioimaplib.IMAP4_SSL(o.host, o.port, timeout=GREETING,
                                               ssl_context=context)
        else:
            self.client = aioimaplib.IMAP4(o.host, o.port, timeout=GREETING)
        self.budget = _Budget(self.client.protocol)
        try:
            await self.client.wait_hello_from_server()
        except TimeoutError:
            raise Unavailable(f"no IMAP greeting from {o.host}:{o.port} within {GREETING:.0f} s "
                              "(the wrong port, or --tls / --starttls the other way round?)"
                              ) from None
        except OSError as exc:
            raise Unavailable(f"cannot reach {o.host}:{o.port}: {exc}") from exc
        self.client.timeout = TIMEOUT
        if o.security == "starttls":
            await self._starttls(context)
        response = await self._run(self.client.login(o.user, o.password), SMALL, "LOGIN")
        if response.result != "OK":
            raise Forbidden(f"{o.host} refused the login of {o.user}: "
                            f"{_text(response.lines[-1:])}")

    async def _starttls(self, context: ssl.SSLContext) -> None:
        from aioimaplib.aioimaplib import Command

        protocol = self.client.protocol
        response = await asyncio.wait_for(
            protocol.execute(Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)),
            TIMEOUT)
        if response.result != "OK":
            raise Unavailable(f"{self.options.host} refused STARTTLS")
        loop = asyncio.get_running_loop()
        protocol.transport = await loop.start_tls(protocol.transport, protocol, context,
                                                  server_hostname=self.options.host)
        await asyncio.wait_for(protocol.capability(), TIMEOUT)  # §6.2.1: ask again

    async def close(self) -> None:
        transport = getattr(self.client.protocol, "transport", None) if self.client else None
        if transport is not None and not transport.is_closing():
            with contextlib.suppress(Exception):  # leaving anyway
                await asyncio.wait_for(self.client.logout(), 5)

    async def folders(self) -> list[tuple[str, str]]:
        """(source name, twin name) of every selectable folder, INBOX first."""
        response = await self._run(self.client.list('""', '"*"'), 16 * SMALL, "LIST")
        if response.result != "OK":
            raise Unavailable(f"LIST failed: {_text(response.lines[-1:])}")
        out: list[tuple[str, str]] = []
        lines = list(response.lines)
        i = 0
        while i < len(lines):
            line = bytes(lines[i])
            i += 1
            m = _LIST.match(line)
            if m is None:
                continue
            attrs = m.group("attrs").lower()
            raw = m.group("name")
            if raw.endswith(b"}") and i < len(lines):  # a literal name
                raw = bytes(lines[i])
                i += 1
            name = _unquote(raw).decode("utf-8", "replace")
            if b"\\noselect" in attrs or b"\\nonexistent" in attrs:
                continue
            delim = _unquote(m.group("delim")).decode() if m.group("delim") != b"NIL" else None
            twin = fn.from_imap(name, delim)
            out.append((name, "INBOX" if twin.upper() == "INBOX" else twin))
        out.sort(key=lambda f: (f[1] != "INBOX", f[1]))
        return out

    async def count(self, folders: Sequence[tuple[str, str]]) -> int:
        total = 0
        for source, _ in folders:
            response = await self._run(self.client.status(quoted(source), "(MESSAGES)"), SMALL,
                                       "STATUS")
            m = re.search(rb"MESSAGES (\d+)", b" ".join(bytes(x) for x in response.lines))
            total += int(m.group(1)) if m else 0
        return total

    async def read(self, source: str, twin: str,
                   known: Callable[[list[str]], Awaitable[set[str]]]
                   ) -> AsyncIterator[tuple[list[Incoming], list[Skipped], int]]:
        """Batches of (new messages, skipped, how many were imported before)."""
        response = await self._run(self.client.examine(quoted(source)), SMALL, "EXAMINE")
        if response.result != "OK":
            yield [], [Skipped(twin, source, f"EXAMINE failed: {_text(response.lines[-1:])}")], 0
            return
        # aioimaplib follows SELECT only; EXAMINE selects as well (read-only)
        self.client.protocol.state = "SELECTED"
        validity = exists = 0
        for line in response.lines:
            raw = bytes(line)
            if (m := _UIDVALIDITY.search(raw)) is not None:
                validity = int(m.group(1))
            if (m := _EXISTS.match(raw)) is not None:
                exists = int(m.group(1))
        if not exists:
            yield [], [], 0
            return
        listing = await self._run(self.client.uid("fetch", "1:*", "(UID RFC822.SIZE)"),
                                  SMALL + 200 * exists, "the message sizes")
        sizes: dict[int, int] = {}
        for line in listing.lines:
            raw = bytes(line)
            if _FETCH.match(raw) and (u := _UID.search(raw)) and (s := _SIZE.search(raw)):
                sizes[int(u.group(1))] = int(s.group(1))
        prefix = f"{validity}/"
        keys = {uid: f"{prefix}{uid}/{source}" for uid in sizes}
        done: set[str] = set()
        ordered = sorted(keys)
        for i in range(0, len(ordered), 1000):
            done |= await known([keys[u] for u in ordered[i:i + 1000]])
        skipped = [Skipped(twin, f"uid {u}", f"larger than {self.max_size} bytes")
                   for u in ordered if keys[u] not in done and sizes[u] > self.max_size]
        todo = [u for u in ordered if keys[u] not in done and sizes[u] <= self.max_size]
        already = len(ordered) - len(todo) - len(skipped)
        if skipped or already or not todo:
            yield [], skipped, already
        batch: list[int] = []
        size = 0
        for uid in todo:
            if batch and (size + sizes[uid] > BATCH_BYTES or len(batch) >= BATCH_COUNT):
                yield await self._bodies(twin, batch, keys, size)
                batch, size = [], 0
            batch.append(uid)
            size += sizes[uid]
        if batch:
            yield await self._bodies(twin, batch, keys, size)

    async def _run(self, work: Awaitable[Any], limit: int, what: str) -> Any:
        assert self.budget is not None
        return await self.budget.run(work, limit, what)

    async def _bodies(self, twin: str, uids: list[int], keys: dict[int, str],
                      announced: int) -> tuple[list[Incoming], list[Skipped], int]:
        response = await self._run(
            self.client.uid("fetch", ",".join(map(str, uids)),
                            "(UID FLAGS INTERNALDATE BODY.PEEK[])"),
            SMALL + announced + PER_MESSAGE * len(uids), f"{len(uids)} message(s)")
        if response.result != "OK":
            raise Unavailable(f"UID FETCH failed: {_text(response.lines[-1:])}")
        got: dict[int, Incoming] = {}
        meta = b""
        body: bytes | None = None

        def finish() -> None:
            u = _UID.search(meta)
            if u is None or body is None:
                return
            uid = int(u.group(1))
            if uid not in keys:
                return
            flags = _FLAGS.search(meta)
            date = _DATE.search(meta)
            got[uid] = Incoming(
                keys[uid], body,
                clean_flags(flags.group(1).decode("utf-8", "replace").split() if flags else []),
                internal_date(date.group(1).decode()) if date else
                dt.datetime.now(dt.UTC).timestamp())

        for line in response.lines:
            if isinstance(line, bytearray):  # a literal: the message
                body = bytes(line)
                continue
            raw = bytes(line)
            if _FETCH.match(raw):
                finish()
                meta, body = raw, None
            else:
                meta += b" " + raw
        finish()
        skipped = [Skipped(twin, f"uid {u}", "the server sent no body") for u in uids
                   if u not in got]
        too_big = [u for u, item in got.items() if len(item.data) > self.max_size]
        skipped += [Skipped(twin, f"uid {u}", f"larger than {self.max_size} bytes")
                    for u in too_big]
        return [got[u] for u in uids if u in got and u not in too_big], skipped, 0


def _text(lines: Sequence[Any]) -> str:
    return " ".join(bytes(x).decode("utf-8", "replace") for x in lines)[:200]

