"""The mail store: every user's mailboxes and messages.

Contract (what SMTP, the peer API and IMAP rely on; ``service.mail``):

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
  exactly once even across kill -9. ``await settled()`` waits for that.
  Without a running intake (the CLI on a stopped twin) it is ``deliver``.
- ``await quota(login) -> (used bytes, limit bytes; 0 = unlimited)``.

The IMAP adapter additionally uses mailboxes, ``open`` (a copy of the
mailbox's shared in-memory uid/flags/modseq index, ``core.mail.index``, plus a
bounded ``Watch`` of later changes; ``current`` after the watch overflowed),
``close``, ``meta``, ``sizes`` (``Extents``: sizes and dates by column),
``sort_keys`` (``core.mail.sortkeys``: SORT and THREAD keys, derived once),
``read``, ``set_flags``, ``expunge``, ``copy`` and ``vanished``. Errors
are core's neutral ones (``core.errors``: ``NotFound``, ``Conflict``,
``Invalid``, ``Forbidden``, ``Unavailable``, and over ``mail.quota``
``QuotaExceeded``, the same one the file tree raises); their
``code`` (an ``ErrorCode``: ``ALREADY_EXISTS``, ``HAS_CHILDREN``,
``OVER_QUOTA``, ``TOO_LARGE``, ``SPECIAL_USE``, ``LIMIT``) is what each
adapter's one table is keyed by, so SMTP, IMAP and the peer API each say
"mailbox full" their own way from one row.

Mail in and out (``twin mail import|export``): ``core.mail.transfer`` (the
loops), ``core.mail.imported`` (a batch filed with the record of its source
keys, one transaction), ``core.mail.files`` (Maildir and mbox),
``core.mail.imap_source`` (another IMAP server) and ``core.mail.folders``
(names and flags as those stores spell them).
"""

from core.mail.index import Snapshot
from core.mail.model import (
    DELIM,
    SPECIAL,
    Change,
    Copied,
    Extents,
    Mailbox,
    Meta,
    Status,
    Watch,
    check_name,
    parse_flags,
)
from core.mail.store import MailStore

__all__ = ["DELIM", "SPECIAL", "Change", "Copied", "Extents", "MailStore", "Mailbox", "Meta",
           "Snapshot", "Status", "Watch", "check_name", "parse_flags"]
