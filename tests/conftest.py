"""Fixtures shared by every test: real twin processes on 127.0.0.1, port 0."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from tests.servers import Servers, redis_servers, zdb_servers
from tests.twins import TwinProcess


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Async tests run on uvloop, the loop ``twin serve`` runs on (``serve.event_loop``)."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
def twins(tmp_path: Path) -> Iterator[Callable[..., TwinProcess]]:
    """Factory: ``twins("alice")`` creates and starts a twin; all are stopped after."""
    made: list[TwinProcess] = []

    def make(name: str, *, phonebook: Path | None = None, start: bool = True,
             sets: list[str] | None = None) -> TwinProcess:
        if phonebook is None and made:
            phonebook = made[0].phonebook
        twin = TwinProcess.create(tmp_path, name, phonebook=phonebook, sets=sets)
        made.append(twin)
        return twin.start() if start else twin

    yield make
    for twin in made:
        try:
            twin.stop()
        except Exception:
            twin.kill9()


@pytest.fixture
def redises(tmp_path: Path) -> Iterator[tuple[Servers, list[dict[str, str]]]]:
    """Six real redis-servers and their backend specs (tests/servers.py)."""
    servers, specs = redis_servers(tmp_path / "redis")
    try:
        yield servers, specs
    finally:
        servers.close()


@pytest.fixture
def zdbs(tmp_path: Path) -> Iterator[tuple[Servers, list[dict[str, str]]]]:
    """Six real 0-db servers with password-protected namespaces (tests/servers.py)."""
    servers, specs = zdb_servers(tmp_path / "zdb")
    try:
        yield servers, specs
    finally:
        servers.close()
