"""core.nativemail: a native message as mail, read back by the standard library."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest

from core.errors import Invalid
from core.nativemail import compose


def build(text: str, **over: str) -> EmailMessage:
    fields = {"from_": "alice@alice.localhost", "to": "bob@bob.localhost",
              "subject": "Message from twin alice", "date": "Mon, 07 Dec 2026 18:00:00 +0000",
              "message_id": "<00ff@bob.localhost>"} | over
    raw = compose(text=text, **fields)
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only, as the store keeps mail
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert not parsed.defects
    return parsed


def content(mail: EmailMessage) -> str:
    """The body as text, line breaks as Python writes them."""
    return str(mail.get_content()).replace("\r\n", "\n")


def test_headers_and_plain_body() -> None:
    mail = build("hello from alice, twin to twin")
    assert mail["From"] == "alice@alice.localhost"
    assert mail["To"] == "bob@bob.localhost"
    assert mail["Subject"] == "Message from twin alice"
    assert mail["Message-ID"] == "<00ff@bob.localhost>"
    assert mail.get_content_type() == "text/plain"
    assert mail["Content-Transfer-Encoding"] == "7bit"
    assert content(mail) == "hello from alice, twin to twin\n"


@pytest.mark.parametrize(("text", "cte"), [
    ("two\nlines\r\nand a third\rend", "7bit"),
    ("grüße, 你好 🙂", "8bit"),
    ("x" * 2000, "base64"),  # a line too long to send as it is
    ("a NUL \x00 and a bell \x07", "base64"),
    ("", "7bit"),
])
def test_every_body_reads_back_as_its_text(text: str, cte: str) -> None:
    mail = build(text)
    assert mail["Content-Transfer-Encoding"] == cte
    assert content(mail) == "\n".join(text.splitlines()) + "\n"


def test_a_header_value_cannot_add_a_line() -> None:
    with pytest.raises(Invalid):
        compose(from_="a\r\nBcc: eve@example.com", to="bob@bob.localhost", subject="s",
                date="d", message_id="<m>", text="t")
    with pytest.raises(Invalid):
        compose(from_="a", to="bob@bob.localhost", subject="grüße", date="d",
                message_id="<m>", text="t")
