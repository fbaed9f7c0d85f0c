"""Two real twins' services (alice, bob) sharing a phonebook, opened in-process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.service import Service
from tests.twins import twin_cli


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Service]]:
    root = tmp_path_factory.mktemp("pair")
    twin_cli(root / "alice", "init", "--name", "alice", "--json")
    twin_cli(root / "bob", "init", "--name", "bob", "--json",
             "--phonebook", str(root / "alice" / "phonebook.db"))
    alice, bob = Service.open(root / "alice"), Service.open(root / "bob")
    yield alice, bob
    alice.close()
    bob.close()


def open_again(service: Service) -> Service:
    return Service.open(Path(service.data_dir))
