"""DMARC evaluation over fixed DNS answers (RFC 7489 §3.1, §3.2, §6.6.3)."""

from __future__ import annotations

from protocols.smtp.dmarc import Verdict, evaluate, org_domain
from protocols.smtp.dns import static_resolver

DNS = static_resolver({
    ("_dmarc.example.org", "TXT"): ["v=DMARC1; p=reject; sp=quarantine; adkim=s"],
    ("_dmarc.two.example", "TXT"): ["v=DMARC1; p=reject", "v=DMARC1; p=none"],
    ("_dmarc.bad.example", "TXT"): ["v=DMARC1; p=maybe"],
    ("_dmarc.other.example", "TXT"): ["spf2.0/pra", "v=DMARC1; p=quarantine"],
})


def test_organizational_domain() -> None:
    assert org_domain("mail.example.org") == "example.org"
    assert org_domain("a.b.example.co.uk") == "example.co.uk"
    assert org_domain("x.github.io") == "x.github.io"  # a public suffix with owners below
    # a TLD missing from the list is still a public suffix (the "*" rule), not an org domain
    assert org_domain("alice.localhost") == "alice.localhost"
    assert org_domain("sub.alice.localhost") == "alice.localhost"


def test_policy_discovery_and_alignment() -> None:
    dkim_org = [Verdict("example.org", "dkim")]
    assert evaluate(DNS, ["example.org"], dkim_org).result == "pass"
    # adkim=s: a signature of the parent does not align with a subdomain's From ...
    sub = evaluate(DNS, ["news.example.org"], dkim_org)
    assert (sub.result, sub.policy) == ("fail", "quarantine")  # ... and sp= applies there
    assert evaluate(DNS, ["news.example.org"], [Verdict("example.org", "spf")]).result == "pass"
    assert evaluate(DNS, ["two.example"], []).result == "none"  # two records: no policy
    assert evaluate(DNS, ["bad.example"], []).result == "none"  # p= invalid
    assert evaluate(DNS, ["other.example"], []).policy == "quarantine"  # non-DMARC TXT skipped
    assert evaluate(DNS, [], []).result == "none"


def test_the_strictest_of_several_from_domains() -> None:
    found = evaluate(DNS, ["other.example", "example.org"], [])
    assert (found.result, found.domain, found.policy) == ("fail", "example.org", "reject")
