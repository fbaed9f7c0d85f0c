"""One message that cannot be filed does not hold the others (issue #15, item 1).

The filer used to retry a failing batch forever, every later message behind
it, across restarts. Now the message is set aside in the quarantine (stored,
listed, retried or deleted by the owner) and the rest is filed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from core.errors import NotFound
from core.mail import intake as intake_mod
from core.mail import store as store_mod
from core.mail.journal import Entry
from core.service import Service
from tests.core.test_mail_intake import KEY, message, subjects
from tests.protocols.smtp.helpers import inbox

POISON = b"From: a@example.com\r\nSubject: poison\r\n\r\nX-POISON\r\n"


def failing_describer(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make describing POISON raise, as the RFC 2231 bug did; the real describer."""
    real = store_mod._describe

    def describe(buf: Any) -> tuple[bytes, str]:
        if b"X-POISON" in bytes(buf):
            raise TypeError("'<' not supported between instances of 'NoneType' and 'int'")
        return real(buf)
    monkeypatch.setattr(store_mod, "_describe", describe)
    return real


async def accept_all(svc: Service, login: str, messages: Sequence[bytes]) -> None:
    for m in messages:  # in order: the poison first, the good ones behind it
        await svc.mail.accept(login, m)
    await asyncio.wait_for(svc.mail.settled(), 30)


async def test_a_message_that_cannot_be_described_is_set_aside_and_the_rest_filed(
        service: tuple[Service, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    svc, login = service
    fixed = failing_describer(monkeypatch)
    await svc.mail.start_intake(tmp_path / "journal", KEY, 1 << 20)
    await accept_all(svc, login, [POISON, *(message(i) for i in range(3))])
    assert subjects(await inbox(svc, login)) == ["m0", "m1", "m2"]
    [item] = await svc.mail.quarantined()
    assert item.login == login and item.size == len(POISON) and "TypeError" in item.reason
    assert any("quarantine #1" in r.getMessage() for r in caplog.records
               if r.levelno >= logging.ERROR)

    # a restart replays nothing: the quarantine is not a blocker in the journal
    await svc.mail.stop_intake()
    await svc.mail.start_intake(tmp_path / "journal", KEY, 1 << 20)
    await accept_all(svc, login, [message(3)])
    assert subjects(await inbox(svc, login)) == ["m0", "m1", "m2", "m3"]
    assert [q.id for q in await svc.mail.quarantined()] == [item.id]

    # while the describer still fails, a retry fails and the message stays
    with pytest.raises(TypeError):
        await svc.mail.retry_quarantined(item.id)
    assert len(await svc.mail.quarantined()) == 1

    monkeypatch.setattr(store_mod, "_describe", fixed)  # the describer is fixed
    uid = await svc.mail.retry_quarantined(item.id)
    assert uid > 0 and await svc.mail.quarantined() == []
    stored = await inbox(svc, login)
    assert stored[-1] == POISON
    with pytest.raises(NotFound):
        await svc.mail.retry_quarantined(item.id)
    await svc.mail.stop_intake()


async def test_a_message_set_aside_can_be_deleted(
        service: tuple[Service, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    svc, login = service
    failing_describer(monkeypatch)
    await svc.mail.start_intake(tmp_path / "journal", KEY, 1 << 20)
    await accept_all(svc, login, [POISON])
    [item] = await svc.mail.quarantined()
    await svc.mail.drop_quarantined(item.id)
    assert await svc.mail.quarantined() == []
    with pytest.raises(NotFound):
        await svc.mail.drop_quarantined(item.id)
    await svc.mail.stop_intake()


async def test_a_message_that_fails_to_file_for_any_reason_ends_up_alone_and_set_aside(
        service: tuple[Service, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # not the describer: something else fails whenever this message is in the batch
    svc, login = service
    monkeypatch.setattr(intake_mod, "RETRY_FIRST", 0.01)
    real = svc.mail.file
    tries: list[int] = []

    async def file(entries: list[Entry]) -> None:
        tries.append(len(entries))
        if any(b"X-POISON" in e.message for e in entries):
            raise RuntimeError("this batch holds a message nothing can file")
        await real(entries)
    monkeypatch.setattr(svc.mail, "file", file)
    await svc.mail.start_intake(tmp_path / "journal", KEY, 1 << 20)
    await asyncio.gather(*(svc.mail.accept(login, m)
                           for m in [message(0), POISON, *(message(i) for i in range(1, 8))]))
    await asyncio.wait_for(svc.mail.settled(), 30)
    assert subjects(await inbox(svc, login)) == [f"m{i}" for i in range(8)]
    [item] = await svc.mail.quarantined()
    assert "RuntimeError" in item.reason
    assert len(tries) < 20  # halving, not one message at a time behind it
    await svc.mail.stop_intake()
