"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3).

Clients that have not enabled UTF8=ACCEPT send and expect non-ASCII mailbox
names in this encoding; the mail store keeps names as Unicode.
"""

from __future__ import annotations

import base64
import re

from protocols.imap.errors import Bad

_SHIFTED = re.compile(r"&([^-]*)-")


def encode(name: str) -> str:
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def decode(name: str) -> str:
    if "&" not in name:
        return name

    def one(m: re.Match[str]) -> str:
        body = m.group(1)
        if not body:
            return "&"
        try:
            raw = base64.b64decode(body.replace(",", "/") + "=" * (-len(body) % 4), validate=True)
            text = raw.decode("utf-16-be")
        except (ValueError, UnicodeDecodeError):
            raise Bad(f"mailbox name is not valid modified UTF-7: {name[:60]!r}") from None
        return text

    decoded = _SHIFTED.sub(one, name)
    if "&" in _SHIFTED.sub("", name):
        raise Bad("unterminated modified UTF-7 in a mailbox name")
    return decoded
