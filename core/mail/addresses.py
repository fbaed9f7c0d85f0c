"""RFC 5322 address lists as IMAP ENVELOPE wants them: groups, routes and comments.

The envelope cached at delivery covers the usual fields (``a@b``, ``Name
<a@b>``). What it flattens is rarer: a group (``To: team: a@b, c@d;``) must
show as a start marker ``(NIL NIL "team" NIL)``, its members and an end marker
``(NIL NIL NIL NIL)`` (RFC 3501 §7.4.2); a source route ``<@relay:a@b>`` goes in
the second field; a comment stands in for a missing display name
(``a@b (Real Name)``); and comments may sit anywhere, even inside an address
(``<user (c)@ (c) example.org>``), which a SEARCH FROM must still find.

``parse`` is linear in the value, bounded by ``MAX_VALUE`` and ``MAX_ITEMS``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_VALUE = 64 * 1024
MAX_ITEMS = 1000
_SPECIALS = set('()<>[]:;@\\,."')


@dataclass(frozen=True)
class Token:
    kind: str  # "word", "quoted", "comment", "special", "literal" (a [domain literal])
    text: str


@dataclass(frozen=True)
class Address:
    """One ENVELOPE address: a mailbox, or a group marker (host None)."""

    name: str | None
    route: str | None
    mailbox: str | None
    host: str | None

    def as_list(self) -> list[str | None]:
        return [self.name, self.route, self.mailbox, self.host]

    @property
    def text(self) -> str:
        """``Name <mailbox@host>`` for SEARCH; the group name for a marker."""
        addr = f"{self.mailbox}@{self.host}" if self.host is not None else (self.mailbox or "")
        return f"{self.name} <{addr}>" if self.name else addr


def tokenize(value: str) -> list[Token]:
    out: list[Token] = []
    i, n = 0, min(len(value), MAX_VALUE)
    while i < n:
        c = value[i]
        if c in " \t\r\n":
            i += 1
        elif c == '"':
            j, buf = i + 1, []
            while j < n and value[j] != '"':
                if value[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(value[j])
                j += 1
            out.append(Token("quoted", "".join(buf)))
            i = j + 1
        elif c == "(":
            depth, j, buf = 1, i + 1, []
            while j < n and depth:
                ch = value[j]
                if ch == "\\" and j + 1 < n:
                    buf.append(value[j + 1])
                    j += 2
                    continue
                depth += ch == "("
                depth -= ch == ")"
                if depth:
                    buf.append(ch)
                j += 1
            out.append(Token("comment", "".join(buf).strip()))
            i = j
        elif c == "[":
            j = value.find("]", i)
            j = n if j < 0 else j + 1
            out.append(Token("literal", value[i:j]))
            i = j
        elif c in _SPECIALS:
            out.append(Token("special", c))
            i += 1
        else:
            j = i
            while j < n and value[j] not in _SPECIALS and value[j] not in " \t\r\n":
                j += 1
            out.append(Token("word", value[i:j]))
            i = j
    return out


def _is(tok: Token, char: str) -> bool:
    return tok.kind == "special" and tok.text == char


def _addr_spec(toks: list[Token]) -> tuple[str | None, str | None]:
    """(local part, domain) of tokens with comments removed."""
    parts = [t for t in toks if t.kind != "comment"]
    at = next((k for k, t in enumerate(parts) if _is(t, "@")), None)
    local = "".join(t.text for t in (parts if at is None else parts[:at]))
    if at is None:
        return (local or None), None
    return (local or None), "".join(t.text for t in parts[at + 1:])


def _mailbox(toks: list[Token]) -> Address | None:
    if not any(t.kind != "comment" for t in toks):
        return None
    comments = [t.text for t in toks if t.kind == "comment" and t.text]
    lt = next((k for k, t in enumerate(toks) if _is(t, "<")), None)
    if lt is None:
        local, host = _addr_spec(toks)
        return Address(comments[-1] if comments else None, None, local, host)
    phrase = " ".join(t.text for t in toks[:lt] if t.kind in ("word", "quoted", "special")
                      and not _is(t, "<")) or None
    gt = next((k for k in range(lt + 1, len(toks)) if _is(toks[k], ">")), len(toks))
    inner = [t for t in toks[lt + 1:gt] if t.kind != "comment"]
    route = None
    if inner and _is(inner[0], "@"):
        colon = next((k for k, t in enumerate(inner) if _is(t, ":")), None)
        if colon is not None:
            route = "".join(t.text for t in inner[:colon])
            inner = inner[colon + 1:]
    local, host = _addr_spec(inner)
    if phrase is None and comments:
        after = [t.text for t in toks[gt:] if t.kind == "comment" and t.text]
        phrase = after[-1] if after else None
    return Address(phrase, route, local, host)


def parse(value: str) -> list[Address]:
    """An address list, groups as start/end markers (RFC 5322 §3.4, RFC 3501 §7.4.2)."""
    toks = tokenize(value)
    out: list[Address] = []
    i, n = 0, len(toks)
    while i < n and len(out) < MAX_ITEMS:
        j = i
        while j < n and toks[j].kind in ("word", "quoted", "comment"):
            j += 1
        if j < n and _is(toks[j], ":"):  # a group: display-name ":" [mailbox-list] ";"
            name = " ".join(t.text for t in toks[i:j] if t.kind != "comment")
            out.append(Address(None, None, name, None))
            i = j + 1
            while i < n and not _is(toks[i], ";") and len(out) < MAX_ITEMS:
                i = _one(toks, i, out, stop=";")
            out.append(Address(None, None, None, None))
            i += 1
            while i < n and _is(toks[i], ","):
                i += 1
            continue
        i = _one(toks, i, out, stop=",")
    return out


def _one(toks: list[Token], i: int, out: list[Address], stop: str) -> int:
    """Parse one mailbox from ``i`` up to a top-level ``,`` (or ``stop``); past the comma."""
    j, angle = i, False
    while j < len(toks):
        t = toks[j]
        if _is(t, "<"):
            angle = True
        elif _is(t, ">"):
            angle = False
        elif not angle and (_is(t, ",") or _is(t, stop)):
            break
        j += 1
    mb = _mailbox(toks[i:j])
    if mb is not None:
        out.append(mb)
    return j + 1 if j < len(toks) and _is(toks[j], ",") else j


def needs_parse(value: str) -> bool:
    """Whether the delivery-time envelope may have flattened this value."""
    return ";" in value or "<@" in value or "(" in value


_FIELDS = ("from", "sender", "reply-to", "to", "cc", "bcc")  # ENVELOPE positions 2..7
_ADDRESS_LINE = re.compile(rb"^(from|sender|reply-to|to|cc|bcc)[ \t]*:(.*(?:\r\n[ \t].*)*)",
                           re.I | re.M)


def envelope(env: list[Any], header: bytes) -> list[Any]:
    """The cached envelope with its address fields re-parsed where it may have lost
    a group, a route or a comment; unchanged (the same object) otherwise."""
    values: dict[str, str] = {}
    for m in _ADDRESS_LINE.finditer(header[:MAX_VALUE * 4]):
        name = m.group(1).decode("ascii").lower()
        if name not in values:
            values[name] = m.group(2).decode("utf-8", "replace").replace("\r\n", "")
    if not any(needs_parse(v) for v in values.values()):
        return env
    out = list(env)
    for k, field in enumerate(_FIELDS, start=2):
        value = values.get(field)
        if value is not None and value.strip():
            out[k] = [a.as_list() for a in parse(value)] or None
        elif field in ("sender", "reply-to"):
            out[k] = out[2]  # RFC 3501 §7.4.2: absent or empty, they default to From
        elif value is not None:
            out[k] = None
    return out
