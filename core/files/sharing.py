"""Which grants reach a file-tree path: what WebDAV shows as ``{urn:twin}shared-with``.

The rule is ``core.acl``'s own (an exact grant on the path, or a prefix grant
ending in "/" above it; a directory is addressed as "path/", as the peer
layer does when it lists one), applied to grants already read, so one
PROPFIND over a folder of many files reads the grants table once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from core.acl import Grant, as_dir


def covering(grants: Iterable[Grant], path: str, *, is_dir: bool,
             now: float | None = None) -> list[Grant]:
    """The unexpired grants that give someone access to ``path``."""
    target = as_dir(path) if is_dir else path
    now = time.time() if now is None else now
    return [g for g in grants
            if (g.until is None or g.until > now)
            and (g.path == target or (g.path.endswith("/") and target.startswith(g.path)))]
