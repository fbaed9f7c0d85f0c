"""Spam filtering: which filter scans inbound mail, and learning from the owner.

- ``spam.rspamd_url`` set: rspamd scans (``core.spam.rspamd``), and with
  ``spam.rspamd_controller_url`` it learns from the owner's moves;
- else, with ``spam.builtin`` (the default): the small built-in filter
  (``core.spam.builtin``: GTUBE, a few local checks, per-sender reputation);
- else nothing is scanned.

This package is protocol-neutral (a message, its SMTP facts, a verdict);
``protocols.smtp.spam`` applies a verdict at the end of DATA, and
``core.spam.learn`` hooks into the mail store, not into IMAP, so any client
that moves mail in or out of Junk teaches the filter.
"""

from __future__ import annotations

from core.config import Config
from core.db import Database
from core.mail.store import MailStore
from core.spam.builtin import Builtin
from core.spam.learn import Learner
from core.spam.reputation import Reputation
from core.spam.rspamd import Rspamd
from core.spam.verdict import SpamFilter, Transaction, Verdict

__all__ = ["Spam", "SpamFilter", "Transaction", "Verdict"]


class Spam:
    def __init__(self, config: Config, db: Database, store: MailStore) -> None:
        self.reputation = Reputation(db, config.int("spam.reputation_size"))
        self.rspamd: Rspamd | None = None
        self.filter: SpamFilter | None = None
        url = config.str("spam.rspamd_url")
        if url:
            self.rspamd = Rspamd(url, controller_url=config.str("spam.rspamd_controller_url"),
                                 password=config.str("spam.rspamd_password"),
                                 timeout=config.float("spam.timeout"),
                                 max_size=config.int("spam.max_size"),
                                 on_failure=config.str("spam.on_failure"))
            self.filter = self.rspamd
        elif config.bool("spam.builtin"):
            self.filter = Builtin(self.reputation)
        self.learner = Learner(store, self.reputation, self.rspamd,
                               config.int("spam.learn_concurrency"))
        store.copy_hooks.append(self.learner.copied)

    async def close(self) -> None:
        await self.learner.close()
        if self.filter is not None:
            await self.filter.close()
