"""Failure domains: how many independent places the store's shares really live in.

Six backends under one data dir are one disk: losing it loses every share,
whatever ``k`` and ``n`` say. ``twin storage status`` therefore groups the
backends by what fails together:

- ``local``: the filesystem (``st_dev`` of the directory, or of its nearest
  existing parent): two directories on one filesystem are one domain;
- ``resp``: the server, ``host:port`` (a Redis or 0-db server on another
  machine is its own domain).

The store survives the loss of any one domain only when no domain holds more
than ``n - k`` of the backends; fewer domains than ``n`` is reported as a
warning with the way out (README, "Dispersed storage").
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def of_backend(backend: Any) -> str:
    """The failure domain of one opened shard backend (``storage.backends``)."""
    path = getattr(backend, "path", None)
    if backend.kind == "local" and isinstance(path, Path):
        return of_path(path)
    return of_url(str(backend.location))


def of_path(path: Path) -> str:
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    dev = os.stat(probe).st_dev
    return f"filesystem {os.major(dev)}:{os.minor(dev)}"


def of_url(location: str) -> str:
    parts = urlsplit(location)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.hostname:
        return f"server {parts.hostname}:{port or 6379}"
    return f"server {location}"  # e.g. a unix socket path: that one server


@dataclass(frozen=True)
class Summary:
    count: int  # distinct failure domains
    largest: int  # backends in the most crowded domain
    survives_one: bool  # no domain holds more than n - k backends
    warning: str  # empty when the shares span at least n domains


def summarise(domains: list[str], k: int, n: int) -> Summary:
    counts = Counter(domains)
    largest = max(counts.values(), default=0)
    survives = largest <= n - k
    warning = ""
    if len(counts) < n:
        warning = (f"the shares span {len(counts)} failure domain(s), fewer than n={n}; "
                   + ("any one of them can be lost" if survives else
                      f"losing the one holding {largest} backends can lose data (k={k})")
                   + ": add backends on other disks or machines (README: Dispersed storage)")
    return Summary(len(counts), largest, survives, warning)


def of_spec(spec: dict[str, str], data_dir: Path) -> str:
    """The failure domain of a backend spec not opened yet (``twin storage backends add``):
    a local location is relative to the data dir, as ``storage.backends.load`` reads it."""
    if spec.get("kind") == "local":
        path = Path(str(spec.get("location", ""))).expanduser()
        return of_path(path if path.is_absolute() else data_dir / path)
    return of_url(str(spec.get("location", "")))


def check_change(before: list[str], after: list[str], k: int, n: int) -> str:
    """Why going from the domains ``before`` to ``after`` (one per backend taking new
    shares) weakens the store, or "" if it does not.

    Refused: a change that makes one domain hold more than n - k backends when none
    did (losing it could then lose data), and one that leaves the shares on fewer
    domains than before when that is fewer than n. A store already below the rule
    may still change in ways that do not make it worse (six directories on one disk
    drained onto other disks and servers).
    """
    was, will = summarise(before, k, n), summarise(after, k, n)
    if was.survives_one and not will.survives_one:
        return (f"one failure domain would hold {will.largest} of the backends, more than "
                f"n-k={n - k}: losing that disk or server could lose data")
    if will.count < was.count and will.count < n:
        return (f"the shares would span {will.count} failure domain(s) instead of "
                f"{was.count}, fewer than n={n}")
    return ""
