"""DMARC (RFC 7489) for one message: policy discovery and identifier alignment.

From authheaders: the record parser (``answer_to_dict``) and the Public
Suffix List it ships (for the organizational domain, §3.2). Not its
``check_dmarc`` / ``dmarc_per_from``, measured on authheaders 0.16.3:

- its ``get_org_domain`` reads and parses the whole suffix list on every call
  (174 ms each here; ``dmarc_per_from`` for one domain without a record took
  123 ms): a CPU cost per inbound message a stranger could multiply. Here
  the list is loaded once (about 0.3 s, on the first message) and a lookup
  takes microseconds;
- a TLD missing from the list makes publicsuffix2 name the TLD itself as the
  organizational domain (``alice.localhost`` -> ``localhost``), which would
  align every ``*.localhost`` with every other; §3.2 says one label more;
- ``check_dmarc`` raises UnboundLocalError for a message without From, and it
  weighs one DKIM result only, while alignment needs any passing signature
  (§3.1.1: a mailing list's signature often comes before the author's);
- its DNS function returns one TXT string per name, so the "more than one
  DMARC record -> no policy" rule (§6.6.3) cannot be applied through it.

So the evaluation itself (§6.6.2 policy record, §6.6.3 discovery, §3.1
alignment, §6.3 p/sp/pct) is the short code below, on our resolver.
"""

from __future__ import annotations

import functools
import importlib.resources
import random
from collections.abc import Sequence
from dataclasses import dataclass

from authheaders.dmarc_lookup import DMARCException, answer_to_dict
from publicsuffix2 import PublicSuffixList

from protocols.smtp.dns import DnsTempError, Resolver

POLICIES = ("none", "quarantine", "reject")
MAX_DOMAINS = 5  # distinct From domains evaluated (§6.6.1 allows rejecting such mail)


@dataclass(frozen=True)
class Verdict:
    """One identifier that passed: a DKIM signature's d= or the SPF-checked domain."""

    domain: str
    method: str  # dkim | spf


@dataclass(frozen=True)
class DmarcResult:
    result: str  # pass | fail | none | temperror | permerror (RFC 7489 §11.2)
    domain: str = ""  # the RFC5322.From domain (header.from)
    policy: str = ""  # what the domain asks for this message: none | quarantine | reject
    comment: str = ""


@functools.cache
def _suffixes() -> PublicSuffixList:
    ref = importlib.resources.files("authheaders") / "public_suffix_list.txt"
    with importlib.resources.as_file(ref) as path, open(path, encoding="utf-8") as f:
        return PublicSuffixList(f)


@functools.lru_cache(maxsize=4096)
def org_domain(domain: str) -> str:
    """The organizational domain (RFC 7489 §3.2): one label under the public suffix."""
    domain = domain.lower().rstrip(".")
    found = _suffixes().get_sld(domain, strict=True)
    if found:
        return str(found)
    return ".".join(domain.split(".")[-2:])  # a TLD not in the list: the "*" rule


def aligned(identifier: str, from_domain: str, mode: str) -> bool:
    """§3.1.1 / §3.1.2: strict is the same name, relaxed the same organizational domain."""
    identifier, from_domain = identifier.lower().rstrip("."), from_domain.lower().rstrip(".")
    if identifier == from_domain:
        return True
    return mode != "s" and bool(identifier) and org_domain(identifier) == org_domain(from_domain)


def _record(resolver: Resolver, domain: str) -> dict[str, str] | None:
    """The DMARC policy record of ``domain`` (§6.6.3 steps 1-3), None when it has none."""
    texts = [t for t in resolver(f"_dmarc.{domain}", "TXT")
             if t[:8].lower() == "v=dmarc1" and (len(t) == 8 or t[8] in "; \t")]
    if len(texts) != 1:  # none, or more than one: no policy (§6.6.3 step 2)
        return None
    tags: dict[str, str] = answer_to_dict(texts[0])
    if tags.get("p") not in POLICIES:  # §6.6.3 step 6: p= must be valid
        return None
    return tags


def _one(resolver: Resolver, domain: str, passed: Sequence[Verdict]) -> DmarcResult:
    record = _record(resolver, domain)
    org = org_domain(domain)
    policy_key = "p"
    if record is None and org != domain:  # §6.6.3 step 3: the organizational domain's
        record = _record(resolver, org)
        policy_key = "sp" if record is not None and "sp" in record else "p"
    if record is None:
        return DmarcResult("none", domain)
    policy = record.get(policy_key, record["p"])
    if policy not in POLICIES:
        policy = record["p"]
    modes = {"dkim": record.get("adkim", "r"), "spf": record.get("aspf", "r")}
    via = [v for v in passed if aligned(v.domain, domain, modes[v.method])]
    if via:
        return DmarcResult("pass", domain, policy, f"aligned {via[0].method} {via[0].domain}")
    return DmarcResult("fail", domain, _sampled(policy, record.get("pct", "100")))


def _sampled(policy: str, pct: str) -> str:
    """§6.6.4: the policy applies to pct% of failing mail, the next milder one to the rest."""
    try:
        percent = int(pct)
    except ValueError:
        percent = 100
    if policy == "none" or percent >= 100 or random.randrange(100) < percent:  # noqa: S311
        return policy
    return POLICIES[POLICIES.index(policy) - 1]


def evaluate(resolver: Resolver, from_domains: Sequence[str],
             passed: Sequence[Verdict]) -> DmarcResult:
    """The DMARC result of a message whose From names ``from_domains``.

    More than one domain (§6.6.1): each is evaluated and the strictest failing
    policy wins. Never raises: a broken record is a permerror, a DNS failure
    or a spent budget a temperror."""
    domains = list(dict.fromkeys(d.lower().rstrip(".") for d in from_domains if d))
    if not domains:
        return DmarcResult("none", comment="no From domain")
    if len(domains) > MAX_DOMAINS:
        return DmarcResult("permerror", domains[0], comment="too many From domains")
    results: list[DmarcResult] = []
    for domain in domains:
        try:
            results.append(_one(resolver, domain, passed))
        except DnsTempError:
            results.append(DmarcResult("temperror", domain))
        except (DMARCException, ValueError, IndexError, UnicodeError):
            results.append(DmarcResult("permerror", domain, comment="unreadable DMARC record"))
    failed = [r for r in results if r.result == "fail"]
    if failed:
        return max(failed, key=lambda r: POLICIES.index(r.policy))
    for wanted in ("temperror", "permerror", "pass"):
        for r in results:
            if r.result == wanted:
                return r
    return results[0]
