"""The mail store's tables, as migrations (``Database.migrate``), and nothing else.

Who writes what: ``core.mail.mailboxes`` (mail_mailboxes, mail_users,
mail_uidvalidity), ``core.mail.messages`` (mail_messages, mail_bodies,
mail_vanished), ``core.mail.sortkeys`` (mail_sort), ``core.mail.keptkeys``
(mail_sort_kept), ``core.mail.indexfile`` (mail_index_kept),
``core.mail.journal`` and ``core.mail.intake`` (mail_journal),
``core.mail.quarantine`` (mail_quarantine), ``core.mail.imported``
(mail_imported, its own migration).
"""

from __future__ import annotations

from core.db import Database

MIGRATIONS = [
    """
    CREATE TABLE mail_mailboxes (
        id          INTEGER PRIMARY KEY,
        login       TEXT NOT NULL,
        name        TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uidnext     INTEGER NOT NULL DEFAULT 1,
        modseq      INTEGER NOT NULL DEFAULT 1,
        recent_uid  INTEGER NOT NULL DEFAULT 0,
        special     TEXT,
        subscribed  INTEGER NOT NULL DEFAULT 1,
        UNIQUE (login, name)
    );
    CREATE TABLE mail_bodies (
        ref        TEXT PRIMARY KEY,
        header     BLOB NOT NULL,
        structure  TEXT NOT NULL
    );
    CREATE TABLE mail_messages (
        mailbox       INTEGER NOT NULL REFERENCES mail_mailboxes(id) ON DELETE CASCADE,
        uid           INTEGER NOT NULL,
        ref           TEXT NOT NULL,
        size          INTEGER NOT NULL,
        internal_date REAL NOT NULL,
        flags         TEXT NOT NULL DEFAULT '',
        modseq        INTEGER NOT NULL,
        PRIMARY KEY (mailbox, uid)
    ) WITHOUT ROWID;
    CREATE INDEX mail_messages_ref ON mail_messages(ref);
    CREATE TABLE mail_vanished (
        mailbox  INTEGER NOT NULL REFERENCES mail_mailboxes(id) ON DELETE CASCADE,
        uid      INTEGER NOT NULL,
        modseq   INTEGER NOT NULL,
        PRIMARY KEY (mailbox, uid)
    ) WITHOUT ROWID;
    CREATE TABLE mail_users (login TEXT PRIMARY KEY);
    """,
    # core.mail.journal: every record up to ``filed`` has its rows here
    """
    CREATE TABLE mail_journal (
        id     INTEGER PRIMARY KEY CHECK (id = 0),
        filed  INTEGER NOT NULL
    );
    INSERT INTO mail_journal VALUES (0, 0);
    """,
    # core.mail.quarantine: journaled deliveries that could not be filed, set aside
    """
    CREATE TABLE mail_quarantine (
        id        INTEGER PRIMARY KEY,
        login     TEXT NOT NULL,
        ref       TEXT NOT NULL,
        size      INTEGER NOT NULL,
        received  REAL NOT NULL,
        at        REAL NOT NULL,
        reason    TEXT NOT NULL
    );
    """,
    # QRESYNC's expunge records are kept within a bound (``prune_vanished``): below
    # ``vanished_floor`` they are gone and ``vanished`` answers from the uid set
    """
    ALTER TABLE mail_mailboxes ADD COLUMN vanished_floor INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX mail_vanished_modseq ON mail_vanished(mailbox, modseq);
    """,
    # core.mail.sortkeys: SORT and THREAD keys, derived from a message's header once
    # (``sort_keys``), keyed as mail_messages is so a mailbox's keys are read in
    # order; a row goes with its message (``remove_messages``, ``delete_mailbox``, rename)
    """
    CREATE TABLE mail_sort (
        mailbox       INTEGER NOT NULL,
        uid           INTEGER NOT NULL,
        version       INTEGER NOT NULL,
        sent          REAL,
        subject       TEXT NOT NULL,
        reply         INTEGER NOT NULL,
        message_id    TEXT NOT NULL,
        parents       TEXT NOT NULL,
        from_key      TEXT NOT NULL,
        to_key        TEXT NOT NULL,
        cc_key        TEXT NOT NULL,
        display_from  TEXT NOT NULL,
        display_to    TEXT NOT NULL,
        PRIMARY KEY (mailbox, uid)
    ) WITHOUT ROWID;
    """,
    # objects no message uses any more, until deleted from the store (core.reclaim)
    """
    CREATE TABLE mail_garbage (
        ref    TEXT PRIMARY KEY,
        since  REAL NOT NULL
    );
    """,
    # a large mailbox's index columns, packed, for the first load after a restart
    # (core.mail.indexfile; valid only for the uidvalidity, uidnext and modseq named)
    """
    CREATE TABLE mail_index_kept (
        mailbox      INTEGER PRIMARY KEY,
        uidvalidity  INTEGER NOT NULL,
        uidnext      INTEGER NOT NULL,
        modseq       INTEGER NOT NULL,
        uids         BLOB NOT NULL,
        modseqs      BLOB NOT NULL,
        flag_ids     BLOB NOT NULL,
        flag_texts   TEXT NOT NULL
    );
    """,
    # a large mailbox's SORT and THREAD keys, packed by column (core.mail.keptkeys;
    # valid for the uidvalidity and keys version named, up to last_uid)
    """
    CREATE TABLE mail_sort_kept (
        mailbox        INTEGER PRIMARY KEY,
        uidvalidity    INTEGER NOT NULL,
        version        INTEGER NOT NULL,
        last_uid       INTEGER NOT NULL,
        uids           BLOB NOT NULL,
        size           BLOB NOT NULL,
        internal_date  BLOB NOT NULL,
        sent           BLOB NOT NULL,
        reply          BLOB NOT NULL,
        subject        BLOB NOT NULL,
        message_id     BLOB NOT NULL,
        parents        BLOB NOT NULL,
        from_key       BLOB NOT NULL,
        to_key         BLOB NOT NULL,
        cc_key         BLOB NOT NULL,
        display_from   BLOB NOT NULL,
        display_to     BLOB NOT NULL
    );
    """,
]
GARBAGE = "mail_garbage"

# RFC 3501 §2.3.1.1: a name's UIDVALIDITY never repeats, so every mailbox ever
# created takes the next value of one ascending counter (at least the clock).
# Row ids are reused by SQLite, so this is also what keeps the (mailbox id,
# uidvalidity, uid) cache key of a deleted mailbox from ever matching again.
UIDVALIDITY_MIGRATIONS = [
    """
    CREATE TABLE mail_uidvalidity (
        id    INTEGER PRIMARY KEY CHECK (id = 0),
        last  INTEGER NOT NULL
    );
    INSERT INTO mail_uidvalidity SELECT 0, COALESCE(MAX(uidvalidity), 0) FROM mail_mailboxes;
    """,
]


def migrate(db: Database) -> None:
    """Bring a database's mail tables up to date (``MailStore.__init__``)."""
    db.migrate("mail", MIGRATIONS)
    db.migrate("mail_uidvalidity", UIDVALIDITY_MIGRATIONS)
