"""Rendering IMAP response data (RFC 3501 §7, §9 response grammar).

Values are turned into wire bytes here and only here: strings become atoms,
quoted strings or literals as their content requires; ENVELOPE and
BODYSTRUCTURE are built from the structure cached by ``core.mail.mime``.
"""

from __future__ import annotations

import functools
import math
import time
import urllib.parse
from collections.abc import Iterable
from typing import Any

from core.mail.mime import Part

_QUOTE_SAFE = frozenset(range(0x20, 0x7F)) - {0x22, 0x5C}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def string(value: str | bytes | None, *, utf8: bool = False) -> bytes:
    """An nstring: NIL, a quoted string, or a literal when it must be one."""
    if value is None:
        return b"NIL"
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    if len(raw) < 1024 and all(b in _QUOTE_SAFE for b in raw):
        return b'"' + raw + b'"'
    if (len(raw) < 1024 and b"\r" not in raw and b"\n" not in raw and b"\0" not in raw
            and (utf8 or raw.isascii())):
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(raw) + raw


def astring(value: str, *, utf8: bool = False) -> bytes:
    raw = value.encode("utf-8", "surrogateescape")
    if raw and all(0x21 <= b <= 0x7E and b not in b'(){%*"\\]' for b in raw) \
            and raw.upper() != b"NIL":
        return raw
    return string(raw, utf8=utf8)


def flags(values: Iterable[str]) -> bytes:
    return b"(" + " ".join(sorted(values)).encode("utf-8", "surrogateescape") + b")"


@functools.lru_cache(maxsize=1024)
def flag_set(values: frozenset[str]) -> bytes:
    """``flags`` of a set as the index holds it (interned, hash kept): a mailbox
    has a handful of distinct sets, and FETCH renders one per message."""
    return flags(values)


def numbers(values: Iterable[int]) -> bytes:
    """``" 1 2 3"``: the list of a SEARCH or SORT response (``str`` of an int is
    C; a bytes ``%`` per number was a third slower over 100,000 of them)."""
    text = " ".join(map(str, values))
    return b" " + text.encode() if text else b""


def date_time(ts: float) -> bytes:
    """RFC 3501 date-time: ``"17-Jul-1996 02:44:25 -0700"`` (local offset)."""
    return date_times([ts])[0]


