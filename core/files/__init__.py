"""The twin's file tree: what WebDAV shows and what other twins are granted.

Directories and files live as rows in ``twin.db`` (name, size, etag, times,
content type, the storage object that holds the bytes); the bytes live in the
dispersed store. Keeping the tree in SQLite and the data in the store means:

- MOVE and COPY are metadata only. A copy shares the storage object; objects
  carry a reference count and are deleted when the last file lets go of them.
- An overwrite is atomic: the new object is written fully first, then one
  transaction switches the file's reference, then the old object is deleted
  once no reader is still streaming it. A failed upload changes nothing.
- Dead properties belong to the node, so they follow it through MOVE and
  COPY and vanish with it.

Contract of the parts:

- ``FileTree`` (``core.files.tree``): async API used by adapters; implements
  the peer layer's ``ContentSource`` (``stat``, ``list``, ``read``) so grants on
  file-tree paths can be served to other twins.
- ``PathLocks`` (``core.files.locks``): persistent write locks on paths
  (WebDAV's LOCK), blocking calls meant for worker threads.
- ``paths``: the one place where a path is validated and normalised.
- ``sharing``: which grants reach a path (shown to the owner, never to peers).

The tree reaches the dispersed store through a callable (``Service.store``,
None until ``Service.attach_store``), and what the store raises leaves it
through ``core.foreign.storage_error``: content missing from the store is
``NotFound``, a backend down ``Unavailable``.

Errors are core's neutral ones (``core.errors``); over ``webdav.quota`` a
write raises ``core.errors.QuotaExceeded``, the same error mail raises over
``mail.quota``, re-exported here for callers that think of it as the tree's.
How a client is told (507 over WebDAV, ``overquota`` to another twin) is the
``OVER_QUOTA`` row of each adapter's table, listed in ``core.errors``.
"""

from core.errors import QuotaExceeded
from core.files.locks import PathLocks
from core.files.paths import join, normalize, split
from core.files.sharing import covering
from core.files.tree import FileEntry, FileTree, PutTarget, Written

__all__ = ["FileEntry", "FileTree", "PathLocks", "PutTarget", "QuotaExceeded", "Written",
           "covering", "join", "normalize", "split"]
