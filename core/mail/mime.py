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
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator
from email.message import Message
from typing import Any

log = logging.getLogger("twin.mail.mime")
Part = dict[str, Any]
Envelope = list[Any]

MAX_DEPTH = 20
MAX_PARTS = 2000
MAX_HEADER = 1024 * 1024
MAX_PARAMS = 100
MAX_PARAM_HEADER = 8 * 1024  # longer Content-Type/-Disposition: _plain_params
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_HEADER_END = re.compile(rb"\r\n\r\n")
_FIELD_START = re.compile(r"\r\n(?![ \t])")  # a line break that starts a new field
_FOLD = re.compile(r"\r\n(?=[ \t])")
LONE_LF = re.compile(rb"(?<!\r)\n")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
# ``a@b``, ``<a@b>``, ``Name <a@b>``, ``"Name, Jr." <a@b>``: nearly every address field
_WORD = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
# Each run of spaces has one way to match: words of a display name are separated by
# `` +`` only, and no ``\s*`` follows another. With a class that held the space
# between two ``\s*``, a failing match backtracked in cubic time (1,600 spaces:
# 18 s on the event loop).
_PLAIN = re.compile(rf'\s*(?:({_DOT_ATOM})|(?:"([^"\\]*)"\s*|({_WORD}(?: +{_WORD})*)\s*)?'
                    rf'<({_DOT_ATOM})>)\s*')
# an addr-spec with a bounded local part: ``_DOT_ATOM`` would rescan a long run of
# atext from every position of it (quadratic)
_ADDR_SPEC = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_COUNT_CHUNK = 1024 * 1024
MAX_ADDRESS_FIELD = 8 * 1024  # an address field parsed beyond this is cut (``addresses``)
MAX_ADDRESSES = 1000


class _Budget:
    """Limits a hostile message's parse cost: parts and nesting."""

    def __init__(self) -> None:
        self.parts = 0


def to_crlf(data: bytes) -> bytes:
    """``data`` with bare LFs turned into CRLF: scripts hand us LF text, and IMAP sizes,
    offsets and line counts are those of the CRLF form (``crlf_normalise`` for streams)."""
    if data.count(b"\n") == data.count(b"\r\n"):  # C-speed counts: usually nothing to do
        return data
    return LONE_LF.sub(b"\r\n", data)


