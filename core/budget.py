"""Bytes of request bodies held in memory at once, overall and per client address.

Why: the peer API must read an envelope whole before it can check its
signature (``core.peer.api``), so before any check a stranger decides how much
the twin buffers: 12 connections each sending 16 MiB grew it by 300 MiB
(issue #15.9). Every body read goes through one ``ByteBudget``: bytes are taken
as they arrive (a declared Content-Length up front) and given back once the
request is answered; a request that does not fit is refused at once (503,
retry later) instead of waiting, so the budget is a hard ceiling.
"""

from __future__ import annotations

import logging

log = logging.getLogger("twin.limits")


class ByteBudget:
    """``total`` bytes over all requests, ``per_ip`` for one client address."""

    def __init__(self, total: int, per_ip: int) -> None:
        self.total, self.per_ip = total, min(per_ip, total)
        self.used = 0
        self._by_ip: dict[str, int] = {}

    def take(self, ip: str, n: int) -> bool:
        """Reserve ``n`` bytes for ``ip``; False (nothing reserved) when they do not fit."""
        mine = self._by_ip.get(ip, 0)
        if self.used + n > self.total or mine + n > self.per_ip:
            return False
        self.used += n
        self._by_ip[ip] = mine + n
        return True

    def give(self, ip: str, n: int) -> None:
        if n <= 0:
            return
        self.used -= n
        left = self._by_ip.get(ip, 0) - n
        if left > 0:
            self._by_ip[ip] = left
        else:
            self._by_ip.pop(ip, None)
