"""The DAVProvider: maps a DAV path to a tree resource or a shared-with-me resource."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wsgidav.dav_error import DAVError
from wsgidav.dav_provider import DAVProvider

from core.errors import Invalid
from core.files import FileTree, join, split
from protocols.webdav.bridge import Bridge
from protocols.webdav.resources import TreeFile, TreeFolder
from protocols.webdav.shared import SharedSpace

if TYPE_CHECKING:
    from core.service import Service

SHARED = "shared"


class TwinProvider(DAVProvider):  # type: ignore[misc]
    def __init__(self, service: Service, bridge: Bridge) -> None:
        super().__init__()
        self.service = service
        self.tree: FileTree = service.files
        self.bridge = bridge
        self.shared = SharedSpace(self, service, bridge)

    def __repr__(self) -> str:
        return "TwinProvider"

    @staticmethod
    def is_shared(path: str) -> bool:
        stripped = path.strip("/")
        return stripped == SHARED or stripped.startswith(SHARED + "/")

    def get_resource_inst(self, path: str, environ: dict[str, Any]) -> Any:
        self._count_get_resource_inst += 1
        try:
            parts = split(path)
        except Invalid as exc:
            raise DAVError(400, context_info=str(exc)) from None
        if parts and parts[0] == SHARED:
            return self.shared.resolve(parts[1:], environ)
        entry = self.bridge.call(self.tree.exists(join(parts)))
        if entry is None:
            return None
        if entry.is_dir:
            return TreeFolder(path, environ, entry)
        return TreeFile(path, environ, entry)
