"""Fixtures shared by the core tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.service import Service
from tests.protocols.imap.harness import close_service, init_data, open_service


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[Service, str]]:
    """A running service with one user: (service, that user's login)."""
    data, login, _ = init_data(tmp_path)
    svc = await open_service(data)
    yield svc, login
    await close_service(svc)
