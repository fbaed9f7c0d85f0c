"""The mail store: every user's mailboxes and messages.

The contract is ``MailAccess`` below: exactly what the front ends (IMAP in
``protocols.imap``, SMTP and the peer API through ``core.routing`` and
``core.peer``, the outbound queue's bounces) call on ``service.mail``, a
``MailStore``, with the named types of ``core.mail.model``. A new front end
(JMAP) uses this and nothing else; a method it needs that is not here goes
into ``MailAccess`` and ``MailStore`` together (mypy checks that ``MailStore``
satisfies it, at the bottom of this file).

What it promises:

- ``await ensure_user(login)`` creates INBOX, Sent, Drafts, Trash, Junk and
  Archive (special-use ``\\Sent`` ...) once; idempotent, and called lazily by
  every other entry point too.
- ``await deliver(login, message, *, mailbox="INBOX", flags=(), internal_date=None)
  -> uid`` stores the bytes (``bytes``, an async iterator of chunks, or a binary
  file) in the dispersed store and the metadata in SQLite; it is durable
  (fsynced, group-committed with concurrent deliveries) before it returns, and
  live IMAP sessions on the mailbox learn of the message at once.
- ``await accept(login, message: bytes)`` is local delivery for SMTP and the
  peer API: durable when it returns, but through the journal
  (``core.mail.intake``, started by ``start_intake`` in ``Service.start``):
  the message shows in the Inbox once filed, normally milliseconds later,
  exactly once even across kill -9 (``MailStore.settled`` waits for that).
  Without a running intake (the CLI on a stopped twin) it is ``deliver``.
- ``await quota(login) -> (used bytes, limit bytes; 0 = unlimited)``.
- A session's view of a mailbox: ``open`` (a copy of the mailbox's shared
  in-memory uid/flags/modseq index, ``core.mail.index``, plus a bounded
  ``Watch`` of later changes; ``current`` after the watch overflowed),
  ``close``, ``meta``, ``sizes`` (``Extents``: sizes and dates by column),
  ``sort_keys`` (``core.mail.sortkeys``: SORT and THREAD keys, derived once),
  ``read``/``read_bytes``, ``set_flags``, ``expunge``, ``copy`` and
  ``vanished``; ``observers`` hears every committed ``Change`` of any mailbox.

Errors are core's neutral ones (``core.errors``: ``NotFound``, ``Conflict``,
``Invalid``, ``Forbidden``, ``Unavailable``, and over ``mail.quota``
``QuotaExceeded``, the same one the file tree raises); their
``code`` (an ``ErrorCode``: ``ALREADY_EXISTS``, ``HAS_CHILDREN``,
``OVER_QUOTA``, ``TOO_LARGE``, ``SPECIAL_USE``, ``LIMIT``) is what each
adapter's one table is keyed by, so SMTP, IMAP and the peer API each say
"mailbox full" their own way from one row.

Where things are (one job a file):

- ``model``: the named types (``Mailbox``, ``Status``, ``Meta``, ``Change``,
  ``Watch``, ``Extents``, ``Row``, ...) and the name and flag rules.
- ``store``: ``MailStore``, the one object behind ``MailAccess``: it runs each
  operation's transaction through one ``GroupCommit``, publishes what
  committed (``live``), and owns the caches and intake. A new front-end
  operation (a JMAP method) is a method here, listed in ``MailAccess``.
- ``schema``: the tables (migrations). ``mailboxes``: mailbox rows on a
  connection (get, add with a fresh UIDVALIDITY, modseq). ``messages``:
  message rows (load an index, insert, remove with expunge records, what is
  left unused). ``packs``: how message bytes sit in stored objects
  (``obj@off:len``). ``live``: what sessions see of commits (the shared
  indexes of open mailboxes, their watches, observers: ``MailStore.live``).
- ``index`` (a mailbox's shared in-memory index; ``indexfile``: a large one
  kept packed on disk for the next start), ``cache`` (bodies and
  metadata), ``sortkeys``, ``addresses``, ``mime`` (structure), ``commit``
  (the group commit: per-op isolation over ``storage.groupcommit``),
  ``journal``/``intake``/``quarantine`` (local delivery), ``subscriptions``,
  ``junk``.

Mail in and out (``twin mail import|export``): ``core.mail.transfer`` (the
loops), ``core.mail.imported`` (a batch filed with the record of its source
keys, one transaction), ``core.mail.files`` (Maildir and mbox),
``core.mail.imap_source`` (another IMAP server) and ``core.mail.folders``
(names and flags as those stores spell them).
"""

