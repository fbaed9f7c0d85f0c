"""SPF (RFC 7208) by pyspf, asking our resolver.

pyspf takes no resolver argument: every query goes through one module
global, ``spf.DNSLookup(name, qtype, strict, timeout)`` (its own test suite
replaces that global the same way). This module sets it once, at import, to
``_lookup``, which asks the resolver of the check in progress, held in a
context variable: each ``check_host`` call (each ``asyncio.to_thread``
worker) sees only its own resolver, so two twins in one process (the tests)
each use theirs, and the DNS time budget of ``protocols.smtp.dns`` applies.
Outside ``check_host`` pyspf's own lookup is used unchanged.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import spf as pyspf

from protocols.smtp.dns import DnsTempError, Resolver

log = logging.getLogger("twin.smtp")
RESULTS = frozenset({"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"})
_current: ContextVar[Resolver | None] = ContextVar("twin_spf_resolver", default=None)
_pyspf_lookup = pyspf.DNSLookup


@dataclass(frozen=True)
class SpfResult:
    result: str  # one of RESULTS
    comment: str = ""
    identity: str = "mailfrom"  # mailfrom | helo: which identity was checked (§2.3, §2.4)


def _lookup(name: str, qtype: str, strict: Any = True, timeout: float = 20) -> list[Any]:
    """pyspf's DNSLookup contract: ``[((name, qtype), value), ...]``, TempError on failure."""
    resolver = _current.get()
    if resolver is None:
        return list(_pyspf_lookup(name, qtype, strict, timeout))
    if qtype == "SPF":  # RR type 99 is gone (RFC 7208 §3.1): only TXT is asked
        return []
    try:
        answers = resolver(name, qtype)
    except DnsTempError as exc:
        raise pyspf.TempError(f"DNS {exc}") from exc
    key = (name, qtype)
    if qtype == "TXT":  # pyspf joins a record's strings itself
        return [(key, (text.encode("utf-8", "replace"),)) for text in answers]
    if qtype == "MX":
        return [(key, (0, exchange)) for exchange in answers]
    return [(key, value) for value in answers]


pyspf.DNSLookup = _lookup


def check_host(resolver: Resolver, ip: str, mail_from: str, helo: str) -> SpfResult:
    """RFC 7208 §4 check_host() of MAIL FROM, or of the HELO name for a null sender (§2.4).

    Never raises: whatever pyspf lets escape on a hostile record or name is a
    permerror, a spent DNS budget a temperror."""
    token = _current.set(resolver)
    try:
        query = pyspf.query(i=ip, s=mail_from, h=helo, strict=True)
        result, _code, explanation = query.check()
        identity = query.ident
    except (pyspf.TempError, DnsTempError) as exc:
        return SpfResult("temperror", str(exc)[:200])
    except Exception as exc:  # pyspf on input it does not expect (a bad address, a name)
        log.info("SPF check of %r from %s failed: %s: %s", mail_from[:100], ip,
                 type(exc).__name__, exc)
        return SpfResult("permerror", type(exc).__name__)
    finally:
        _current.reset(token)
    result = str(result).lower()
    if result not in RESULTS:  # pyspf's RFC 4408 names, should one appear
        result = {"error": "temperror", "unknown": "permerror"}.get(result, "permerror")
    return SpfResult(result, str(explanation)[:200], identity)
