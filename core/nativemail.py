"""A native twin message (``twin send``) as the bytes of a plain-text mail.

Why not ``email.message.EmailMessage``: building one there cost the receiving
twin ~60% of its CPU per native message at the messaging bench's maximum
(each header assignment runs the policy's header registry, which makes a new
class per call, and parses the value it was just given; then the generator
folds it all again). Every value here is known in advance and plain: twin
names and domains are checked by the phonebook (letters, digits, ``-`` and
``.``), the rest is this twin's own configuration, so the header block is
written as text. Only the body is the sender's, and it is encoded the way the
mail package does it for ``set_content(text)``: UTF-8, lines normalized to
CRLF and ended by one, sent as they are (7bit, or 8bit past ASCII) when every
line is short and free of control characters, else base64.
"""

from __future__ import annotations

import base64
import re

from core.errors import Invalid

MAX_LINE = 998  # RFC 5322 §2.1.1, without the CRLF
# control characters a body sent as it is should not hold (tab and line breaks may)
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def compose(*, from_: str, to: str, subject: str, date: str, message_id: str,
            text: str) -> bytes:
    """The message; ``Invalid`` if a header value would break its line."""
    headers = (("From", from_), ("To", to), ("Subject", subject), ("Date", date),
               ("Message-ID", message_id))
    for name, value in headers:
        if "\r" in value or "\n" in value or not value.isascii():
            raise Invalid(f"a native message's {name} must be one line of ASCII")
    raw = text.encode("utf-8", "replace")  # a lone surrogate cannot come from CBOR
    lines = raw.splitlines() or [b""]
    body = b"".join(line + b"\r\n" for line in lines)
    if _CONTROL.search(raw) is None and all(len(line) <= MAX_LINE for line in lines):
        cte = "7bit" if raw.isascii() else "8bit"
    else:
        encoded = base64.b64encode(body)
        body = b"".join(encoded[i:i + 76] + b"\r\n" for i in range(0, len(encoded), 76))
        cte = "base64"
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    head += ('Content-Type: text/plain; charset="utf-8"\r\n'
             f"Content-Transfer-Encoding: {cte}\r\nMIME-Version: 1.0\r\n\r\n")
    return head.encode("ascii") + body
