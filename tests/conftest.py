"""Fixtures shared by every test: real twin processes on 127.0.0.1, port 0."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from tests.servers import DnsServer, Servers, redis_servers, zdb_servers
from tests.twins import TwinProcess


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Async tests run on uvloop, the loop ``twin serve`` runs on (``serve.event_loop``)."""
    return {"uvloop": uvloop.new_event_loop}


FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None],
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember on the test item whether any of its phases failed."""
    report = yield
    if report.failed:
        item.stash[FAILED] = True
    return report


@pytest.fixture(autouse=True)
def _tidy_tmp_path(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """A passed test's directory goes as soon as it ends (after its servers and
    twins stop), not at the end of the run: stores, shards and 0-db files of
    ~1,000 tests would otherwise pile up to tens of GB on a CI machine."""
    yield
    if not request.node.stash.get(FAILED, False):
        shutil.rmtree(tmp_path, ignore_errors=True)


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


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    """A real DNS server (dnsmasq) on loopback; ``serve(options)`` (re)starts it."""
    server = DnsServer()
    yield server
    server.stop()
