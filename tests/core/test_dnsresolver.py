"""``smtp.nameserver`` / ``--nameserver`` mean the same to every resolver made from them."""

from __future__ import annotations

from core.dnsresolver import async_resolver, nameserver, sync_resolver


def test_every_spelling_of_a_nameserver() -> None:
    assert nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert nameserver("127.0.0.1") == ("127.0.0.1", 53)
    assert nameserver("[::1]:5353") == ("::1", 5353)
    assert nameserver("[::1]") == ("::1", 53)
    assert nameserver("::1") == ("::1", 53)
    for make in (sync_resolver, async_resolver):
        r = make("[::1]:5353")
        assert (list(r.nameservers), r.port) == (["::1"], 5353)
