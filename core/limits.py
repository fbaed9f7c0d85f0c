"""Connection budgets of one listener: how many at once, per client address, before login.

Why one helper: SMTP and IMAP hold connections open for minutes, and a client
that never logs in costs a socket, a task and a buffer just the same. Without
separate budgets (issue #15.9) 200 idle connections from one address took
every SMTP slot, the owner's submission included. So each listener group has:

- ``total``: connections at once, logged in or not (memory: each may hold a
  message); past it a new connection is refused.
- ``per_ip``: connections *not yet logged in* from one address; past it that
  address is refused, others are not affected.
- ``unauthenticated``: connections not yet logged in, over all addresses. When
  full, a new connection closes the *oldest* one not logged in (Dovecot's
  login-process behaviour) instead of being refused: a flood of idle
  connections can delay a login but never lock the owner out, and a session
  that has logged in is never closed to make room.

A listener without logins (SMTP inbound) sets ``unauthenticated`` to ``total``
and ``evict`` off: it refuses at the cap, since closing a sender mid-message
would only make it retry.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("twin.limits")


@dataclass(frozen=True)
class Budget:
    """The caps of one listener group (see the module docstring)."""

    name: str
    total: int
    per_ip: int
    unauthenticated: int
    evict: bool = True


class Slot:
    """One admitted connection; ``authenticated()`` after login, ``release()`` at the end."""

    __slots__ = ("_close", "_limits", "authenticated_", "ip", "released")

    def __init__(self, limits: ConnectionLimits, ip: str, close: Callable[[], None]) -> None:
        self._limits, self.ip, self._close = limits, ip, close
        self.authenticated_ = False
        self.released = False

    def authenticated(self) -> None:
        """Logged in: the connection leaves the unauthenticated and per-address budgets."""
        if not self.authenticated_ and not self.released:
            self.authenticated_ = True
            self._limits._leave_unauthenticated(self)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._limits._release(self)

    def evict(self) -> None:
        self.release()
        self._close()


class ConnectionLimits:
    """The live counts of one ``Budget``; single-threaded (the event loop)."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.open = 0
        self._waiting: OrderedDict[Slot, None] = OrderedDict()  # not logged in, oldest first
        self._per_ip: dict[str, int] = {}

    @property
    def unauthenticated(self) -> int:
        return len(self._waiting)

    def admit(self, ip: str, close: Callable[[], None]) -> Slot | None:
        """A slot for a new connection from ``ip``, or None (refuse it).

        ``close`` ends the connection; it is called if the slot is evicted later.
        """
        b = self.budget
        if self.open >= b.total and not (b.evict and self._waiting):
            log.warning("%s: connection from %s refused: %d open (total cap)", b.name, ip,
                        self.open)
            return None
        if self._per_ip.get(ip, 0) >= b.per_ip:
            log.warning("%s: connection from %s refused: %d not logged in from that address",
                        b.name, ip, self._per_ip[ip])
            return None
        if len(self._waiting) >= b.unauthenticated or self.open >= b.total:
            if not b.evict or not self._waiting:
                log.warning("%s: connection from %s refused: %d not logged in", b.name, ip,
                            len(self._waiting))
                return None
            oldest = next(iter(self._waiting))
            log.warning("%s: closing the oldest connection not logged in (from %s) for one "
                        "from %s", b.name, oldest.ip, ip)
            oldest.evict()
        slot = Slot(self, ip, close)
        self.open += 1
        self._waiting[slot] = None
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        return slot

    def _leave_unauthenticated(self, slot: Slot) -> None:
        if slot in self._waiting:
            del self._waiting[slot]
            n = self._per_ip.get(slot.ip, 0) - 1
            if n > 0:
                self._per_ip[slot.ip] = n
            else:
                self._per_ip.pop(slot.ip, None)

    def _release(self, slot: Slot) -> None:
        self._leave_unauthenticated(slot)
        self.open -= 1
