"""CATENATE (RFC 4469): an APPEND message built from TEXT literals and IMAP URLs.

The parser reads an APPEND that opens ``CATENATE (`` whole, its literals
bounded together by the APPEND limit (``CommandReader.buffered``); here each
part list becomes the bytes of one message. A URL part names a message (or a
section of one) in the *user's own* mailboxes, relative (``/INBOX/;UID=3``) or
absolute to this server and this user only (``imap://me@host/INBOX/;UID=3``):
anything else -- another user, another host, URLAUTH -- is refused with
``NO [BADURL url]`` (§6). The message grows part by part and is refused with
``NO [TOOBIG]`` the moment it would pass the APPEND limit, before the part's
bytes are read from the store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

from core.errors import TwinError
from protocols.imap.commands import args
from protocols.imap.commands.fetch import _range, parse_section
from protocols.imap.errors import Bad, ImapError, No
from protocols.imap.parser import Atom, String, Token

if TYPE_CHECKING:
    from protocols.imap.session import Session

MAX_PARTS = 1000  # per message: each URL is a metadata lookup and a store read
MAX_URL = 2048
_UINT = re.compile(r"^[0-9]{1,10}$")


@dataclass(frozen=True)
class ImapUrl:
    """The parts of an RFC 5092 IMAP URL that name one message or section."""

    mailbox: str
    uidvalidity: int | None
    uid: int
    section: str
    origin: int | None
    length: int | None


def _bad(url: str, why: str) -> ImapError:
    """RFC 4469 §6 ``BADURL``: the URL echoed, without what would end the code."""
    echo = re.sub(r"[\]\x00-\x1f\x7f]", "", url)[:200]
    return No(f"invalid URL: {why}", f"BADURL {echo}")


def _number(url: str, text: str, what: str) -> int:
    if not _UINT.match(text) or not 0 < int(text) < 1 << 32:
        raise _bad(url, f"invalid {what}")
    return int(text)


def parse_url(url: str, *, user: str, hosts: frozenset[str], ports: frozenset[int]
              ) -> ImapUrl:
    """RFC 5092 §6 grammar, restricted to what CATENATE may name (RFC 4469 §5).

    ``imapurl`` with ``iuserinfo`` / ``host`` equal to this session's user and
    one of this server's names, or a ``path-absolute`` relative to it; then
    ``enc-mailbox [uidvalidity] iuid [isection] [ipartial]``. URLAUTH and
    EXPIRE (RFC 4467) are not offered, so a URL carrying them is refused.
    """
    if len(url) > MAX_URL:
        raise _bad(url, "too long")
    path = url
    if url[:7].lower() == "imap://":
        authority, slash, path = url[7:].partition("/")
        if not slash:
            raise _bad(url, "no path")
        userinfo, at, hostport = authority.rpartition("@")
        if not at or unquote(userinfo.split(";", 1)[0]) != user:
            raise _bad(url, "only this user's own messages")
        host, _, port = hostport.rpartition(":") if not hostport.endswith("]") else (
            hostport, "", "")
        if not host:
            host, port = hostport, ""
        if host.lower() not in hosts or (port and (not port.isdigit() or int(port) not in ports)):
            raise _bad(url, "only messages on this server")
        path = "/" + path
    elif not url.startswith("/"):
        raise _bad(url, "not an IMAP URL")
    params = path[1:].split("/;")
    if len(params) < 2:
        raise _bad(url, "no UID")
    box, _, validity = params[0].partition(";")
    uidvalidity = None
    if validity:
        key, _, value = validity.partition("=")
        if key.upper() != "UIDVALIDITY":
            raise _bad(url, "unknown mailbox parameter")
        uidvalidity = _number(url, value, "UIDVALIDITY")
    try:
        mailbox = unquote(box, errors="strict")
    except UnicodeDecodeError:
        raise _bad(url, "mailbox name is not UTF-8") from None
    if not mailbox:
        raise _bad(url, "no mailbox")
    found: dict[str, str] = {}
    for param in params[1:]:
        key, eq, value = param.partition("=")
        key = key.upper()
        if not eq or key in found or key not in ("UID", "SECTION", "PARTIAL"):
            raise _bad(url, f"unsupported URL part {key[:20]}")  # URLAUTH, EXPIRE, ...
        found[key] = value
    if "UID" not in found:
        raise _bad(url, "no UID")
    uid = _number(url, found["UID"], "UID")
    section = unquote(found.get("SECTION", ""))
    origin = length = None
    if "PARTIAL" in found:
        first, dot, second = found["PARTIAL"].partition(".")
        if not first.isdigit() or len(first) > 10 or (dot and not _UINT.match(second)):
            raise _bad(url, "invalid PARTIAL")
        origin, length = int(first), int(second) if dot else None
    return ImapUrl(mailbox, uidvalidity, uid, section, origin, length)


def server_names(s: Session) -> tuple[frozenset[str], frozenset[int]]:
    """The host names and ports an absolute URL may name to mean this server."""
    conf = s.service.config
    hosts = {conf.domain.lower(), "localhost", "127.0.0.1", "[::1]"}
    if conf.str("smtp.hostname"):
        hosts.add(conf.str("smtp.hostname").lower())
    ports = {143, 993, conf.int("imap.port"), conf.int("imap.tls_port")}
    sock = s.writer.get_extra_info("sockname")
    if sock:
        ports.add(int(sock[1]))
    return frozenset(hosts), frozenset(ports)


async def resolve(s: Session, url: str, budget: int) -> bytes:
    """The bytes a URL part names, at most ``budget`` of them (else TOOBIG)."""
    hosts, ports = server_names(s)
    u = parse_url(url, user=s.user, hosts=hosts, ports=ports)
    try:
        mb = await s.mail.mailbox(s.user, u.mailbox)
    except (TwinError, ImapError):
        raise _bad(url, "no such mailbox") from None
    if u.uidvalidity is not None and u.uidvalidity != mb.uidvalidity:
        raise _bad(url, "UIDVALIDITY has changed")
    try:
        sec = parse_section(f"BODY.PEEK[{u.section}]")
    except ImapError:
        raise _bad(url, "invalid SECTION") from None
    metas = await s.mail.meta(mb.id, [u.uid], structure=sec.needs_structure)
    if not metas:
        raise _bad(url, "no such message")
    meta = metas[0]
    data, start, end = await _range(s, mb, meta, sec)
    if data is None:
        if u.origin is not None:
            start = min(end, start + u.origin)
            end = end if u.length is None else min(end, start + u.length)
        if end - start > budget:
            raise No("catenated message larger than the APPENDLIMIT", "TOOBIG")
        data = await s.mail.read_bytes(meta.ref, start, end)
    elif u.origin is not None:
        data = data[u.origin:] if u.length is None else data[u.origin:u.origin + u.length]
    if len(data) > budget:
        raise No("catenated message larger than the APPENDLIMIT", "TOOBIG")
    return data


async def build(s: Session, parts: list[Token], limit: int) -> bytes:
    """RFC 4469 §5 ``cat-part``s in order: ``TEXT literal`` and ``URL url``."""
    if not parts:
        raise Bad("CATENATE needs at least one part")
    if len(parts) > 2 * MAX_PARTS:
        raise No(f"more than {MAX_PARTS} CATENATE parts", "LIMIT")
    if len(parts) % 2:
        raise Bad("CATENATE parts are TEXT literal or URL url")
    out = bytearray()
    for kind_tok, value in zip(parts[::2], parts[1::2], strict=True):
        kind = args.atom(kind_tok).upper()
        if kind == "TEXT":
            if not isinstance(value, String):
                raise Bad("TEXT needs a literal")
            data = value.raw()
            if b"\0" in data:
                raise Bad("NUL in a TEXT literal")
        elif kind == "URL":
            data = await resolve(s, args.astring(value), limit - len(out))
        else:
            raise Bad(f"unknown CATENATE part {kind[:20]}")
        if len(out) + len(data) > limit:
            raise No("catenated message larger than the APPENDLIMIT", "TOOBIG")
        out += data
    return bytes(out)


@dataclass
class Buffered:
    """One message of an APPEND whose data is in the tokens (not streamed)."""

    options: list[Token]
    parts: list[Token] | None  # CATENATE's part list
    literal: String | None  # a plain message read whole alongside CATENATE


def _is_catenate(tok: Token) -> bool:
    return isinstance(tok, Atom) and tok.upper() == "CATENATE"


def take(a: list[Token]) -> Buffered:
    """Pop one message's tokens off ``a``: ``[flags] [date]`` and then
    ``CATENATE (parts)`` or a literal (RFC 3502 ``append-message``, RFC 4469 §5)."""
    i = 1 if a and isinstance(a[0], list) else 0
    if i + 1 < len(a) and isinstance(a[i], String) and (
            isinstance(a[i + 1], String) or _is_catenate(a[i + 1])):
        i += 1  # a date-time before the message
    if i < len(a) and _is_catenate(a[i]):
        if i + 1 >= len(a) or not isinstance(a[i + 1], list):
            raise Bad("CATENATE needs a list of parts")
        found = Buffered(a[:i], args.plist(a[i + 1]), None)
        del a[:i + 2]
        return found
    literal = a[i] if i < len(a) else None
    if isinstance(literal, String):
        found = Buffered(a[:i], None, literal)
        del a[:i + 1]
        return found
    raise Bad("APPEND needs a message literal or CATENATE")
