"""File-tree paths: validated once here, trusted everywhere after.

A path is ``/`` or ``/a/b`` (no trailing slash). Components are refused when
they are empty, ``.`` or ``..``, contain ``/``, a control character or a lone
surrogate (what undecodable UTF-8 becomes), or are longer than a file system
would accept, so nothing that reaches the tree can climb out of it or smuggle
odd bytes into listings.
"""

from __future__ import annotations

from core.errors import Invalid

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
MAX_DEPTH = 64


def _check_name(name: str) -> str:
    if name in ("", ".", ".."):
        raise Invalid(f"invalid path component {name!r}")
    for ch in name:
        code = ord(ch)
        if code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF or ch in "/\\":
            raise Invalid(f"invalid character {ch!r} in name {name!r:.80}")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise Invalid(f"name {name!r:.80} is not valid UTF-8") from None
    if size > MAX_NAME_BYTES:
        raise Invalid(f"name longer than {MAX_NAME_BYTES} bytes")
    return name


def split(path: str) -> tuple[str, ...]:
    """``"/a/b/"`` -> ``("a", "b")``; raises Invalid for anything unsafe."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise Invalid(f"path must be absolute: {path!r:.80}")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise Invalid(f"path longer than {MAX_PATH_BYTES} bytes")
    parts = tuple(p for p in path.strip("/").split("/") if p != "") if path.strip("/") else ()
    if "//" in path.rstrip("/"):
        raise Invalid(f"empty path component in {path!r:.80}")
    if len(parts) > MAX_DEPTH:
        raise Invalid(f"path deeper than {MAX_DEPTH} levels")
    return tuple(_check_name(p) for p in parts)


def join(parts: tuple[str, ...] | list[str]) -> str:
    return "/" + "/".join(parts)


def normalize(path: str) -> str:
    return join(split(path))
