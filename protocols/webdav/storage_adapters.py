"""wsgidav's lock storage and property manager, persisted in twin.db.

wsgidav keys both by *ref URL* (the quoted path under the share). Locks go to
``core.files.PathLocks`` keyed by that string. Dead properties belong to the
file tree's nodes (``FileTree.props``), so they follow MOVE and COPY and die
with DELETE inside the tree's own transactions; the move/copy/remove hooks
here have nothing left to do.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote

from core.files import FileTree, PathLocks
from protocols.webdav.bridge import Bridge

log = logging.getLogger("twin.webdav")


class SqliteLockStorage:
    """The interface of ``wsgidav.lock_man.lock_storage.LockStorageDict``."""

    def __init__(self, locks: PathLocks) -> None:
        self.locks = locks

    def __repr__(self) -> str:
        return "SqliteLockStorage"

    def open(self) -> None:
        """Nothing to open: the database is the service's."""

    def close(self) -> None:
        """Nothing to close: the database is the service's."""

    def cleanup(self) -> None:
        """Expired locks are purged on every lookup."""

    def clear(self) -> None:
        self.locks.clear()

    def get(self, token: str) -> dict[str, Any] | None:
        return self.locks.get(token)

    def create(self, path: str, lock: dict[str, Any]) -> dict[str, Any]:
        return self.locks.create(path, lock)

    def refresh(self, token: str, *, timeout: float) -> dict[str, Any]:
        return self.locks.refresh(token, timeout)

    def delete(self, token: str) -> bool:
        return self.locks.delete(token)

    def get_lock_list(self, path: str, *, include_root: bool, include_children: bool,
                      token_only: bool) -> list[Any]:
        found = self.locks.under(path, include_root=include_root,
                                 include_children=include_children)
        return [lock["token"] for lock in found] if token_only else found


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

    def get_properties(self, norm_url: str, environ: Any = None) -> list[str]:
        path = self._path(norm_url)
        return [] if path is None else list(self.bridge.call(self.tree.props(path)))

    def get_property(self, norm_url: str, name: str, environ: Any = None) -> Any:
        path = self._path(norm_url)
        if path is None:
            return None
        return self.bridge.call(self.tree.props(path)).get(name)  # XML bytes

    def write_property(self, norm_url: str, name: str, property_value: Any,
                       dry_run: bool = False, environ: Any = None) -> None:
        path = self._path(norm_url)
        if dry_run or path is None:
            return
        if not isinstance(property_value, bytes):
            property_value = str(property_value).encode("utf-8")
        self.bridge.call(self.tree.set_prop(path, name, property_value))

    def remove_property(self, norm_url: str, name: str, dry_run: bool = False,
                        environ: Any = None) -> None:
        path = self._path(norm_url)
        if not dry_run and path is not None:
            self.bridge.call(self.tree.set_prop(path, name, None))

    def remove_properties(self, norm_url: str, environ: Any = None) -> None:
        """Properties are deleted with their node."""

    def copy_properties(self, src_url: str, dest_url: str, environ: Any = None) -> None:
        """``FileTree.copy`` copies them with the node."""

    def move_properties(self, src_url: str, dest_url: str, with_children: bool,
                        environ: Any = None) -> None:
        """``FileTree.move`` keeps the node, so its properties stay with it."""
