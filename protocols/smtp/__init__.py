"""SMTP for the twin: inbound mail (port-25 role) and submission (587, 465).

Contract:

- ``async def start(service) -> SmtpListener`` is the ``twin.listeners`` entry
  point: it binds ``smtp.port`` (plain + STARTTLS, no AUTH, our domains only),
  ``smtp.submission_port`` (STARTTLS before AUTH) and ``smtp.submissions_port``
  (implicit TLS), with ListenerInfo names "smtp", "submission", "submissions".
- ``routes(service)`` in ``protocols.smtp.autoconfig`` is the ``twin.http``
  entry point serving Thunderbird's autoconfig XML.

Layout: ``session`` (aiosmtpd's protocol with async AUTH), ``handler`` (the
inbound and submission hooks), ``verify`` + ``spf`` + ``dns`` (DKIM/SPF
results for Authentication-Results, resolver injectable), ``errors`` (the one
error table), ``server`` (sockets). Routing, the legacy queue and DKIM
signing are core's (``core.routing``, ``core.outbound``): this package only
speaks SMTP.
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
