"""wsgidav resources over the owner's file tree: one folder class, one file class.

A resource holds the ``FileEntry`` seen when it was resolved, so the ETag,
length and bytes of one GET all come from the same version even if the file
is replaced meanwhile.

Both carry one protected live property, ``{urn:twin}shared-with``: the grants
that reach the resource (``core.files.covering``), one ``<grantee>`` element
each, so the owner sees in a file manager or with PROPFIND what is shared and
with whom (to the owner only). It is not part of ``allprop`` (RFC 4918 section 9.1: allprop need
not return every live property) and cannot be set (403, protected).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import TYPE_CHECKING, Any

from wsgidav import util, xml_tools
from wsgidav.dav_error import DAVError, PRECONDITION_CODE_ProtectedProperty
from wsgidav.dav_provider import DAVCollection, DAVNonCollection

from core.acl import Grant, Principal
from core.files import FileEntry, FileTree, covering, join, split
from protocols.webdav.roles import NOBODY, principal_of, visible
from protocols.webdav.streams import DownloadReader, UploadSink

if TYPE_CHECKING:
    from protocols.webdav.provider import TwinProvider

SHARED_WITH = "{urn:twin}shared-with"
# environ key: the file a PUT of a new name was to create existed by then (see app.PutStatus)
FOUND_EXISTING = "twin.put_found_existing"
# environ key: dead properties by tree path, fetched per listing (TreeFolder.get_member_list)
PROPS = "twin.props"
GRANTEE = "{urn:twin}grantee"


def range_end(environ: dict[str, Any], size: int) -> Any:
    """End (exclusive) of the first requested range when it starts at ``start``."""
    def end_for(start: int) -> int | None:
        header = environ.get("HTTP_RANGE")
        if not header:
            return None
        ranges, _ = util.obtain_content_ranges(header, size)
        if ranges and ranges[0][0] == start:
            return int(ranges[0][1]) + 1
        return None
    return end_for


class _TreeMixin:
    provider: TwinProvider
    path: str
    environ: dict[str, Any]
    entry: FileEntry

    @property
    def tree(self) -> FileTree:
        return self.provider.tree

    def call(self, coro: Any) -> Any:
        return self.provider.bridge.call(coro)

    def get_creation_date(self) -> float:
        return self.entry.created

    def get_last_modified(self) -> float:
        return self.entry.mtime

    def get_display_name(self) -> str:
        return self.entry.name

    # -- {urn:twin}shared-with (a live property; RFC 4918 section 4.1 and 15)

    def _grants(self) -> list[Grant]:
        """Every grant, read once per request (a Depth: 1 PROPFIND asks per member)."""
        cached: list[Grant] | None = self.environ.get("twin.grants")
        if cached is None:
            cached = list(self.call(self.provider.service.access.grants()))
            self.environ["twin.grants"] = cached
        return cached

    @property
    def who(self) -> Principal:
        """The request's principal (``roles.RoleGate`` let it in); no login: no rights."""
        return principal_of(self.provider.service, self.environ) or NOBODY

    def get_property_names(self, *, is_allprop: bool) -> list[str]:
        names: list[str] = super().get_property_names(is_allprop=is_allprop)  # type: ignore[misc]
        if not is_allprop and self.who.is_owner:  # who else holds grants is the owner's
            names.append(SHARED_WITH)
        return names

    def get_property_value(self, name: str) -> Any:
        if name != SHARED_WITH or not self.who.is_owner:
            return super().get_property_value(name)  # type: ignore[misc]
        element = xml_tools.etree.Element(SHARED_WITH)
        for g in covering(self._grants(), self.entry.path, is_dir=self.entry.is_dir):
            child = xml_tools.etree.SubElement(element, GRANTEE)
            child.text = g.who
            child.set("path", g.path)
            child.set("rights", ",".join(g.rights))
            if g.until is not None:
                child.set("until", dt.datetime.fromtimestamp(g.until, dt.UTC).isoformat())
        return element

    def set_property_value(self, name: str, value: Any, *, dry_run: bool = False) -> Any:
        if name == SHARED_WITH:  # change it with `twin share` / `twin unshare`
            raise DAVError(403, err_condition=PRECONDITION_CODE_ProtectedProperty)
        return super().set_property_value(name, value, dry_run=dry_run)  # type: ignore[misc]

    def support_recursive_move(self, dest_path: str) -> bool:
        return not self.provider.is_shared(dest_path)

    def _dest(self, dest_path: str) -> str:
        if self.provider.is_shared(dest_path):
            raise DAVError(403, context_info="/shared/ is read-only here")
        return dest_path

    # RFC 4918 sections 9.8 (COPY) and 9.9 (MOVE), for a file and a folder alike
    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        dest = self._dest(dest_path)
        if is_move:
            self.call(self.tree.move(self.path, dest, overwrite=True))
        else:
            self.call(self.tree.copy(self.path, dest, recursive=False, overwrite=True))

    def move_recursive(self, dest_path: str) -> None:
        self.call(self.tree.move(self.path, self._dest(dest_path), overwrite=True))

    def set_last_modified(self, dest_path: str, time_stamp: str, *, dry_run: bool) -> bool:
        stamp = util.parse_time_string(time_stamp)
        if stamp is None:
            return False
        if not dry_run:
            self.call(self.tree.touch(dest_path, float(stamp)))
        return True

    def _remove(self) -> None:
        self.call(self.tree.delete(self.path))
        self.remove_all_locks(recursive=True)  # type: ignore[attr-defined]


