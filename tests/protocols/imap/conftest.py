"""One in-process twin per test module (real sockets, port 0); one fresh user per test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.protocols.imap.harness import ThreadTwin


@pytest.fixture(scope="module")
def imap_twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadTwin]:
    twin = ThreadTwin(tmp_path_factory.mktemp("imap"))
    yield twin
    twin.close()


@dataclass
class Account:
    twin: ThreadTwin
    login: str
    password: str

    @property
    def port(self) -> int:
        return self.twin.port

    def deliver(self, message: bytes, **kw: object) -> int:
        return self.twin.deliver(self.login, message, **kw)


@pytest.fixture
def account(imap_twin: ThreadTwin) -> Account:
    login, password = imap_twin.new_user()
    return Account(imap_twin, login, password)
