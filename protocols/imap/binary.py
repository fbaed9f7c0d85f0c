"""BINARY (RFC 3516): parts decoded from their Content-Transfer-Encoding, and
binary APPEND (``~{n}`` literal8) stored as 7-bit.

A FETCH BINARY[part] answers the part's body with base64 or quoted-printable
undone; the result goes out as a literal8 (``~{n}``) when it is not clean
CRLF text. An APPEND whose literal8 holds parts in ``binary`` encoding is
re-encoded to base64 before it is stored (§4.3 allows that), so every
BODY[] the twin ever sends stays 7-bit clean.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from typing import Any

from core.mail import mime

KNOWN = {"7bit", "8bit", "binary", "base64", "quoted-printable"}
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=]")
_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_CTE = re.compile(rb"(?im)^(content-transfer-encoding[ \t]*:)[ \t]*binary[ \t]*(?=\r?$)")
_QP_PADDING = re.compile(rb"[ \t]+(?=\r?\n|\Z)")


def decode(body: bytes, encoding: str) -> bytes | None:
    """The part's content with its transfer encoding undone; None if it is unknown."""
    if encoding == "base64":
        data = _NOT_BASE64.sub(b"", body)
        data = data[:len(data) - len(data) % 4] if b"=" not in data else data
        try:
            return base64.b64decode(data + b"=" * (-len(data) % 4))
        except (binascii.Error, ValueError):
            return base64.b64decode(data[:len(data) // 4 * 4] or b"", validate=False)
    if encoding == "quoted-printable":  # RFC 2045 §6.7 (3): trailing blanks are padding
        return quopri.decodestring(_QP_PADDING.sub(b"", body))
    if encoding in KNOWN:
        return body
    return None


def needs_literal8(data: bytes) -> bool:
    """RFC 3516 §4.2: NULs or bare CR/LF cannot go in an ordinary literal."""
    return b"\0" in data or _BARE.search(data) is not None


def _leaves(part: dict[str, Any]) -> list[dict[str, Any]]:
    if "parts" in part:
        return [leaf for p in part["parts"] for leaf in _leaves(p)]
    if "msg" in part:
        return _leaves(part["msg"])
    return [part]


def to_7bit(raw: bytes) -> bytes:
    """Parts in ``binary`` transfer encoding re-encoded as base64, the rest unchanged."""
    root = mime.parse(raw)
    leaves = [p for p in _leaves(root) if p["e"] == "binary"]
    for p in sorted(leaves, key=lambda p: p["h"], reverse=True):
        head, found = _CTE.subn(rb"\1 base64", raw[p["h"]:p["b"]])
        if not found:
            continue  # the encoding came from elsewhere (a default): leave the part as it is
        body = base64.encodebytes(raw[p["b"]:p["z"]]).replace(b"\n", b"\r\n")
        raw = raw[:p["h"]] + head + body + raw[p["z"]:]
    return raw
