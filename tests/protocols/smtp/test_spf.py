"""SPF check_host() over fixed DNS answers (RFC 7208 results)."""

from __future__ import annotations

from protocols.smtp.dns import DnsTempError, static_resolver
from protocols.smtp.spf import check_host

DNS = static_resolver({
    ("example.org", "TXT"): ["v=spf1 ip4:192.0.2.0/24 include:_spf.example.net mx ~all"],
    ("_spf.example.net", "TXT"): ["v=spf1 ip6:2001:db8::/32 a:relay.example.net -all"],
    ("relay.example.net", "A"): ["198.51.100.7"],
    ("example.org", "MX"): ["mx.example.org"],
    ("mx.example.org", "A"): ["203.0.113.5"],
    ("strict.example", "TXT"): ["v=spf1 redirect=example.org"],
    ("loop.example", "TXT"): ["v=spf1 include:loop.example -all"],
    ("two.example", "TXT"): ["v=spf1 -all", "v=spf1 +all"],
    ("macro.example", "TXT"): ["v=spf1 exists:%{i}.ok.macro.example -all"],
    ("192.0.2.9.ok.macro.example", "A"): ["127.0.0.2"],
})


def test_results() -> None:
    assert check_host(DNS, "192.0.2.1", "a@example.org", "h") == "pass"
    assert check_host(DNS, "198.51.100.7", "a@example.org", "h") == "pass"  # include + a
    assert check_host(DNS, "2001:db8::1", "a@example.org", "h") == "pass"
    assert check_host(DNS, "203.0.113.5", "a@example.org", "h") == "pass"  # mx
    assert check_host(DNS, "10.0.0.1", "a@example.org", "h") == "softfail"
    assert check_host(DNS, "10.0.0.1", "a@strict.example", "h") == "softfail"  # redirect
    assert check_host(DNS, "10.0.0.1", "a@nothing.example", "h") == "none"
    assert check_host(DNS, "10.0.0.1", "a@loop.example", "h") == "permerror"
    assert check_host(DNS, "10.0.0.1", "a@two.example", "h") == "permerror"
    assert check_host(DNS, "192.0.2.9", "a@macro.example", "h") == "pass"
    assert check_host(DNS, "192.0.2.8", "a@macro.example", "h") == "fail"
    assert check_host(DNS, "192.0.2.1", "", "example.org") == "pass"  # null sender: HELO


def test_temperror() -> None:
    def broken(name: str, rdtype: str) -> list[str]:
        raise DnsTempError("timeout")
    assert check_host(broken, "192.0.2.1", "a@example.org", "h") == "temperror"
