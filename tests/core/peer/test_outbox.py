"""The outbox's group commit: messages queued together share one commit, each durable."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from core.db import Database
from core.peer.outbox import Outbox


async def test_concurrent_enqueues_and_removals_share_commits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(tmp_path / "twin.db")
    try:
        outbox = Outbox(db)
        calls = 0
        real = db.run

        async def counting(fn: Any, *args: Any) -> Any:
            nonlocal calls
            calls += 1
            return await real(fn, *args)
        monkeypatch.setattr(db, "run", counting)
        uids = await asyncio.gather(*(outbox.enqueue("bob", "message", {"text": str(i)})
                                      for i in range(50)))
        assert calls < 10  # one call per group, not one per message
        # each row is committed: another connection sees all of them
        with sqlite3.connect(tmp_path / "twin.db") as other:
            assert other.execute("SELECT count(*) FROM peer_outbox").fetchone()[0] == 50
        calls = 0
        removed = await asyncio.gather(*(outbox.remove(uid) for uid in uids))
        assert removed == [True] * 50 and calls < 10
        assert await outbox.remove(uids[0]) is False
        assert await outbox.list() == []
        # queued and acked at the same time: one group, one commit, for both
        kept = [await outbox.enqueue("bob", "message", {"text": str(i)}) for i in range(20)]
        calls = 0
        mixed = await asyncio.gather(*(outbox.remove(uid) for uid in kept),
                                     *(outbox.enqueue("bob", "message", {"text": "new"})
                                       for _ in range(20)))
        assert mixed[:20] == [True] * 20 and calls < 6
        assert {p.uid for p in await outbox.list()} == set(mixed[20:])
    finally:
        db.close()


async def test_due_leaves_out_the_messages_in_flight(tmp_path: Path) -> None:
    db = Database(tmp_path / "twin.db")
    try:
        outbox = Outbox(db)
        uids = [await outbox.enqueue("bob", "message", {"text": str(i)}) for i in range(5)]
        due = await outbox.due(1e12, 3, frozenset(uids[:2]))
        assert [p.uid for p in due] == uids[2:5]
    finally:
        db.close()