from __future__ import annotations

from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Collection,
    Hashable,
    Iterable,
    Sequence,
)
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from core.mail.index import Snapshot
from core.mail.model import (
    DELIM,
    SPECIAL,
    Change,
    Copied,
    Copies,
    Extents,
    Flagged,
    Mailbox,
    Meta,
    Status,
    Watch,
    check_name,
    parse_flags,
)
from core.mail.quarantine import Quarantined
from core.mail.sortkeys import KeyColumns
from core.mail.store import MailStore
from core.mail.subscriptions import Subscriptions


class MailAccess(Protocol):
    """What front ends call on the mail store (``service.mail``); see above."""

    @property
    def quota_bytes(self) -> int: ...  # the per-user limit, 0 = unlimited
    @property
    def subscriptions(self) -> Subscriptions: ...  # IMAP's subscribed names
    @property
    def observers(self) -> set[Callable[[int, Change], None]]: ...  # IMAP NOTIFY

    # users and mailboxes
    async def ensure_user(self, login: str) -> None: ...
    async def mailboxes(self, login: str) -> list[Mailbox]: ...
    async def mailbox(self, login: str, name: str) -> Mailbox: ...
    async def create_mailbox(self, login: str, name: str,
                             special: str | None = None) -> Mailbox: ...
    async def delete_mailbox(self, login: str, name: str) -> None: ...
    async def rename_mailbox(self, login: str, old: str, new: str) -> None: ...
    async def status(self, mailbox_id: int) -> Status: ...
    async def quota(self, login: str) -> tuple[int, int]: ...

    # a session's view of one mailbox
    async def open(self, login: str, name: str, *, read_only: bool,
                   max_pending: int = 10_000) -> tuple[Snapshot, Watch]: ...
    def close(self, watch: Watch) -> None: ...
    def current(self, watch: Watch) -> Snapshot | None: ...
    async def meta(self, mailbox_id: int, uids: Sequence[int], *,
                   structure: bool) -> list[Meta]: ...
    async def sizes(self, mailbox_id: int, first: int, last: int) -> Extents: ...
    async def sort_keys(self, mailbox_id: int, uids: Sequence[int],
                        fields: Collection[str]) -> KeyColumns: ...
    async def vanished(self, mailbox_id: int, since_modseq: int) -> list[int]: ...
    # a result computed from a view of a mailbox, kept until the mailbox changes
    def derived(self, mailbox_id: int, key: Hashable) -> Any: ...
    def keep_derived(self, mailbox_id: int, key: Hashable, value: Any) -> None: ...

    # message bytes
    def read(self, ref: str, start: int = 0, end: int | None = None
             ) -> AsyncIterator[bytes]: ...
    async def read_bytes(self, ref: str, start: int = 0, end: int | None = None) -> bytes: ...

    # writes
    async def append(self, login: str, name: str,
                     message: bytes | AsyncIterable[bytes] | BinaryIO, *,
                     flags: Sequence[str] = (), internal_date: float | None = None,
                     max_size: int | None = None) -> tuple[int, int]: ...
    async def set_flags(self, mailbox_id: int, uids: Sequence[int], op: str,
                        flags: Iterable[str], unchanged_since: int | None = None
                        ) -> tuple[list[Flagged], list[int]]: ...
    async def expunge(self, mailbox_id: int, uids: Sequence[int] | None = None) -> list[int]: ...
    async def copy(self, mailbox_id: int, uids: Sequence[int], login: str, dest: str, *,
                   move: bool = False) -> Copies: ...

    # local delivery (SMTP, the peer API, bounces) and its quarantine
    async def deliver(self, login: str, message: bytes | AsyncIterable[bytes] | BinaryIO, *,
                      mailbox: str = "INBOX", flags: Sequence[str] = (),
                      internal_date: float | None = None) -> int: ...
    async def accept(self, login: str, message: bytes) -> int | None: ...
    async def quarantined(self) -> list[Quarantined]: ...
    async def retry_quarantined(self, qid: int) -> int: ...
    async def drop_quarantined(self, qid: int) -> None: ...


if TYPE_CHECKING:
    def _satisfies(store: MailStore) -> MailAccess:
        return store  # mypy: MailStore is a MailAccess


__all__ = ["DELIM", "SPECIAL", "Change", "Copied", "Copies", "Extents", "Flagged", "MailAccess",
           "MailStore", "Mailbox", "Meta", "Snapshot", "Status", "Watch", "check_name",
           "parse_flags"]
