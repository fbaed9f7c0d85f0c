"""An IMAP session waiting in IDLE that timestamps every ``EXISTS`` push.

Used by the push-latency test and ``bench/messaging.py``: it is the view a
mail client has of "the message arrived" (RFC 2177 IDLE, RFC 3501 §7.3.1
EXISTS). ``when(n)`` is the moment the mailbox was first seen holding ``n``
messages, taken with ``time.perf_counter`` as the line arrived.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

from tests.protocols.smtp.helpers import client_tls

EXISTS = re.compile(rb"^\* (\d+) EXISTS\r?\n$")


@dataclass
class IdleWatcher:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    count: int = 0
    seen: dict[int, float] = field(default_factory=dict)  # count -> first time seen
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, port: int, login: str, password: str,
                   host: str = "127.0.0.1") -> IdleWatcher:
        """IMAPS login, SELECT INBOX, IDLE; returns once the server said ``+``."""
        reader, writer = await asyncio.open_connection(host, port, ssl=client_tls())
        self = cls(reader, writer)
        await reader.readline()  # greeting
        quoted = [v.replace("\\", "\\\\").replace('"', '\\"') for v in (login, password)]
        await self._command(f'a1 LOGIN "{quoted[0]}" "{quoted[1]}"', "a1")
        for line in await self._command("a2 SELECT INBOX", "a2"):
            m = EXISTS.match(line)
            if m:
                self.count = int(m.group(1))
        writer.write(b"a3 IDLE\r\n")
        await writer.drain()
        while not (await reader.readline()).startswith(b"+"):
            pass
        self._task = asyncio.create_task(self._read())
        return self

    async def _command(self, line: str, tag: str) -> list[bytes]:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()
        lines = []
        while True:
            got = await self.reader.readline()
            if not got:
                raise ConnectionError("IMAP server closed the connection")
            if got.startswith(tag.encode() + b" "):
                if not got.startswith(tag.encode() + b" OK"):
                    raise RuntimeError(f"IMAP {line.split()[1]} failed: {got!r}")
                return lines
            lines.append(got)

    async def _read(self) -> None:
        while True:
            line = await self.reader.readline()
            now = time.perf_counter()
            if not line:
                return
            m = EXISTS.match(line)
            if m:
                n = int(m.group(1))
                for k in range(self.count + 1, n + 1):
                    self.seen.setdefault(k, now)
                self.count = max(self.count, n)
                self._changed.set()

    async def until(self, n: int, timeout: float = 30.0) -> float:
        """The time the mailbox first held ``n`` messages (waits for it)."""
        async with asyncio.timeout(timeout):
            while self.count < n:
                self._changed.clear()
                await self._changed.wait()
        return self.seen.get(n, time.perf_counter())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        try:
            self.writer.write(b"DONE\r\na4 LOGOUT\r\n")
            await self.writer.drain()
        except (ConnectionError, RuntimeError):
            pass
        self.writer.close()
