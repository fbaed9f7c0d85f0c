"""The DNS lookups outbound delivery needs: MX, addresses, TXT, and TLSA with the AD bit.

One ``OutboundDns`` per queue asks either the system's resolver or only the
server named by ``smtp.nameserver`` (``HOST[:PORT]``; tests point it at a
dnsmasq of their own). Answers are bounded: at most ``MAX_RECORDS`` records
are looked at per query and TXT strings longer than ``MAX_TXT`` are ignored,
so a hostile zone cannot make a delivery attempt parse megabytes.

DNSSEC: this module does not validate signatures itself. It asks with the DO
and AD bits and reports whether the answer came back with AD (authenticated
data) set, but ``ad_trusted`` is true only when every server asked is on
loopback. RFC 4035 §4.9.3: a stub resolver "MUST NOT place any reliance on
signature validation allegedly performed on its behalf, except when [it]
obtained the data in question from a trusted security-aware recursive name
server via a secure channel"; RFC 7672 §2.1.1 and RFC 6698 §4.1 build DANE on
exactly that. A validating resolver on the same host (unbound, systemd-resolved,
dnsmasq --dnssec) is such a channel; one across the network is not, since
anybody on the path can set the bit.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.name
import dns.rdatatype
import dns.resolver

from core.dnsresolver import async_resolver

log = logging.getLogger("twin.outbound")
MAX_RECORDS = 32
MAX_TXT = 2048


class DnsTemporary(Exception):
    """The lookup timed out or the servers failed: try later."""


@dataclass(frozen=True)
class Tlsa:
    usage: int
    selector: int
    mtype: int
    data: bytes


@dataclass(frozen=True)
class TlsaAnswer:
    records: tuple[Tlsa, ...]
    authenticated: bool  # the AD bit, from a resolver we trust to have validated


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class OutboundDns:
    def __init__(self, timeout: float, nameserver: str = "") -> None:
        self.timeout = timeout
        self.configured = bool(nameserver)
        self.resolver = async_resolver(nameserver)
        # DO: ask for DNSSEC data, so a validating resolver sets AD; AD in the query
        # asks for the bit without the signatures (RFC 6840 §5.7).
        self.resolver.use_edns(0, dns.flags.DO, 1232)
        self.resolver.flags = dns.flags.RD | dns.flags.AD

    @property
    def ad_trusted(self) -> bool:
        """Whether an AD bit from our resolver may be believed (see the module docstring)."""
        servers = [str(s) for s in self.resolver.nameservers]
        return bool(servers) and all(_loopback(s) for s in servers)

    async def _query(self, name: str, rdtype: str, lifetime: float | None = None
                     ) -> dns.resolver.Answer | None:
        """The answer, None when the name or the type does not exist."""
        try:
            qname = dns.name.from_text(name.rstrip(".") + ".")
        except (dns.exception.DNSException, UnicodeError):
            return None
        try:
            return await self.resolver.resolve(qname, rdtype, search=False,
                                               lifetime=lifetime or self.timeout)
        except dns.resolver.NXDOMAIN:
            if rdtype == "MX":
                raise LookupError(f"domain {name} does not exist") from None
            return None
        except dns.resolver.NoAnswer:
            return None
        except dns.exception.DNSException as exc:
            raise DnsTemporary(f"{rdtype} {name}: {type(exc).__name__}: {exc}") from exc

    async def mx(self, domain: str, lifetime: float) -> list[tuple[int, str]]:
        """An ``MxResolver`` (core.outbound.transport) over this resolver."""
        answer = await self._query(domain, "MX", lifetime)  # DnsTemporary: try later
        if answer is None:
            return []
        return [(int(r.preference), str(r.exchange).rstrip("."))
                for r in list(answer)[:MAX_RECORDS]]

    async def txt(self, name: str) -> list[str]:
        answer = await self._query(name, "TXT")
        out = []
        for record in list(answer or [])[:MAX_RECORDS]:
            text = b"".join(record.strings)
            if len(text) <= MAX_TXT:
                out.append(text.decode("utf-8", "replace"))
        return out

    async def addresses(self, host: str) -> list[str]:
        """Where to connect for ``host``: itself when it is an address or when the system
        resolver is in use (the OS then resolves it, /etc/hosts included); otherwise the
        configured server's A then AAAA records."""
        if is_ip(host) or not self.configured:
            return [host]
        found: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self._query(host, rdtype)
            except DnsTemporary:
                if found:  # IPv4 is enough to try; a failing AAAA lookup must not block it
                    continue
                raise
            found += [r.to_text() for r in list(answer or [])[:MAX_RECORDS]]
        return found

    async def tlsa(self, name: str) -> TlsaAnswer:
        """TLSA records at ``name`` (``_25._tcp.<mx>``) and whether they are authenticated.

        Nothing is asked of an untrusted resolver: its AD bit means nothing, so DANE cannot
        apply (RFC 7672 §2.1.1: only secure TLSA RRsets count)."""
        if not self.ad_trusted:
            return TlsaAnswer((), False)
        answer = await self._query(name, "TLSA")
        if answer is None:
            return TlsaAnswer((), False)
        authenticated = bool(answer.response.flags & dns.flags.AD)
        records = tuple(Tlsa(int(r.usage), int(r.selector), int(r.mtype), bytes(r.cert))
                        for r in list(answer)[:MAX_RECORDS]
                        if r.rdtype == dns.rdatatype.TLSA)
        return TlsaAnswer(records, authenticated)
