"""PREVIEW (RFC 8970): a short plain-text abstract of a message for FETCH.

RFC 8970 §3: at most 256 characters of UTF-8 text, no markup, whitespace
collapsed; §3.1: ``PREVIEW (LAZY)`` lets the server answer NIL rather than
compute one now. The text comes from the message's first text/plain part
that is not an attachment (else its first text/html part, tags stripped),
from at most ``MAX_READ`` bytes of it: a 1 MB body costs one bounded store
read. Quoted lines (``>``) and the signature (after ``-- ``) are left out, as
a preview of a reply should show what is new.

Previews are cached by the message's stored object (immutable: a ref never
names other bytes), a few thousand of them (each at most ~1 KB), so a client
that fetches PREVIEW for a whole mailbox on each sync reads each body once.
LAZY answers from that cache and computes what is missing as well: it is
cheap enough, and RFC 8970 only allows, never requires, NIL.
"""

from __future__ import annotations

import html
import re
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from protocols.imap import binary, render
from protocols.imap.errors import Bad
from protocols.imap.parser import Atom, Token

if TYPE_CHECKING:
    from core.mail import Meta
    from protocols.imap.session import Session

LIMIT = 256  # characters (RFC 8970 §3)
MAX_READ = 64 * 1024
CACHE_ENTRIES = 4096
_cache: OrderedDict[str, str] = OrderedDict()
_WS = re.compile(r"\s+")
_DROP = re.compile(r"<(script|style|head)\b.*?</\1\s*>|<!--.*?-->", re.I | re.S)
_TAG = re.compile(r"<[^>]*>")
_BLOCK = re.compile(r"<(?:br|p|div|li|tr|h[1-6])\b[^>]*>", re.I)


def modifiers(raw: list[Token]) -> list[Token]:
    """FETCH items with ``PREVIEW (LAZY)`` folded into the one atom ``PREVIEW``."""
    out: list[Token] = []
    i = 0
    while i < len(raw):
        tok = raw[i]
        out.append(tok)
        if isinstance(tok, Atom) and tok.upper() == "PREVIEW" and i + 1 < len(raw) \
                and isinstance(raw[i + 1], list):
            mods = raw[i + 1]
            assert isinstance(mods, list)
            if not mods or any(not isinstance(m, Atom) or m.upper() != "LAZY" for m in mods):
                raise Bad("PREVIEW takes only the LAZY modifier")
            i += 1
        i += 1
    return out


def _text_part(part: dict[str, Any]) -> dict[str, Any] | None:
    """The first inline text/plain part, else the first inline text/html part."""
    html_part = None
    stack = [part]
    while stack:
        p = stack.pop(0)
        if "parts" in p:
            stack[:0] = p["parts"]
            continue
        disp = p.get("disp")
        if disp and str(disp[0]).lower() == "attachment":
            continue
        if p.get("t") == "text" and p.get("s") == "plain":
            return p
        if p.get("t") == "text" and p.get("s") == "html" and html_part is None:
            html_part = p
    return html_part


def _charset(part: dict[str, Any]) -> str:
    for name, value in part.get("p") or []:
        if str(name).lower() == "charset":
            return str(value)
    return "us-ascii"


def make(raw: bytes, part: dict[str, Any], truncated: bool) -> str:
    """The preview text of one part's (possibly cut) body."""
    encoding = part.get("e", "7bit")
    if encoding == "base64" and truncated:
        raw = raw[:raw.rfind(b"\n") + 1] or raw
    data = binary.decode(raw, encoding)
    if data is None:
        return ""
    try:
        text = data.decode(_charset(part), "replace")
    except LookupError:
        text = data.decode("utf-8", "replace")
    if truncated:
        text = text.rstrip("\ufffd")
    if part.get("s") == "html":
        text = _BLOCK.sub("\n", _DROP.sub(" ", text))
        text = html.unescape(_TAG.sub(" ", text))
    kept = []
    for line in text.splitlines():
        if line.rstrip() == "--":
            break  # the signature
        if not line.lstrip().startswith(">"):
            kept.append(line)
    flat = _WS.sub(" ", " ".join(kept)).strip()
    flat = "".join(c for c in flat if c.isprintable())
    return flat[:LIMIT]


async def preview(s: Session, meta: Meta) -> str:
    cached = _cache.get(meta.ref)
    if cached is not None:
        _cache.move_to_end(meta.ref)
        return cached
    assert meta.structure is not None
    part = _text_part(meta.structure)
    text = ""
    if part is not None:
        end = min(part["z"], part["b"] + MAX_READ)
        raw = await s.mail.read_bytes(meta.ref, part["b"], end)
        text = make(raw, part, end < part["z"])
    _cache[meta.ref] = text
    if len(_cache) > CACHE_ENTRIES:
        _cache.popitem(last=False)
    return text


# RFC 8970 §3 FETCH PREVIEW, §3.1 LAZY
async def fetch_item(s: Session, meta: Meta) -> bytes:
    text = await preview(s, meta)
    return b"PREVIEW " + render.string(text, utf8=s.utf8)
