"""MIME structure of a stored message, with the byte offsets of every part.

IMAP clients ask for pieces: ``BODY[2.1]``, ``BODY[HEADER.FIELDS (FROM)]``,
``BODY[]<0.4096>``. Parsing the message once at delivery and remembering where
each part's header and body start and end lets a FETCH read exactly that byte
range from the dispersed store instead of the whole message. The structure is
a plain JSON-able dict so SQLite can cache it next to the flags.

The parser works on any buffer that supports slicing and ``re`` (``bytes`` or
an ``mmap`` of a spooled message), so a large message never has to be in
memory as one Python object. Messages are stored with CRLF line endings
(``crlf_normalise``), so offsets, sizes and line counts are the ones IMAP
reports.

Part dict keys: ``t``/``s`` type/subtype (lower case), ``p`` params
(list of [name, value]), ``id``, ``d`` description, ``e`` encoding, ``h`` header
start, ``b`` body start, ``z`` end (exclusive), ``l`` body lines (text and
message/rfc822), ``md5``, ``disp`` [type, params] or None, ``lang`` list or
None, ``loc``, ``parts`` (multipart children), ``msg`` (the message inside a
message/rfc822 part) and ``env`` (envelope, on messages only).
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import AsyncIterable, AsyncIterator
from email.message import Message
from typing import Any

Part = dict[str, Any]
Envelope = list[Any]

MAX_DEPTH = 20
MAX_PARTS = 2000
MAX_HEADER = 1024 * 1024
_HEADER_END = re.compile(rb"\r\n\r\n")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
# ``a@b``, ``<a@b>``, ``Name <a@b>``, ``"Name, Jr." <a@b>``: nearly every address field
_PLAIN = re.compile(rf'\s*(?:({_DOT_ATOM})|(?:"([^"\\]*)"|([A-Za-z0-9 !#$%&\'*+/=?^_`{{|}}~.-]*))'
                    rf'\s*<({_DOT_ATOM})>)\s*')
_COUNT_CHUNK = 1024 * 1024


class _Budget:
    """Limits a hostile message's parse cost: parts and nesting."""

    def __init__(self) -> None:
        self.parts = 0


