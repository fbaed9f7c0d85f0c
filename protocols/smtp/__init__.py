"""SMTP for the twin: inbound mail (port-25 role) and submission (587, 465).

Contract:

- ``async def start(service) -> SmtpListener`` is the ``twin.listeners`` entry
  point: it binds ``smtp.port`` (plain + STARTTLS, no AUTH, our domains only),
  ``smtp.submission_port`` (STARTTLS before AUTH) and ``smtp.submissions_port``
  (implicit TLS), with ListenerInfo names "smtp", "submission", "submissions".
- ``routes(service)`` in ``protocols.smtp.autoconfig`` is the ``twin.http``
  entry point serving Thunderbird's autoconfig XML.

Layout: ``session`` (aiosmtpd's protocol with async AUTH), ``handler`` (the
inbound and submission hooks), ``verify`` (SPF via ``spfcheck``, DKIM, ARC,
DMARC via ``dmarc``: Authentication-Results) on ``dns`` (resolver injectable,
one time budget per message), ``policy`` (reject / Junk / deliver from those
results), ``errors`` (the one error table, keyed by ``core.errors.ErrorCode``:
over quota is its ``OVER_QUOTA`` row), ``server`` (sockets). Routing, the legacy queue and DKIM
signing are core's (``core.routing``, ``core.outbound``): this package only
speaks SMTP.

Memory: aiosmtpd collects a message's DATA in memory and hands it over whole
(it has no streaming hook), so a session holds at most
``smtp.max_message_size`` bytes of message (SIZE is announced and DATA past it
is refused with 552 5.3.4), plus a transient copy or two while trust headers
are stripped and ours prepended. Accepted as is: mail is small, the limit is
configurable, and what is stored afterwards is streamed.

Delivery: 250 after DATA only once every copy is durable (``core.routing``).
When some recipients' copies are stored and another fails, the reply is 4xx
and the recipients served are remembered by the message's key, so that the
client's retry does not give them a second copy (``core.delivered``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocols.smtp.server import SmtpListener

if TYPE_CHECKING:
    from core.service import Service

__all__ = ["SmtpListener", "start"]


async def start(service: Service) -> SmtpListener:
    listener = SmtpListener(service)
    await listener.start()
    return listener
