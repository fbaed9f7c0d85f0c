"""SPF check_host() by pyspf over fixed DNS answers (RFC 7208 results)."""

from __future__ import annotations

import time

from protocols.smtp.dns import DnsTempError, budget, static_resolver
from protocols.smtp.spfcheck import check_host

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
    ("bad.example", "TXT"): ["v=spf1 ip4:192.0.2.300 -all"],
    ("many.example", "TXT"): ["v=spf1 " + " ".join(f"a:h{i}.many.example" for i in range(12))
                              + " -all"],
})


def result(ip: str, sender: str, helo: str = "h") -> str:
    return check_host(DNS, ip, sender, helo).result


def test_results() -> None:
    assert result("192.0.2.1", "a@example.org") == "pass"
    assert result("198.51.100.7", "a@example.org") == "pass"  # include + a
    assert result("2001:db8::1", "a@example.org") == "pass"
    assert result("203.0.113.5", "a@example.org") == "pass"  # mx
    assert result("10.0.0.1", "a@example.org") == "softfail"
    assert result("10.0.0.1", "a@strict.example") == "softfail"  # redirect
    assert result("10.0.0.1", "a@nothing.example") == "none"
    assert result("10.0.0.1", "a@loop.example") == "permerror"
    assert result("10.0.0.1", "a@two.example") == "permerror"
    assert result("192.0.2.9", "a@macro.example") == "pass"
    assert result("192.0.2.8", "a@macro.example") == "fail"
    assert result("10.0.0.1", "a@bad.example") == "permerror"
    assert result("10.0.0.1", "a@many.example") == "permerror"  # over 10 lookups (§4.6.4)
    null = check_host(DNS, "192.0.2.1", "", "example.org")  # null sender: the HELO (§2.4)
    assert (null.result, null.identity) == ("pass", "helo")


def test_hostile_input_gets_a_verdict() -> None:
    for ip, sender, helo in [("not-an-ip", "a@example.org", "h"), ("192.0.2.1", "a@", "h"),
                             ("192.0.2.1", "@@@", ""), ("192.0.2.1", "a@" + "x." * 200, "h"),
                             ("192.0.2.1", "a@exa\x00mple.org", "h"), ("::1", "", "")]:
        assert check_host(DNS, ip, sender, helo).result in ("permerror", "none", "temperror")


def test_temperror() -> None:
    def broken(name: str, rdtype: str) -> list[str]:
        raise DnsTempError("timeout")
    assert check_host(broken, "192.0.2.1", "a@example.org", "h").result == "temperror"


def test_a_spent_budget_is_a_temperror_without_waiting() -> None:
    def slow(name: str, rdtype: str) -> list[str]:
        time.sleep(0.2)
        return DNS(name, rdtype)
    started = time.monotonic()
    with budget(0.3):
        found = check_host(slow, "203.0.113.5", "a@example.org", "h")  # needs 4 lookups
    assert found.result == "temperror"
    assert time.monotonic() - started < 0.7