async def crlf_normalise(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Yield the stream with bare LF turned into CRLF (IMAP sizes count CRLF)."""
    prev_cr = False
    async for chunk in chunks:
        if not chunk:
            continue
        chunk = bytes(chunk)
        if b"\n" in chunk:
            out = re.sub(rb"(?<!\r)\n", b"\r\n", chunk)
            if chunk[0:1] == b"\n" and prev_cr:
                out = out[1:]  # the CR was the previous chunk's last byte
            chunk = out
        prev_cr = chunk.endswith(b"\r")
        yield chunk


def header_end(buf: Any, start: int, end: int) -> int:
    """Offset where the body starts (after the blank line), or ``end``."""
    if buf[start:start + 2] == b"\r\n":
        return start + 2
    m = _HEADER_END.search(buf, start, min(end, start + MAX_HEADER))
    return m.end() if m else end


def parse_headers(raw: bytes) -> list[tuple[str, str]]:
    """Unfolded (lower-case name, value) pairs; values decoded as UTF-8 with replacement."""
    out: list[tuple[str, str]] = []
    text = raw.decode("utf-8", "replace")
    for line in re.split(r"\r\n(?![ \t])", text):
        if not line or ":" not in line:
            continue
        name, _, value = line.partition(":")
        out.append((name.strip().lower(), re.sub(r"\r\n(?=[ \t])", "", value).strip()))
    return out


def _first(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def plain_address(value: str) -> tuple[str, str] | None:
    """(display name, address) of a field holding one plain address, else None.

    Matched by a regular expression because it is asked for every message
    delivered; ``email.utils.getaddresses`` gives the same answer (the tests
    check that) at about ten times the cost, and still parses everything else.
    """
    m = _PLAIN.fullmatch(value)
    if m is None:
        return None
    if m.group(1):
        return "", m.group(1)
    name = m.group(2) if m.group(2) is not None else " ".join(m.group(3).split())
    return name, m.group(4)


def _addresses(value: str | None) -> list[list[str | None]] | None:
    if not value:
        return None
    out: list[list[str | None]] = []
    plain = plain_address(value)
    for name, addr in [plain] if plain else email.utils.getaddresses([value]):
        if not addr and not name:
            continue
        local, _, host = addr.rpartition("@") if "@" in addr else (addr, "", "")
        out.append([name or None, None, local or None, host or None])
    return out or None


def envelope(headers: list[tuple[str, str]]) -> Envelope:
    """RFC 3501 §7.4.2 ENVELOPE fields, as strings/lists (rendered by the IMAP adapter)."""
    frm = _addresses(_first(headers, "from"))
    return [
        _first(headers, "date"),
        _first(headers, "subject"),
        frm,
        _addresses(_first(headers, "sender")) or frm,
        _addresses(_first(headers, "reply-to")) or frm,
        _addresses(_first(headers, "to")),
        _addresses(_first(headers, "cc")),
        _addresses(_first(headers, "bcc")),
        _first(headers, "in-reply-to"),
        _first(headers, "message-id"),
    ]


def _params(header_value: str | None, name: str) -> tuple[str, str, list[list[str]]]:
    """(maintype, subtype, params) of a Content-Type/-Disposition style header."""
    msg = Message()
    msg[name] = header_value or ""
    params: list[list[str]] = []
    for key, value in (msg.get_params(header=name) or [])[1:]:
        if isinstance(value, tuple):
            value = email.utils.collapse_rfc2231_value(value)
        params.append([key.lower(), str(value)])
    first = (msg.get_params(header=name) or [("", "")])[0][0].lower()
    main, _, sub = first.partition("/")
    return main, sub, params


def _count_lines(buf: Any, start: int, end: int) -> int:
    n = 0
    for pos in range(start, end, _COUNT_CHUNK):
        n += bytes(buf[pos:min(end, pos + _COUNT_CHUNK)]).count(b"\n")
    return n


def parse(buf: Any, start: int = 0, end: int | None = None, *,
          default_type: str = "text/plain", _depth: int = 0,
          _budget: _Budget | None = None) -> Part:
    """The structure of the entity in ``buf[start:end]`` (see the module doc)."""
    end = len(buf) if end is None else end
    budget = _budget or _Budget()
    budget.parts += 1
    body = header_end(buf, start, end)
    headers = parse_headers(bytes(buf[start:body]))
    ctype = _first(headers, "content-type")
    main, sub, params = _params(ctype, "content-type") if ctype else ("", "", [])
    if not main or not sub:
        main, _, sub = default_type.partition("/")
        if main == "text" and not any(k == "charset" for k, _ in params):
            params = [["charset", "us-ascii"], *params]
    disp_value = _first(headers, "content-disposition")
    disp = None
    if disp_value:
        dmain, _, dparams = _params(disp_value, "content-disposition")
        disp = [dmain or disp_value.split(";")[0].strip().lower(), dparams]
    lang = _first(headers, "content-language")
    part: Part = {
        "t": main, "s": sub, "p": params,
        "id": _first(headers, "content-id"),
        "d": _first(headers, "content-description"),
        "e": (_first(headers, "content-transfer-encoding") or "7bit").lower(),
        "h": start, "b": body, "z": end,
        "md5": _first(headers, "content-md5"),
        "disp": disp,
        "lang": [x.strip() for x in lang.split(",")] if lang else None,
        "loc": _first(headers, "content-location"),
    }
    if _depth == 0:
        part["env"] = envelope(headers)
    deep = _depth >= MAX_DEPTH or budget.parts >= MAX_PARTS
    boundary = next((v for k, v in params if k == "boundary"), None)
    if main == "multipart" and boundary and not deep:
        child_type = "message/rfc822" if sub == "digest" else "text/plain"
        part["parts"] = [
            parse(buf, s, e, default_type=child_type, _depth=_depth + 1, _budget=budget)
            for s, e in _split(buf, body, end, boundary)
        ]
        if not part["parts"]:  # no delimiter: treat the body as one empty text part
            part["parts"] = [parse(buf, body, body, _depth=_depth + 1, _budget=budget)]
    elif main == "multipart":
        part["t"], part["s"] = "text", "plain"
        part["l"] = _count_lines(buf, body, end)
    elif main == "message" and sub in ("rfc822", "global") and not deep:
        inner = parse(buf, body, end, _depth=_depth + 1, _budget=budget)
        inner["env"] = envelope(parse_headers(bytes(buf[body:inner["b"]])))
        part["msg"] = inner
        part["l"] = _count_lines(buf, body, end)
    elif main == "text" or main == "message":
        part["l"] = _count_lines(buf, body, end)
    return part


def _split(buf: Any, start: int, end: int, boundary: str) -> list[tuple[int, int]]:
    """Byte ranges of the body parts between ``--boundary`` delimiter lines."""
    delim = re.compile(rb"(?:^|(?<=\n))--" + re.escape(boundary.encode("utf-8", "replace"))
                       + rb"(--)?[ \t]*(?:\r\n|$)", re.M)
    ranges: list[tuple[int, int]] = []
    part_start: int | None = None
    pos = start
    while True:
        m = delim.search(buf, pos, end)
        if m is None:
            break
        if part_start is not None:
            stop = m.start()
            if stop - 2 >= part_start and buf[stop - 2:stop] == b"\r\n":
                stop -= 2  # the CRLF before a delimiter belongs to the delimiter
            ranges.append((part_start, max(part_start, stop)))
            if len(ranges) >= MAX_PARTS:
                break
        if m.group(1):
            return ranges
        part_start = m.end()
        pos = m.end()
    if part_start is not None and part_start < end:
        ranges.append((part_start, end))
    return ranges


def find_section(root: Part, numbers: list[int]) -> Part | None:
    """The part named by an IMAP section number path like [2, 1] (RFC 3501 §6.4.5)."""
    part = root
    for n in numbers:
        if "msg" in part:  # a message/rfc822 part: numbers refer to its body's parts
            part = part["msg"]
        if "parts" in part:
            if not 1 <= n <= len(part["parts"]):
                return None
            part = part["parts"][n - 1]
        elif n == 1:
            continue  # a single-part message's body is part 1
        else:
            return None
    return part


def message_of(part: Part) -> Part | None:
    """The message a HEADER/TEXT section applies to: the root or a message/rfc822 part's."""
    if "env" in part:
        return part
    return part.get("msg")