async def crlf_normalise(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Yield the stream with bare LF turned into CRLF (IMAP sizes count CRLF)."""
    prev_cr = False
    async for chunk in chunks:
        if not chunk:
            continue
        chunk = bytes(chunk)
        if b"\n" in chunk:
            out = LONE_LF.sub(b"\r\n", chunk)
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
    for line in _FIELD_START.split(text):
        if not line or ":" not in line:
            continue
        name, _, value = line.partition(":")
        if "\r\n" in value:  # folded (rare): unfold
            value = _FOLD.sub("", value)
        out.append((name.strip().lower(), value.strip()))
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
    name = m.group(2) if m.group(2) is not None else " ".join((m.group(3) or "").split())
    return name, m.group(4)


def addresses(value: str) -> list[tuple[str, str]]:
    """(display name, address) of every address in a field; never raises.

    ``email.utils.getaddresses`` recurses on nested comments and groups (a
    From of 500 ``(``: RecursionError) and costs ~40 us per address, so a
    field longer than ``MAX_ADDRESS_FIELD`` is cut at its last comma before
    that, and a field it fails on yields the addr-specs a regular expression
    finds in it (at most ``MAX_ADDRESSES`` either way)."""
    plain = plain_address(value)
    if plain is not None:
        return [plain]
    if len(value) > MAX_ADDRESS_FIELD:
        cut = value.rfind(",", 0, MAX_ADDRESS_FIELD)
        value = value[:cut if cut > 0 else MAX_ADDRESS_FIELD]
    try:
        found = email.utils.getaddresses([value])
    except Exception:  # RecursionError and whatever else: the regex below
        found = [("", m.group(0)) for m in _ADDR_SPEC.finditer(value)]
    return found[:MAX_ADDRESSES]


def _addresses(value: str | None) -> list[list[str | None]] | None:
    if not value:
        return None
    out: list[list[str | None]] = []
    for name, addr in addresses(value):
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
    """(maintype, subtype, params) of a Content-Type/-Disposition style header.

    The stdlib decodes RFC 2231 parameters but raises on malformed ones (a
    ``name*0`` next to a ``name*``: TypeError; a NUL in the charset: ValueError),
    and one such header must not stop the filing of a message, so any failure
    falls back to ``_plain_params``: the parameters as written, undecoded."""
    if header_value and (len(header_value) > MAX_PARAM_HEADER
                         or header_value.count(";") > MAX_PARAMS):
        # email.message._parseparam is quadratic in the ';' inside quotes
        # (40,000 of them: 12 s), and this runs on the event loop
        first, params = _plain_params(header_value)
        main, _, sub = first.partition("/")
        return main, sub, params
    params = []
    try:
        msg = Message()
        msg[name] = header_value or ""
        got = msg.get_params(header=name) or [("", "")]
        for key, value in got[1:]:
            if isinstance(value, tuple):
                value = email.utils.collapse_rfc2231_value(value)
            params.append([str(key).lower(), _clean(str(value))])
        first = _clean(str(got[0][0]).lower())
    except Exception:  # any stdlib failure: describe it plainly instead
        first, params = _plain_params(header_value or "")
    main, _, sub = first.partition("/")
    return main, sub, params


def _plain_params(value: str) -> tuple[str, list[list[str]]]:
    """The type and ``name=value`` pairs of a header, without RFC 2231 decoding.

    Linear in the header's length (a ``;`` inside quotes splits there: this is
    the fallback for headers the stdlib cannot or should not parse)."""
    first, _, rest = value.partition(";")
    params: list[list[str]] = []
    for item in rest.split(";", MAX_PARAMS)[:MAX_PARAMS]:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            continue
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1].replace('\\"', '"')
        params.append([_clean(key.strip().lower()), _clean(raw)])
    return _clean(first.strip().lower()), params


def _clean(text: str) -> str:
    """Text without control characters (a NUL or CR cannot go into an IMAP string)."""
    return _CONTROL.sub(" ", text) if _CONTROL.search(text) else text


def _count_lines(buf: Any, start: int, end: int) -> int:
    n = 0
    for pos in range(start, end, _COUNT_CHUNK):
        n += bytes(buf[pos:min(end, pos + _COUNT_CHUNK)]).count(b"\n")
    return n


def parse(buf: Any, start: int = 0, end: int | None = None) -> Part:
    """The structure of the message in ``buf[start:end]`` (see the module doc).

    Never raises: the mail filer calls this for every delivered message, and
    one message it could not describe would hold every later one behind it.
    Should the parser fail on something it does not foresee, the message is
    described as one plain text part (``_plain``): readable, if not structured."""
    end = len(buf) if end is None else end
    try:
        return _parse(buf, start, end)
    except Exception as exc:  # the fallback is the point
        log.warning("could not parse a message's MIME structure (%s: %s); described as "
                    "plain text", type(exc).__name__, str(exc)[:200])
        return _plain(buf, start, end)


def _plain(buf: Any, start: int, end: int) -> Part:
    """A message as one text/plain part with no envelope fields but its offsets."""
    body = header_end(buf, start, end)
    return {"t": "text", "s": "plain", "p": [["charset", "us-ascii"]], "id": None, "d": None,
            "e": "7bit", "h": start, "b": body, "z": end, "md5": None, "disp": None,
            "lang": None, "loc": None, "env": [None] * 10,
            "l": _count_lines(buf, body, end)}


def _parse(buf: Any, start: int = 0, end: int | None = None, *,
           default_type: str = "text/plain", _depth: int = 0,
           _budget: _Budget | None = None) -> Part:
    """``parse``, raising whatever goes wrong (it recurses into parts)."""
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
            _parse(buf, s, e, default_type=child_type, _depth=_depth + 1, _budget=budget)
            for s, e in _split(buf, body, end, boundary)
        ]
        if not part["parts"]:  # no delimiter: treat the body as one empty text part
            part["parts"] = [_parse(buf, body, body, _depth=_depth + 1, _budget=budget)]
    elif main == "multipart":
        part["t"], part["s"] = "text", "plain"
        part["l"] = _count_lines(buf, body, end)
    elif main == "message" and sub in ("rfc822", "global") and not deep:
        inner = _parse(buf, body, end, _depth=_depth + 1, _budget=budget)
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
