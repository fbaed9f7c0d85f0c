"""The MIME describer never raises, whatever the bytes (issue #15, item 1).

Every delivered message is described once, when it is filed; a message the
describer raised on held every later message behind it. These tests give it
the malformed RFC 2231 parameters that did that, arbitrary bytes, and real
messages mutated with the tokens parsers trip on, and check that the answer
is a structure the IMAP renderer can turn into ENVELOPE and BODYSTRUCTURE.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.mail import mime
from protocols.imap import render

REAL = [
    b"From: Alice <alice@example.org>\r\nTo: bob@example.org, \"Carol C\" <c@x.org>\r\n"
    b"Subject: hello\r\nMessage-ID: <1@x>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
    b"\r\nbody line 1\r\nbody line 2\r\n",
    b"From: a@b\r\nSubject: multi\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
    b"preamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nfirst part\r\n"
    b"--XX\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: inner@x\r\nSubject: inner\r\n\r\ninner body\r\n"
    b"--XX\r\nContent-Type: application/octet-stream; name*=utf-8''%E2%82%AC.bin\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: attachment; filename*0*=utf-8''a%20; filename*1=\"b.bin\"\r\n"
    b"\r\nAAAA\r\n--XX--\r\nepilogue\r\n",
    b"From: d@e\r\nContent-Type: multipart/digest; boundary=D\r\n\r\n--D\r\n\r\n"
    b"From: x@y\r\nSubject: in digest\r\n\r\nhi\r\n--D\r\nContent-Type: text/plain\r\n\r\n"
    b"plain\r\n--D--\r\n",
]
TOKENS = [b"*0=", b"*=", b"*1*=", b"''", b"%00", b"\x00", b";", b"\"", b"\\", b"=",
          b"boundary=", b"--", b"\r\n", b"\r\n\r\n", b"\n", b" ", b"name", b"filename",
          b"Content-Type: ", b"Content-Disposition: ", b"message/rfc822", b"multipart/mixed",
          b"<", b">", b"@", b",", b"(", b")", b"=?utf-8?q?", b"?=", b"\xff", b"\x80",
          # fragments of parameters that broke parsers: RFC 2231 sections and charsets
          b"; name*0=a; name*=b", b"; filename*=b; filename*0=a", b"; n*=\x00''v",
          b"; n*0*=utf-8''a%00; n*1=b", b"; boundary=\"\"", b"; charset=\"\x00\""]


def check(raw: bytes) -> dict[str, Any]:
    """Describe ``raw`` and render what IMAP would; the description."""
    part = mime.parse(raw)
    assert 0 <= part["h"] <= part["b"] <= part["z"] == len(raw)
    json.dumps(part)  # it is cached as JSON
    render.envelope(part["env"])
    render.body_structure(part, extended=True)
    render.body_structure(part, extended=False)
    return part


@pytest.mark.parametrize("header", [
    b"Content-Type: text/plain; name*0=a; name*=b",  # TypeError in decode_params
    b"Content-Type: text/plain; name*=ut\x00f''ab",  # ValueError: embedded null character
    b"Content-Type: text/plain; name*0*=\x00''a; name*1=b",
    b"Content-Disposition: attachment; filename*=u\x00''a%00b",
    b"Content-Disposition: attachment; filename*0=a; filename*=b",
])
def test_malformed_rfc2231_parameters_are_described_as_written(header: bytes) -> None:
    part = check(b"From: a@b\r\n" + header + b"\r\nSubject: s\r\n\r\nbody\r\n")
    assert (part["t"], part["s"]) == ("text", "plain")
    assert part["env"][1] == "s"  # the rest of the message is described as usual
    names = [k for k, _ in (part["disp"][1] if part["disp"] else part["p"])]
    assert any(n.startswith(("name", "filename")) for n in names)
    if header.startswith(b"Content-Disposition"):
        assert part["disp"][0] == "attachment"
    for _, value in part["p"] + (part["disp"][1] if part["disp"] else []):
        assert "\x00" not in value


def test_a_malformed_parameter_inside_a_multipart_spoils_only_its_part() -> None:
    raw = (b"From: a@b\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
           b"Content-Type: text/plain\r\n\r\nok\r\n--B\r\n"
           b"Content-Type: application/pdf; name*0=a; name*=b\r\n\r\nPDF\r\n--B--\r\n")
    part = check(raw)
    assert [(p["t"], p["s"]) for p in part["parts"]] == [("text", "plain"),
                                                         ("application", "pdf")]


def test_quoted_semicolons_do_not_take_quadratic_time() -> None:
    # email.message._parseparam took 12 s for 40,000 of these
    raw = b"Content-Type: text/plain; a=\"" + b";" * 60_000 + b"\r\n\r\nx"
    started = time.perf_counter()
    check(raw)
    assert time.perf_counter() - started < 1.0


def test_the_fallback_describes_a_message_the_parser_cannot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RecursionError("unforeseen")
    monkeypatch.setattr(mime, "_parse", boom)
    part = check(b"Subject: x\r\n\r\nline\r\nline\r\n")
    assert (part["t"], part["s"], part["l"]) == ("text", "plain", 2)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(raw: bytes) -> None:
    check(raw)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real message with a few bytes replaced, removed, or tokens inserted."""
    raw = bytearray(draw(st.sampled_from(REAL)))
    lines = [i for i in range(len(raw)) if raw.startswith(b"\r\n", i)]
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(raw)) | st.sampled_from(lines))  # often a line's end
        action = draw(st.sampled_from(["insert", "replace", "delete"]))
        if action == "insert":
            raw[pos:pos] = draw(st.sampled_from(TOKENS) | st.binary(min_size=1, max_size=4))
        elif action == "replace" and pos < len(raw):
            raw[pos] = draw(st.integers(0, 255))
        else:
            del raw[pos:pos + draw(st.integers(1, 16))]
    return bytes(raw)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_real_messages(raw: bytes) -> None:
    check(raw)


def test_an_address_field_of_spaces_takes_linear_time() -> None:
    # the display-name regex backtracked in cubic time: 1,600 spaces took 18 s
    raw = b"From: " + b" " * 2000 + b"x\r\nTo: " + b"a " * 20_000 + b"<\r\n\r\nbody"
    started = time.perf_counter()
    check(raw)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("value", [b"(" * 2000 + b" a@b.org", b"g:" * 2000 + b"a@b.org;"])
def test_nested_comments_and_groups_do_not_blow_the_stack(value: bytes) -> None:
    # email.utils.getaddresses recurses once per "(" or group: RecursionError
    part = check(b"From: " + value + b"\r\nSubject: s\r\n\r\nbody")
    assert part["env"][1] == "s"
    assert mime.addresses(value.decode()) == [("", "a@b.org")]
