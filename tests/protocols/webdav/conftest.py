"""One real twin per test module for the WebDAV tests (starting one costs seconds)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.twins import TwinProcess


@pytest.fixture(scope="module")
def dav_twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwinProcess]:
    twin = TwinProcess.create(tmp_path_factory.mktemp("dav"), "alice").start()
    yield twin
    twin.stop()


@pytest.fixture
def dav(dav_twin: TwinProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=dav_twin.url, verify=False, timeout=60,
                      auth=(dav_twin.login, dav_twin.password)) as client:
        yield client