def date_times(stamps: Iterable[float]) -> list[bytes]:
    """``date_time`` of each stamp, for a column of them.

    ``FETCH 1:* INTERNALDATE`` renders one per message, and ``localtime`` plus
    ``strftime`` (~3 µs) were two thirds of that FETCH's CPU. Here the local
    offset is looked up once per UTC hour and the day's text once per day; the
    time of day is arithmetic, and a run of one stamp (a batch filed at once)
    is rendered once. Where the offset changes inside an hour or is not whole
    minutes (old local mean times), or the year has fewer than four digits, a
    stamp is rendered field by field from ``localtime``."""
    out: list[bytes] = []
    zone_names = time.tzname
    last, text = math.nan, b""
    hour, off, zone = None, None, b""
    day, head = None, None
    for ts in stamps:
        if ts != last:
            last, sec = ts, math.floor(ts)  # as ``localtime`` reads a float
            if sec // 3600 != hour:
                hour = sec // 3600
                off = _hour_offset(hour, zone_names)
                zone = _zone_text(off) if off is not None else b""
            if off is None:
                text = _from_localtime(ts)
            else:
                today, rem = divmod(sec + off, 86400)
                if today != day:
                    day, head = today, _day_text(today)
                text = _from_localtime(ts) if head is None else \
                    b"%s%02d:%02d:%02d %s" % (head, rem // 3600, rem // 60 % 60, rem % 60, zone)
        out.append(text)
    return out


def _from_localtime(ts: float) -> bytes:
    t = time.localtime(ts)
    off = abs(t.tm_gmtoff) // 60
    sign = "+" if t.tm_gmtoff >= 0 else "-"
    return (f'"{t.tm_mday:2d}-{_MONTHS[t.tm_mon - 1]}-{t.tm_year:04d} '
            f'{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {sign}{off // 60:02d}{off % 60:02d}"'
            ).encode()


@functools.lru_cache(maxsize=4096)
def _hour_offset(hour: int, zone: tuple[str, str]) -> int | None:
    """The local offset in force for all of UTC hour ``hour``, or None.

    ``zone`` (``time.tzname``) is part of the key so a ``tzset`` to another zone
    is never answered from the old one."""
    start = hour * 3600
    first, last = time.localtime(start).tm_gmtoff, time.localtime(start + 3599).tm_gmtoff
    return first if first == last and first % 60 == 0 else None


@functools.lru_cache(maxsize=4096)
def _day_text(day: int) -> bytes | None:
    """``"dd-Mon-yyyy `` of local day ``day`` (days since the epoch), or None
    before year 1000 (``%Y`` would not pad it to four digits)."""
    t = time.gmtime(day * 86400)
    if t.tm_year < 1000:
        return None
    return f'"{t.tm_mday:2d}-{_MONTHS[t.tm_mon - 1]}-{t.tm_year:04d} '.encode()


@functools.lru_cache(maxsize=64)
def _zone_text(offset: int) -> bytes:
    minutes = abs(offset) // 60
    return b'%s%02d%02d"' % (b"+" if offset >= 0 else b"-", minutes // 60, minutes % 60)


def _addresses(value: list[list[str | None]] | None) -> bytes:
    if not value:
        return b"NIL"
    return b"(" + b"".join(
        b"(" + b" ".join(string(x, utf8=True) for x in a) + b")" for a in value) + b")"


def envelope(env: list[Any]) -> bytes:
    """RFC 3501 §7.4.2 ENVELOPE from ``core.mail.mime.envelope``."""
    return b"(" + b" ".join([
        string(env[0]), string(env[1], utf8=True),
        _addresses(env[2]), _addresses(env[3]), _addresses(env[4]),
        _addresses(env[5]), _addresses(env[6]), _addresses(env[7]),
        string(env[8]), string(env[9]),
    ]) + b")"


def _param(key: str, value: str, utf8: bool) -> bytes:
    """One body parameter; a non-ASCII value to a client without UTF8=ACCEPT goes
    back into RFC 2231 form (``filename*`` ``utf-8''%E2%82%AC.txt``), as Dovecot sends it."""
    if not utf8 and not value.isascii():
        encoded = urllib.parse.quote(value.encode("utf-8", "surrogateescape"), safe="")
        return string(key + "*") + b" " + string("utf-8''" + encoded)
    return string(key.upper() if key == "charset" else key) + b" " + string(value, utf8=utf8)


def _params(params: list[list[str]], utf8: bool = False) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(_param(k, v, utf8) for k, v in params) + b")"


def _disposition(disp: list[Any] | None, utf8: bool = False) -> bytes:
    if not disp:
        return b"NIL"
    return b"(" + string(disp[0].upper()) + b" " + _params(disp[1], utf8) + b")"


def _language(lang: list[str] | None) -> bytes:
    if not lang:
        return b"NIL"
    if len(lang) == 1:
        return string(lang[0])
    return b"(" + b" ".join(string(x) for x in lang) + b")"


def body_structure(part: Part, *, extended: bool, utf8: bool = False) -> bytes:
    """RFC 3501 §7.4.2 BODY / BODYSTRUCTURE of a part."""
    if "parts" in part:
        inner = b"".join(body_structure(p, extended=extended, utf8=utf8) for p in part["parts"])
        out = inner + b" " + string(part["s"].upper())
        if extended:
            out += b" " + b" ".join([_params(part["p"], utf8), _disposition(part["disp"], utf8),
                                     _language(part["lang"]), string(part["loc"])])
        return b"(" + out + b")"
    size = part["z"] - part["b"]
    fields = [string(part["t"].upper()), string(part["s"].upper()), _params(part["p"], utf8),
              string(part["id"]), string(part["d"]), string(part["e"].upper()),
              str(size).encode()]
    if "msg" in part:
        inner = part["msg"]
        fields += [envelope(inner["env"]), body_structure(inner, extended=extended, utf8=utf8),
                   str(part.get("l", 0)).encode()]
    elif part["t"] == "text":
        fields.append(str(part.get("l", 0)).encode())
    if extended:
        fields += [string(part["md5"]), _disposition(part["disp"], utf8), _language(part["lang"]),
                   string(part["loc"])]
    return b"(" + b" ".join(fields) + b")"
