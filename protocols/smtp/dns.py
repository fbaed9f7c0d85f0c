"""The DNS lookups inbound checks need, behind one replaceable function.

``Resolver`` is ``(name, rdtype) -> list[str]``: TXT strings joined per
record, A/AAAA addresses, MX exchange names. An empty list means the name or
the type does not exist; ``DnsTempError`` means try later. Tests pass a
dict-backed resolver, so no test depends on the real DNS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import dns.exception
import dns.resolver

Resolver = Callable[[str, str], list[str]]


class DnsTempError(Exception):
    """A lookup timed out or the servers failed: the result is 'temperror'."""


def system_resolver(timeout: float) -> Resolver:
    resolver = dns.resolver.Resolver()
    resolver.lifetime = timeout

    def lookup(name: str, rdtype: str) -> list[str]:
        try:
            answer = resolver.resolve(name.rstrip(".") + ".", rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers,
                dns.resolver.NoResolverConfiguration) as exc:
            raise DnsTempError(f"{rdtype} {name}: {exc}") from exc
        out = []
        for record in answer:
            if rdtype == "TXT":
                out.append(b"".join(record.strings).decode("utf-8", "replace"))
            elif rdtype == "MX":
                out.append(str(record.exchange).rstrip("."))
            else:
                out.append(record.to_text())
        return out

    return lookup


def static_resolver(records: Mapping[tuple[str, str], list[str]]) -> Resolver:
    """A resolver over fixed answers, keyed by (lowercase name without dot, type)."""

    def lookup(name: str, rdtype: str) -> list[str]:
        return list(records.get((name.rstrip(".").lower(), rdtype), []))

    return lookup
