"""Folder names and flags as other mail stores spell them.

The twin keeps mailbox names as Unicode with ``/`` between levels
(``core.mail.store``) and flags as IMAP spells them. An import or export
(``core.mail.transfer``) meets three other spellings:

* IMAP servers: modified UTF-7 (RFC 3501 §5.1.3) and the server's own
  hierarchy delimiter (Dovecot's Maildir++ layout uses ``.``);
* Maildir++ (as Courier and Dovecot lay it out): INBOX is the root, every other
  folder a directory ``.a.b`` at the top; names in modified UTF-7; a ``.`` or
  ``/`` inside one level, which the layout cannot hold, is escaped as ``%2E`` /
  ``%2F`` (and ``%`` itself as ``%25``); flags in the file name's info
  ``:2,DFPRST`` and keywords as the letters ``a``-``z`` a per-folder
  ``dovecot-keywords`` file maps to names (Dovecot reads such a Maildir as is);
* mbox: one file per folder, ``a/b.mbox`` (a folder's children in a directory
  beside its file); flags in ``Status``/``X-Status``/``X-Keywords`` headers, as
  Dovecot and mutt write them.
"""

from __future__ import annotations

import base64
import re

from core.errors import Invalid

DELIM = "/"
# RFC 3501 §2.3.2 system flags and their Maildir info letters (cr.yp.to/proto/maildir.html)
MAILDIR_LETTERS = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S",
                   "\\Deleted": "T"}
# Maildir "P" (passed), as mutt and Courier set it; Dovecot does not map it, so an
# export writes $Forwarded both as "P" and as a keyword letter
FORWARDED = "$Forwarded"
KEYWORD_LETTERS = "abcdefghijklmnopqrstuvwxyz"
MBOX_X_STATUS = {"\\Answered": "A", "\\Flagged": "F", "\\Draft": "T", "\\Deleted": "D"}
_SHIFTED = re.compile(r"&([^-]*)-")
_ESCAPED = re.compile(r"%([0-9A-Fa-f]{2})")


# -- RFC 3501 §5.1.3 modified UTF-7

def utf7_encode(name: str) -> str:
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


def utf7_decode(name: str) -> str:
    """Decode; a name that is not valid modified UTF-7 is kept as it is (never fails)."""
    if "&" not in name:
        return name

    def one(m: re.Match[str]) -> str:
        body = m.group(1)
        if not body:
            return "&"
        try:
            raw = base64.b64decode(body.replace(",", "/") + "=" * (-len(body) % 4), validate=True)
            return raw.decode("utf-16-be")
        except (ValueError, UnicodeDecodeError):
            return m.group(0)

    return _SHIFTED.sub(one, name)


def from_imap(name: str, delimiter: str | None) -> str:
    """A source IMAP server's folder name as a twin name (levels joined by ``/``)."""
    levels = name.split(delimiter) if delimiter else [name]
    return DELIM.join(utf7_decode(level).replace(DELIM, "_") for level in levels)


# -- Maildir++

def _escape_level(level: str) -> str:
    return utf7_encode(level).replace("%", "%25").replace(".", "%2E").replace("/", "%2F")


def to_maildir(name: str) -> str:
    """The Maildir++ directory of a twin folder: ``""`` for INBOX, else ``.a.b``."""
    if name == "INBOX":
        return ""
    return "." + ".".join(_escape_level(level) for level in name.split(DELIM))


def from_maildir(directory: str) -> str:
    """A Maildir++ folder directory (``.a.b``) as a twin name."""
    levels = directory.lstrip(".").split(".")
    return DELIM.join(utf7_decode(_ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), level))
                      .replace(DELIM, "_") for level in levels)


def maildir_info(flags: frozenset[str], letters: dict[str, str]) -> str:
    """``2,`` and the flag letters, sorted as the spec asks; keywords by their letter."""
    found = {MAILDIR_LETTERS[f] for f in flags if f in MAILDIR_LETTERS}
    if FORWARDED in flags:
        found.add("P")
    found |= {letters[f] for f in flags if f in letters}
    return "2," + "".join(sorted(found))


def maildir_flags(info: str, keywords: dict[str, str]) -> frozenset[str]:
    """Flags of a Maildir file's info (``2,FS``); unknown letters are dropped."""
    if not info.startswith("2,"):
        return frozenset()
    by_letter = {v: k for k, v in MAILDIR_LETTERS.items()}
    out: set[str] = set()
    for ch in info[2:]:
        if ch in by_letter:
            out.add(by_letter[ch])
        elif ch == "P":
            out.add(FORWARDED)
        elif ch in keywords:
            out.add(keywords[ch])
    return frozenset(out)


def read_dovecot_keywords(text: str) -> dict[str, str]:
    """``dovecot-keywords`` (``N name`` per line) as letter -> keyword."""
    out: dict[str, str] = {}
    for line in text.splitlines()[:len(KEYWORD_LETTERS)]:
        index, _, name = line.partition(" ")
        if index.isdigit() and int(index) < len(KEYWORD_LETTERS) and name:
            out[KEYWORD_LETTERS[int(index)]] = name.strip()
    return out


# -- mbox

def to_mbox(name: str) -> str:
    """The relative path of a twin folder's mbox file, in UTF-8: ``a/b.mbox``.

    ``%``, ``&`` (which a reader may take for modified UTF-7) and a leading
    ``.`` are escaped; every other character is the folder's own."""
    levels = [level.replace("%", "%25").replace("&", "%26") for level in name.split(DELIM)]
    return "/".join("%2E" + lv[1:] if lv.startswith(".") else lv for lv in levels) + ".mbox"


def from_mbox(relative: str) -> str:
    """A relative mbox file path (``a/b.mbox``, Thunderbird's ``a.sbd/b``) as a twin name."""
    parts = relative.split("/")
    parts = [p[:-4] if p.endswith(".sbd") else p for p in parts[:-1]] + [
        parts[-1][:-5] if parts[-1].endswith(".mbox") else parts[-1]]
    name = DELIM.join(utf7_decode(_ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), p))
                      .replace(DELIM, "_") for p in parts if p)
    if not name:
        raise Invalid(f"no folder name in {relative!r}")
    return "INBOX" if name.upper() == "INBOX" else name


def mbox_headers(flags: frozenset[str]) -> bytes:
    """The ``Status``/``X-Status``/``X-Keywords`` lines an exported message carries."""
    status = ("R" if "\\Seen" in flags else "") + "O"
    x_status = "".join(sorted(v for k, v in MBOX_X_STATUS.items() if k in flags))
    keywords = sorted(f for f in flags if not f.startswith("\\"))
    out = f"Status: {status}\n"
    if x_status:
        out += f"X-Status: {x_status}\n"
    if keywords:
        out += f"X-Keywords: {' '.join(keywords)}\n"
    return out.encode()


def mbox_flags(status: str, x_status: str, keywords: str) -> frozenset[str]:
    out = {"\\Seen"} if "R" in status else set()
    out |= {k for k, v in MBOX_X_STATUS.items() if v in x_status}
    out |= {k for k in re.split(r"[\s,]+", keywords) if k}
    return frozenset(out)
