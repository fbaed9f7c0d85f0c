"""wsgidav's lock storage and property manager, persisted in twin.db.

wsgidav keys both by *ref URL* (the quoted path under the share). Locks go to
``core.files.PathLocks`` keyed by that string. Dead properties belong to the
file tree's nodes (``FileTree.props``), so they follow MOVE and COPY and die
with DELETE inside the tree's own transactions; the move/copy/remove hooks
here have nothing left to do.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from urllib.parse import unquote

from core.files import FileTree, PathLocks
from core.files.locks import normalize_root
from protocols.webdav.bridge import Bridge
from protocols.webdav.resources import PROPS

log = logging.getLogger("twin.webdav")


class SqliteLockStorage:
    """The interface of ``wsgidav.lock_man.lock_storage.LockStorageDict``.

    Written through to ``PathLocks`` (twin.db), read from a copy in memory:
    wsgidav asks for the locks of every member of a PROPFIND (lockdiscovery)
    and of every ancestor of a PUT, and one database round trip each made a
    10,000-entry listing cost 10,000 of them (issue 20). This adapter is the
    only writer of the lock table while the twin runs, so the copy stays true;
    it is loaded on first use.
    """

    def __init__(self, locks: PathLocks) -> None:
        self.locks = locks
        self._mutex = threading.Lock()
        self._by_root: dict[str, dict[str, dict[str, Any]]] | None = None

    def __repr__(self) -> str:
        return "SqliteLockStorage"

    def open(self) -> None:
        """Nothing to open: the database is the service's."""

    def close(self) -> None:
        """Nothing to close: the database is the service's."""

    def cleanup(self) -> None:
        """Expired locks are purged on every lookup."""

    def _index(self) -> dict[str, dict[str, dict[str, Any]]]:
        """root -> token -> lock; call with the mutex held."""
        if self._by_root is None:
            self._by_root = {}
            for lock in self.locks.under("/", include_root=True, include_children=True):
                self._by_root.setdefault(lock["root"], {})[lock["token"]] = lock
        return self._by_root

    def none_held(self) -> bool:
        """True if the copy is loaded and holds no lock, expired or not; never waits.

        For ``writemark``: a fast PUT may skip the lock manager's checks (and its
        worker thread) only when they could find nothing. False when unsure: not
        loaded yet, or another thread is changing the copy right now."""
        if not self._mutex.acquire(blocking=False):
            return False
        try:
            return self._by_root is not None and not any(self._by_root.values())
        finally:
            self._mutex.release()

    def _forget(self, token: str) -> None:
        for root, held in list(self._index().items()):
            if held.pop(token, None) is not None and not held:
                del self._index()[root]

    def clear(self) -> None:
        with self._mutex:
            self.locks.clear()
            self._by_root = {}

    def get(self, token: str) -> dict[str, Any] | None:
        with self._mutex:
            for held in self._index().values():
                lock = held.get(token)
                if lock is not None:
                    if _expired(lock):
                        self.locks.delete(token)
                        self._forget(token)
                        return None
                    return dict(lock)
        return None

    def create(self, path: str, lock: dict[str, Any]) -> dict[str, Any]:
        with self._mutex:
            made = self.locks.create(path, lock)
            self._index().setdefault(made["root"], {})[made["token"]] = dict(made)
            return made

    def refresh(self, token: str, *, timeout: float) -> dict[str, Any]:
        with self._mutex:
            lock = self.locks.refresh(token, timeout)
            self._forget(token)
            self._index().setdefault(lock["root"], {})[token] = dict(lock)
            return lock

    def delete(self, token: str) -> bool:
        with self._mutex:
            self._forget(token)
            return self.locks.delete(token)

    def get_lock_list(self, path: str, *, include_root: bool, include_children: bool,
                      token_only: bool) -> list[Any]:
        root = normalize_root(path)
        prefix = root.rstrip("/") + "/"
        with self._mutex:
            index = self._index()
            found: list[dict[str, Any]] = []
            if include_root:
                found += index.get(root, {}).values()
            if include_children:
                for other, held in index.items():
                    if other != root and other.startswith(prefix):
                        found += held.values()
            live = [dict(lock) for lock in found if not _expired(lock)]
        return [lock["token"] for lock in live] if token_only else live


def _expired(lock: dict[str, Any]) -> bool:
    expire = float(lock.get("expire", -1))
    return 0 <= expire < time.time()


class TreePropertyManager:
    """The interface of ``wsgidav.prop_man.property_manager.PropertyManager``."""

    def __init__(self, tree: FileTree, bridge: Bridge) -> None:
        self.tree = tree
        self.bridge = bridge

    def __repr__(self) -> str:
        return "TreePropertyManager"

    @staticmethod
    def _path(norm_url: str) -> str | None:
        path = unquote(norm_url)
        return None if path == "/shared" or path.startswith("/shared/") else path

    def _props(self, path: str, environ: Any) -> dict[str, bytes]:
        """A node's dead properties: from the listing's prefetch when there is one."""
        cached: dict[str, bytes] | None = (environ.get(PROPS, {}).get(path)
                                           if isinstance(environ, dict) else None)
        if cached is not None:
            return cached
        props: dict[str, bytes] = self.bridge.call(self.tree.props(path))
        return props

    @staticmethod
    def _stale(path: str, environ: Any) -> None:
        if isinstance(environ, dict):
            environ.get(PROPS, {}).pop(path, None)

    def get_properties(self, norm_url: str, environ: Any = None) -> list[str]:
        path = self._path(norm_url)
        return [] if path is None else list(self._props(path, environ))

    def get_property(self, norm_url: str, name: str, environ: Any = None) -> Any:
        path = self._path(norm_url)
        if path is None:
            return None
        return self._props(path, environ).get(name)  # XML bytes

    def write_property(self, norm_url: str, name: str, property_value: Any,
                       dry_run: bool = False, environ: Any = None) -> None:
        path = self._path(norm_url)
        if dry_run or path is None:
            return
        if not isinstance(property_value, bytes):
            property_value = str(property_value).encode("utf-8")
        self._stale(path, environ)
        self.bridge.call(self.tree.set_prop(path, name, property_value))

    def remove_property(self, norm_url: str, name: str, dry_run: bool = False,
                        environ: Any = None) -> None:
        path = self._path(norm_url)
        if not dry_run and path is not None:
            self._stale(path, environ)
            self.bridge.call(self.tree.set_prop(path, name, None))

    def remove_properties(self, norm_url: str, environ: Any = None) -> None:
        """Properties are deleted with their node."""

    def copy_properties(self, src_url: str, dest_url: str, environ: Any = None) -> None:
        """``FileTree.copy`` copies them with the node."""

    def move_properties(self, src_url: str, dest_url: str, with_children: bool,
                        environ: Any = None) -> None:
        """``FileTree.move`` keeps the node, so its properties stay with it."""
