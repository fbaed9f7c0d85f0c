"""Mail to the legacy world: the durable queue, DKIM, delivery, bounces.

Contract (what routing and the CLI use):

- ``OutboundQueue(config=, db=, store=, users=, mail=)``;
  ``await queue.enqueue(mail_from, rcpts, message) -> id`` returns only after
  the DKIM-signed message and its recipients are durable.
- ``await queue.run()`` is the delivery worker (``service.spawn``); it retries
  along ``smtp.retry_schedule`` and bounces into the sender's Inbox after
  ``smtp.give_up_after`` or on a permanent (5xx) refusal.
- ``queue.entries() / flush() / drop(id)`` for ``twin mail queue``.
- ``DkimKey`` holds the signing key; ``txt_record()`` is what to publish.

Delivery goes through ``smtp.smarthost`` when set (STARTTLS or TLS, AUTH),
otherwise straight to the recipient domain's MX hosts (dnspython, ``dnsq``),
each under the TLS policy that applies to it (``transport._plan``): DANE
(``dane``, RFC 7672) when a trusted resolver authenticates its TLSA records,
else the domain's MTA-STS policy (``mtasts``, RFC 8461; cached in twin.db),
else opportunistic STARTTLS. A host the policy rules out is a temporary
failure, so the message waits in the queue and bounces with the reason.
"""

from core.outbound.dkim import DkimKey
from core.outbound.queue import OutboundQueue, QueueEntry

__all__ = ["DkimKey", "OutboundQueue", "QueueEntry"]
