"""SPF (RFC 7208) check_host(), on a pluggable resolver.

Written here rather than taken from pyspf because pyspf can only be pointed at
other DNS answers by patching its module globals, and the tests must inject
answers per server. Supported: all, include, a, mx, ip4, ip6, exists,
redirect=, the 10-lookup limit (§4.6.4) and the simple macros %{s l o d i h}
(§7) without transformers; ptr (deprecated, §5.5) never matches; a macro with
transformers is a permerror rather than a guess.
"""

from __future__ import annotations

import ipaddress
import re

from protocols.smtp.dns import DnsTempError, Resolver

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")
QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
MAX_LOOKUPS = 10
_MACRO = re.compile(r"%\{([slodih])\}|%%|%_|%-")


class _PermError(Exception):
    """An SPF record that cannot be evaluated (RFC 7208 section 2.6.7: permerror)."""


class _Context:
    def __init__(self, resolver: Resolver, ip: str, sender: str, helo: str) -> None:
        self.resolver = resolver
        self.ip = ipaddress.ip_address(ip)
        local, _, domain = sender.rpartition("@")
        self.sender = sender if local else f"postmaster@{sender}"
        self.local = local or "postmaster"
        self.sender_domain = domain.lower()
        self.helo = helo
        self.lookups = 0

    def lookup(self, name: str, rdtype: str, *, counts: bool = True) -> list[str]:
        if counts:
            self.lookups += 1
            if self.lookups > MAX_LOOKUPS:
                raise _PermError("too many DNS lookups")
        return self.resolver(name, rdtype)

    def expand(self, spec: str, domain: str) -> str:
        def one(m: re.Match[str]) -> str:
            literal = {"%%": "%", "%_": " ", "%-": "%20"}.get(m.group(0))
            if literal is not None:
                return literal
            return {"s": self.sender, "l": self.local, "o": self.sender_domain,
                    "d": domain, "i": str(self.ip), "h": self.helo}[m.group(1)]
        expanded = _MACRO.sub(one, spec)
        if "%" in expanded:
            raise _PermError(f"unsupported macro in {spec!r}")
        return expanded


def check_host(resolver: Resolver, ip: str, sender: str, helo: str) -> str:
    """The SPF result for ``ip`` sending as ``sender`` (or the HELO name if empty)."""
    ctx = _Context(resolver, ip, sender or f"postmaster@{helo}", helo)
    try:
        return _check(ctx, ctx.sender_domain)
    except _PermError:
        return "permerror"
    except DnsTempError:
        return "temperror"


def _record(ctx: _Context, domain: str) -> str | None:
    texts = [t for t in ctx.lookup(domain, "TXT", counts=False)
             if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]
    if len(texts) > 1:
        raise _PermError("more than one SPF record")
    return texts[0] if texts else None


def _check(ctx: _Context, domain: str) -> str:
    if not domain or len(domain) > 253:
        return "none"
    record = _record(ctx, domain)
    if record is None:
        return "none"
    redirect = None
    for term in record.split()[1:]:
        if "=" in term and ":" not in term.split("=", 1)[0]:
            name, _, value = term.partition("=")
            if name.lower() == "redirect":
                redirect = value
            continue  # exp= and unknown modifiers are ignored (§6)
        qualifier = QUALIFIERS.get(term[0])
        if qualifier:
            term = term[1:]
        else:
            qualifier = "pass"
        if _matches(ctx, term, domain):
            return qualifier
    if redirect:
        target = ctx.expand(redirect, domain)
        ctx.lookups += 1
        if ctx.lookups > MAX_LOOKUPS:
            raise _PermError("too many DNS lookups")
        result = _check(ctx, target)
        return "permerror" if result == "none" else result
    return "neutral"


def _split_cidr(arg: str) -> tuple[str, int | None, int | None]:
    parts = arg.split("/")
    name = parts[0]
    v4 = int(parts[1]) if len(parts) > 1 and parts[1] else None
    v6 = int(parts[3]) if len(parts) > 3 and parts[3] else None
    return name, v4, v6


def _in(ctx: _Context, addresses: list[str], v4: int | None, v6: int | None) -> bool:
    for text in addresses:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            continue
        if addr.version != ctx.ip.version:
            continue
        bits = (v4 if addr.version == 4 else v6)
        net = ipaddress.ip_network(f"{addr}/{bits if bits is not None else addr.max_prefixlen}",
                                   strict=False)
        if ctx.ip in net:
            return True
    return False


def _addresses(ctx: _Context, name: str) -> list[str]:
    return ctx.lookup(name, "A" if ctx.ip.version == 4 else "AAAA", counts=False)


def _matches(ctx: _Context, term: str, domain: str) -> bool:
    mech, _, arg = term.partition(":")
    mech = mech.lower()
    if "/" in mech:  # a/24 or mx/24 without a domain
        mech, _, cidr = mech.partition("/")
        arg = arg or f"{domain}/{cidr}"
    try:
        if mech == "all":
            return True
        if mech == "ip4" or mech == "ip6":
            net = ipaddress.ip_network(arg, strict=False)
            return ctx.ip.version == net.version and ctx.ip in net
        if mech == "include":
            ctx.lookups += 1
            if ctx.lookups > MAX_LOOKUPS:
                raise _PermError("too many DNS lookups")
            result = _check(ctx, ctx.expand(arg, domain))
            if result in ("temperror",):
                raise DnsTempError("include")
            if result in ("permerror", "none"):
                raise _PermError(f"include:{arg} gave {result}")
            return result == "pass"
        if mech == "a":
            name, v4, v6 = _split_cidr(arg or domain)
            ctx.lookups += 1
            if ctx.lookups > MAX_LOOKUPS:
                raise _PermError("too many DNS lookups")
            return _in(ctx, _addresses(ctx, ctx.expand(name or domain, domain)), v4, v6)
        if mech == "mx":
            name, v4, v6 = _split_cidr(arg or domain)
            exchanges = ctx.lookup(ctx.expand(name or domain, domain), "MX")[:10]
            return any(_in(ctx, _addresses(ctx, mx), v4, v6) for mx in exchanges)
        if mech == "exists":
            return bool(ctx.lookup(ctx.expand(arg, domain), "A"))
        if mech == "ptr":
            ctx.lookups += 1
            return False
    except ValueError as exc:
        raise _PermError(str(exc)) from exc
    raise _PermError(f"unknown mechanism {mech!r}")