class TreeFile(_TreeMixin, DAVNonCollection):  # type: ignore[misc]
    def __init__(self, path: str, environ: dict[str, Any], entry: FileEntry, *,
                 fresh: bool = False) -> None:
        super().__init__(path, environ)
        self.entry = entry
        self.fresh = fresh  # created empty by this request (PUT of a new file)
        self._sink: UploadSink | None = None

    def get_content_length(self) -> int:
        return self.entry.size

    def get_content_type(self) -> str:
        return self.entry.content_type or "application/octet-stream"

    def get_etag(self) -> str:
        return self.entry.etag

    def support_etag(self) -> bool:
        return True

    def support_ranges(self) -> bool:
        return True

    # RFC 9110 section 14 (ranges) and RFC 4918 section 9.4 (GET on a resource)
    def get_content(self) -> DownloadReader:
        entry = self.entry
        return DownloadReader(
            self.provider.bridge,
            lambda start, end: self.tree.read(entry.path, start, end, entry=entry),
            range_end(self.environ, entry.size))

    # RFC 4918 section 9.7 (PUT): the new version replaces the old only when complete
    def begin_write(self, *, content_type: str | None = None) -> UploadSink:
        hint = util.get_content_length(self.environ) or None
        path = self.path
        self._sink = UploadSink(self.provider.bridge, lambda data: self.tree.write(
            path, data, content_type=content_type, size_hint=hint))
        return self._sink

    def end_write(self, *, with_errors: bool) -> None:
        sink = self._sink
        if with_errors:
            if sink is not None:
                sink.abort()
            if self.fresh:
                with contextlib.suppress(DAVError):
                    self.call(self.tree.delete(self.path))
            return
        if sink is not None and isinstance(sink.result, FileEntry):
            self.entry = sink.result

    # RFC 4918 section 9.6 (DELETE)
    def delete(self) -> None:
        self._remove()



class TreeFolder(_TreeMixin, DAVCollection):  # type: ignore[misc]
    def __init__(self, path: str, environ: dict[str, Any], entry: FileEntry) -> None:
        super().__init__(path, environ)
        self.entry = entry

    def get_etag(self) -> None:
        return None

    def get_display_name(self) -> str:
        return self.entry.name or "/"

    # RFC 4331 section 3 and 4: quota-used-bytes / quota-available-bytes.
    # The figures are the owner's whole tree: another login sees neither (None
    # leaves the properties out), as it sees nothing it was not granted.
    def _usage(self) -> tuple[int, int] | tuple[None, None]:
        if not self.who.is_owner:
            return None, None
        cached: tuple[int, int] | None = self.environ.get("twin.usage")
        if cached is None:
            cached = self.call(self.tree.usage())
            self.environ["twin.usage"] = cached
        return cached

    def get_used_bytes(self) -> int | None:
        return self._usage()[0]

    def get_available_bytes(self) -> int | None:
        return self._usage()[1]

    def _children(self) -> list[FileEntry]:
        """The folder's entries this request's principal may see (all, for the owner)."""
        entries = list(self.call(self.tree.entries(self.path)))
        who = self.who
        if who.is_owner:
            return entries
        access = self.provider.service.access
        return [e for e in entries if self.call(visible(access, who, e.path))]

    def _lists_shared(self) -> bool:
        """The root lists ``shared`` (other twins' shares) to the owner only."""
        return not split(self.path) and self.who.is_owner

    def get_member_names(self) -> list[str]:
        names = [e.name for e in self._children()]
        if self._lists_shared():
            names.append("shared")
        return names

    def get_member_list(self) -> list[Any]:
        """The members, their dead properties fetched for all of them in one query.

        wsgidav asks the property manager per member of a PROPFIND Depth: 1;
        ``TreePropertyManager`` answers from ``environ[PROPS]`` instead of one
        database round trip each."""
        members: list[Any] = []
        children = self._children()
        if children:
            props = self.call(self.tree.child_props(self.path))
            cache: dict[str, dict[str, bytes]] = self.environ.setdefault(PROPS, {})
            for e in children:
                cache[e.path] = props.get(e.name, {})
        for e in children:
            child = util.join_uri(self.path, e.name)
            cls = TreeFolder if e.is_dir else TreeFile
            members.append(cls(child, self.environ, e))
        if self._lists_shared():
            shared = self.provider.get_resource_inst("/shared", self.environ)
            if shared is not None:
                members.append(shared)
        return members

    def get_member(self, name: str) -> Any:
        return self.provider.get_resource_inst(util.join_uri(self.path, name), self.environ)

    # RFC 4918 section 9.7.1 (PUT creates a new resource)
    def create_empty_resource(self, name: str) -> TreeFile:
        """The empty file a PUT (or LOCK) of a new name writes into.

        A concurrent PUT may have made it since wsgidav looked: then this one
        did not create it, and ``app.PutStatus`` answers 204 instead of
        wsgidav's 201 (RFC 9110 section 9.3.4: 201 only for the creator)."""
        path = join((*split(self.path), name))
        made = self.call(self.tree.make_empty(path, self.environ.get("CONTENT_TYPE")))
        if not made.created:
            self.environ[FOUND_EXISTING] = True
        return TreeFile(path, self.environ, made.entry, fresh=made.created)

    # RFC 4918 section 9.3 (MKCOL)
    def create_collection(self, name: str) -> TreeFolder:
        path = join((*split(self.path), name))
        return TreeFolder(path, self.environ, self.call(self.tree.mkdir(path)))

    def delete(self) -> None:
        if not split(self.path):
            raise DAVError(403, context_info="the root cannot be deleted")
        self._remove()
