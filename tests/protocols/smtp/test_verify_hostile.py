"""DKIM and ARC verification give a verdict, whatever the signature (#15 item 4, #21 item 5).

dkimpy lets more than ``DKIMException`` escape on hostile tags; it used to
escape the DATA hook as a 451 with a traceback, for every retry of the
message, so a message carrying such a signature could never be accepted.
"""

from __future__ import annotations

import random
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.smtp.dns import remaining, static_resolver
from protocols.smtp.verify import Verifier

KEY = ("MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDwIRP/UC3SBsEmGqZ9ZJW3/DkMoGeLnQg1fWn7/zYtIxN2SnFC"
       "jxOCKG9v3b4jYfcTNh5ijSsq631uBItLa7od+v/RtdC2UzJ1lWT947qR+Rcac2gbto/NMqJ0fzfVjH4OuKhitdY9"
       "tf6mcwGjaNBcWToIMmPSPDdQPNUYckcQ2QIDAQAB")
VERIFIER = Verifier(static_resolver({("sel._domainkey.example.com", "TXT"):
                                     [f"v=DKIM1; k=rsa; p={KEY}"]}), skip_loopback=False)
SIGNED = (b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=sel; "
          b"h=from:subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA\r\n"
          b"From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n")
TOKENS = [b";", b"=", b"\x00", b"l=", b"l=-1", b"l=99999999999999999999", b"c=", b"h=", b"b=",
          b"bh=", b"x=1", b"t=99999999999999999999", b"z=", b"i=", b"q=", b"d=", b"s=", b"\xff",
          b"\r\n ", b"a=rsa-sha1", b"a=ed25519-sha256", b"c=relaxed/x", b"v=2", b"l=-1+"]


def test_a_bad_body_hash_encoding_is_a_permerror() -> None:
    # bh= with a stray "l=-1" inside: binascii.Error escaped dkimpy's verify
    message = SIGNED.replace(b"bh=47DEQpj8HBSa", b"bh=47DEQpj8HBSal=-1")
    [result] = VERIFIER.check(message, "192.0.2.1", "h", "a@example.com").dkim
    assert result.result == "permerror"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32))
def test_mutated_signatures_always_get_a_verdict(seed: int) -> None:
    rnd = random.Random(seed)
    message = bytearray(SIGNED)
    for _ in range(rnd.randint(1, 5)):
        pos = rnd.randint(0, 230)
        message[pos:pos] = rnd.choice(TOKENS)
    results = VERIFIER.check(bytes(message), "192.0.2.1", "h", "a@example.com").dkim
    assert all(r.result in ("pass", "fail", "permerror", "temperror", "none")
               for r in results)


ARC_SET = (b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=example.com; s=sel; t=1700000000; b=AAAA\r\n"
           b"ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=sel; "
           b"h=from:subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA\r\n"
           b"ARC-Authentication-Results: i=1; example.com; dkim=pass\r\n"
           b"From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n")
ARC_TOKENS = [*TOKENS, b"i=0", b"i=51", b"i=2", b"cv=pass", b"cv=fail", b"cv=", b"t=",
              b"ARC-Seal: i=1; b=\r\n", b"ARC-Seal:\r\n", b"i=-1"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32))
def test_mutated_arc_sets_always_get_a_verdict(seed: int) -> None:
    rnd = random.Random(seed)
    message = bytearray(ARC_SET)
    for _ in range(rnd.randint(1, 5)):
        pos = rnd.randint(0, len(ARC_SET) - 40)
        message[pos:pos] = rnd.choice(ARC_TOKENS)
    found = VERIFIER.check(bytes(message), "192.0.2.1", "h", "a@example.com")
    assert found.arc in ("none", "pass", "fail")
    assert found.dmarc.result in ("none", "pass", "fail", "permerror", "temperror")
    found.header("mx.example")  # renders whatever the verdicts say


def test_more_arc_sets_than_rfc_8617_allows_fail_without_crypto() -> None:
    many = ARC_SET.split(b"From:")[0] * 51 + b"From: a@example.com\r\n\r\nbody\r\n"
    found = VERIFIER.check(many, "192.0.2.1", "h", "a@example.com")
    assert (found.arc, found.arc_comment) == ("fail", "more than 50 ARC sets")


def test_the_dns_budget_bounds_a_message_with_slow_dns() -> None:
    def slow(name: str, rdtype: str) -> list[str]:  # as system_resolver: wait <= the budget
        time.sleep(remaining(0.25))
        return []
    signatures = b"".join(SIGNED.split(b"From:")[0].replace(b"s=sel", f"s=s{i}".encode())
                          for i in range(5))
    verifier = Verifier(slow, dns_budget=0.6, skip_loopback=False)
    started = time.monotonic()
    # an empty body matches their bh=, so each signature needs its key looked up
    found = verifier.check(signatures + b"From: a@example.com\r\nSubject: x\r\n\r\n",
                           "192.0.2.1", "h", "a@example.com")
    took = time.monotonic() - started
    assert took < 1.2, took  # five key lookups, SPF and DMARC would take 2 s and more
    assert [r.result for r in found.dkim][-1] == "temperror"
    assert found.spf.result == "temperror" and found.dmarc.result == "temperror"
