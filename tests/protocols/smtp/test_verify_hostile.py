"""DKIM verification gives a verdict, whatever the signature (issue #15, item 4).

dkimpy lets more than ``DKIMException`` escape on hostile tags; it used to
escape the DATA hook as a 451 with a traceback, for every retry of the
message, so a message carrying such a signature could never be accepted.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.smtp.dns import static_resolver
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
