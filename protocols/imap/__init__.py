"""The IMAP server (RFC 3501 IMAP4rev1 and the extensions it advertises), on asyncio.

Layout, after mox's imapserver: ``parser`` reads commands within limits,
``render`` turns values into wire bytes, ``session`` holds a connection's state
and dispatches through the command table (``commands``: one module per group,
each handler under its RFC section), ``selected`` keeps a session's view of its
selected mailbox and the untagged update rules, ``errors`` is the one error
type and the one mapping from core errors (keyed by ``core.errors.ErrorCode``:
over quota is its ``OVER_QUOTA`` row). Mail lives in ``core.mail``; this
package only translates.

Entry point (``twin.listeners``): ``async def start(service) -> Listener`` with
``info`` naming "imap" (STARTTLS) and "imaps" (implicit TLS) and ``stop()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocols.imap.server import ImapServer

if TYPE_CHECKING:
    from core.service import Service


async def start(service: Service) -> ImapServer:
    server = ImapServer(service)
    await server.start()
    return server
