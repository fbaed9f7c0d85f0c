"""An IMAP source that lies: the import is cut off within its byte budget, never buffers it all.

aioimaplib keeps a whole answer in memory; core/mail/imap_source.py gives
every command a budget from what the server announced. This server announces
a 100-byte message and then sends a 64 MiB literal.
"""

from __future__ import annotations

import asyncio
import io
import time

import pytest

from core.errors import Unavailable
from core.mail.imap_source import ImapOptions, ImapSource
from core.mail.transfer import LocalMail, run_import
from core.progress import Progress
from core.service import Service

HUGE = 64 * 1024 * 1024


async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
               sent: list[int]) -> None:
    writer.write(b"* OK liar ready\r\n")
    try:
        while line := await reader.readline():
            tag, _, rest = line.decode().strip().partition(" ")
            command = rest.upper()
            if command.startswith("CAPABILITY"):
                writer.write(b"* CAPABILITY IMAP4rev1\r\n")
            elif command.startswith("LIST"):
                writer.write(b'* LIST () "/" INBOX\r\n')
            elif command.startswith("STATUS"):
                writer.write(b"* STATUS INBOX (MESSAGES 1)\r\n")
            elif command.startswith("EXAMINE"):
                writer.write(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n")
            elif command.startswith("UID FETCH 1:*"):
                writer.write(b"* 1 FETCH (UID 1 RFC822.SIZE 100)\r\n")
            elif command.startswith("UID FETCH"):
                writer.write(b"* 1 FETCH (UID 1 FLAGS () BODY[] {%d}\r\n" % HUGE)
                chunk = b"x" * (1024 * 1024)
                for _ in range(HUGE // len(chunk)):
                    writer.write(chunk)
                    await writer.drain()
                    sent[0] += len(chunk)
                writer.write(b")\r\n")
            writer.write(f"{tag} OK done\r\n".encode())
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def test_a_server_sending_more_than_it_announced_is_cut_off(
        service: tuple[Service, str]) -> None:
    svc, login = service
    sent = [0]
    server = await asyncio.start_server(lambda r, w: liar(r, w, sent), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    source = ImapSource(ImapOptions("127.0.0.1", port, "u", "p", "plain"), 1024 * 1024)
    started = time.monotonic()
    try:
        await source.connect()
        with pytest.raises(Unavailable, match=r"more than .* bytes for 1 message"):
            await run_import(LocalMail(svc.mail, login, 1024 * 1024), source,
                             Progress("import", stream=io.StringIO()))
    finally:
        await source.close()
        server.close()
    assert time.monotonic() - started < 30
    assert sent[0] < 16 * 1024 * 1024, "the server could go on sending"
