"""One way to make a dnspython resolver: the system's, or one that asks only
``HOST[:PORT]`` (``smtp.nameserver``, ``twin doctor --nameserver``).

Inbound checks (``protocols.smtp.dns``, synchronous, in a worker thread),
outbound delivery (``core.outbound.dnsq``, async) and ``twin doctor`` each
need one; the spelling of the setting (an IPv6 address in brackets or bare, a
port or none) is parsed here once, so it means the same to all three.
"""

from __future__ import annotations

import dns.asyncresolver
import dns.resolver


def nameserver(spec: str) -> tuple[str, int]:
    """``"127.0.0.1:5353"`` -> ("127.0.0.1", 5353); ``"[::1]:53"``, ``"[::1]"`` and
    ``"::1"`` -> ("::1", 53): a bare IPv6 address has more than one colon."""
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 53
    if spec.count(":") == 1:
        host, _, port = spec.partition(":")
        return host, int(port)
    return spec, 53


def sync_resolver(spec: str = "") -> dns.resolver.Resolver:
    """The system's resolver, or one asking only ``spec``."""
    if not spec:
        return dns.resolver.Resolver()
    r = dns.resolver.Resolver(configure=False)
    host, r.port = nameserver(spec)
    r.nameservers = [host]
    return r


def async_resolver(spec: str = "") -> dns.asyncresolver.Resolver:
    """``sync_resolver`` for asyncio; with no system configuration (no
    /etc/resolv.conf, a bare container) the local resolver on 127.0.0.1."""
    if spec:
        r = dns.asyncresolver.Resolver(configure=False)
        host, r.port = nameserver(spec)
        r.nameservers = [host]
        return r
    try:
        return dns.asyncresolver.Resolver()
    except dns.resolver.NoResolverConfiguration:
        r = dns.asyncresolver.Resolver(configure=False)
        r.nameservers = ["127.0.0.1"]
        return r
