"""``twin storage backends``: the store's backends and twin.toml changed together.

Why here, once: the same change is made by the CLI on a stopped twin and by the
running twin for the CLI (``core.owner.storage``), and either way the live
store (``Store.add_backend``, ``drain``, ``remove_backend``) and the
``storage.backends`` of ``twin.toml`` must agree, or the next start would undo
it. The store refuses what breaks it (a name taken, fewer than n backends, shares
still held); this module adds the rule the store cannot know, failure domains
(``core.domains.check_change``), which ``force`` overrides.

Order: the store first, then the file. An add whose file write fails is taken
back; a removal whose file write fails says so (the backend holds nothing then,
so the next start finds it empty and uses it again: nothing is lost).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core import config as cfg
from core import domains
from core.errors import ConfigError
from storage import BackendRefused, DrainProgress, Store

log = logging.getLogger("twin.storage")
KEY = "storage.backends"
SPEC_KEYS = frozenset({"name", "kind", "location", "password", "password_file"})
MAX_SPEC = 4096  # bytes of one backend spec: names, a URL, a password


@dataclass(frozen=True)
class BackendRow:
    """One line of ``twin storage backends list``."""

    name: str
    kind: str
    location: str
    domain: str
    draining: bool
    shares: int
    reachable: bool
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BackendRow:
        return cls(**d)


def progress_json(p: DrainProgress) -> dict[str, Any]:
    return asdict(p)


def progress_from_json(d: dict[str, Any]) -> DrainProgress:
    return DrainProgress(**d)


async def rows(store: Store) -> list[BackendRow]:
    health = {h.name: h for h in await store.health()}
    where = await asyncio.to_thread(lambda: {b.name: domains.of_backend(b)
                                             for b in store.backends})
    out = []
    for b in store.backends:
        h = health.get(b.name)
        out.append(BackendRow(b.name, b.kind, b.location, where[b.name],
                              b.name in store.draining, await store.shares_on(b.name),
                              bool(h and h.reachable), h.detail if h else ""))
    return out


def check_spec(spec: Any) -> dict[str, str]:
    """A backend spec as the API and CLI take it: a table of short strings, known keys."""
    if not isinstance(spec, dict) or not {"name", "kind", "location"} <= spec.keys():
        raise BackendRefused("a backend needs name, kind and location")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise BackendRefused(f"unknown backend keys {sorted(unknown)}")
    if not all(isinstance(v, str) for v in spec.values()) \
            or sum(len(v) for v in spec.values()) > MAX_SPEC:
        raise BackendRefused("backend fields must be strings, a few KiB in all")
    return {k: spec[k] for k in ("name", "kind", "location", "password", "password_file")
            if k in spec}


def _active_domains(store: Store, without: str = "") -> list[str]:
    return [domains.of_backend(b) for b in store.backends
            if b.name not in store.draining and b.name != without]


def _refuse(what: str, why: str) -> None:
    if why:
        raise BackendRefused(f"{what}: {why} (--force to do it all the same)")


async def add(store: Store, data_dir: Path, spec: dict[str, str], force: bool = False
              ) -> BackendRow:
    spec = check_spec(spec)
    name = spec["name"]
    if not force:
        before = await asyncio.to_thread(_active_domains, store)
        new = await asyncio.to_thread(domains.of_spec, spec, store.data_dir)
        _refuse(f"adding {name}", domains.check_change(before, [*before, new], store.k,
                                                       store.n))
    listed = await asyncio.to_thread(cfg.file_value, data_dir, KEY)
    if any(b.get("name") == name for b in listed):
        raise BackendRefused(f"{cfg.CONFIG_FILE} lists a backend named {name!r} already")
    health = await store.add_backend(spec)
    try:
        await asyncio.to_thread(cfg.set_file_value, data_dir, KEY, [*listed, spec])
    except BaseException:
        await store.remove_backend(name)
        raise
    log.info("backend %s added to the store and to %s", name, cfg.CONFIG_FILE)
    where = await asyncio.to_thread(domains.of_backend, store.by_name[name])
    return BackendRow(name, spec["kind"], store.by_name[name].location, where, False, 0,
                      health.reachable, health.detail)


async def check_drain(store: Store, name: str, force: bool = False) -> None:
    """Refuse a drain before it starts (a refusal must not look like a failed drain)."""
    if name not in store.by_name:
        raise BackendRefused(f"no backend named {name!r}")
    if name in store.draining or force:
        return
    active = [b for b in store.backends if b.name not in store.draining]
    if len(active) - 1 < store.n:
        raise BackendRefused(
            f"draining {name} would leave {len(active) - 1} backends taking new shares, "
            f"fewer than n={store.n}: add one first (twin storage backends add NAME KIND "
            f"LOCATION)")
    before = await asyncio.to_thread(_active_domains, store)
    after = await asyncio.to_thread(_active_domains, store, name)
    _refuse(f"draining {name}", domains.check_change(before, after, store.k, store.n))


async def drain(store: Store, name: str, progress: Callable[[DrainProgress], None] | None,
                force: bool = False) -> DrainProgress:
    await check_drain(store, name, force)
    return await store.drain(name, progress)


async def remove(store: Store, data_dir: Path, name: str, force: bool = False) -> None:
    if name not in store.by_name:
        raise BackendRefused(f"no backend named {name!r}")
    if name not in store.draining:
        await check_drain(store, name, force)  # the same rules as taking it out by a drain
    await store.remove_backend(name)
    listed = await asyncio.to_thread(cfg.file_value, data_dir, KEY)
    kept = [b for b in listed if b.get("name") != name]
    if len(kept) == len(listed):
        log.warning("backend %s was not in %s (given with --set or the environment?)", name,
                    cfg.CONFIG_FILE)
        return
    try:
        await asyncio.to_thread(cfg.set_file_value, data_dir, KEY, kept)
    except (OSError, ConfigError) as exc:
        raise BackendRefused(
            f"backend {name} is out of the running store and holds no share, but "
            f"{cfg.CONFIG_FILE} could not be written ({exc}): remove it from "
            f"storage.backends by hand") from exc
