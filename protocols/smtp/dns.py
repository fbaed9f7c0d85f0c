"""The DNS lookups inbound checks need, behind one replaceable function.

``Resolver`` is ``(name, rdtype) -> list[str]``: TXT strings joined per
record, A/AAAA addresses, MX exchange names, PTR targets (without the final
dot). An empty list means the name or the type does not exist;
``DnsTempError`` means try later. Tests pass a dict-backed resolver or point
the system one at a DNS server of their own (``smtp.nameserver``).

Every lookup made for one message shares one time budget (``budget``): a
sender whose DNS answers slowly, or whose records lead to many lookups (up to
10 for SPF, one per DKIM signature, two per ARC set), gets ``temperror`` for
what is left once the budget is spent, instead of holding the SMTP session.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

import dns.exception
import dns.name
import dns.resolver

from core.dnsresolver import sync_resolver

Resolver = Callable[[str, str], list[str]]
_deadline: ContextVar[float | None] = ContextVar("twin_dns_deadline", default=None)


class DnsTempError(Exception):
    """A lookup timed out or the servers failed: the result is 'temperror'."""


@contextmanager
def budget(seconds: float) -> Iterator[None]:
    """Bound every lookup made inside (in this thread or task) to ``seconds`` in all."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining(cap: float) -> float:
    """Seconds the next lookup may take: ``cap``, or less when a budget runs out.

    Raises ``DnsTempError`` once the budget is spent, before any packet is sent."""
    deadline = _deadline.get()
    if deadline is None:
        return cap
    left = deadline - time.monotonic()
    if left <= 0:
        raise DnsTempError("the DNS time budget of this message is spent")
    return min(cap, left)


def system_resolver(timeout: float, nameserver: str = "") -> Resolver:
    """The system's resolver, or one that asks only ``HOST[:PORT]`` (``smtp.nameserver``)."""
    resolver = sync_resolver(nameserver)

    def lookup(name: str, rdtype: str) -> list[str]:
        try:  # a name no query can be asked for (empty or long labels) has no records
            qname = dns.name.from_text(name.rstrip(".") + ".")
        except (dns.exception.DNSException, UnicodeError):
            return []
        lifetime = remaining(timeout)
        try:
            answer = resolver.resolve(qname, rdtype, search=False, lifetime=lifetime)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers,
                dns.resolver.NoResolverConfiguration) as exc:
            raise DnsTempError(f"{rdtype} {name}: {exc}") from exc
        except dns.exception.DNSException as exc:
            raise DnsTempError(f"{rdtype} {name}: {type(exc).__name__}") from exc
        out = []
        for record in answer:
            if rdtype == "TXT":
                out.append(b"".join(record.strings).decode("utf-8", "replace"))
            elif rdtype == "MX":
                out.append(str(record.exchange).rstrip("."))
            elif rdtype == "PTR":
                out.append(str(record.target).rstrip("."))
            else:
                out.append(record.to_text())
        return out

    return lookup


def static_resolver(records: Mapping[tuple[str, str], list[str]]) -> Resolver:
    """A resolver over fixed answers, keyed by (lowercase name without dot, type)."""

    def lookup(name: str, rdtype: str) -> list[str]:
        remaining(0.0)  # a spent budget fails here too
        return list(records.get((name.rstrip(".").lower(), rdtype), []))

    return lookup
