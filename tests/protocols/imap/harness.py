"""A real twin Service for mail and IMAP tests, in-process, on real sockets.

``make_service`` initialises a data dir exactly as ``twin init`` does and
opens the Service with the dispersed store attached (``Service.attach_store``).
``ThreadTwin`` runs that Service and the IMAP listener in a thread with its own
event loop, so synchronous clients (imaplib, imapclient, mbsync) and async ones
(aioimaplib, in the test's loop) talk to it over 127.0.0.1 like any client;
``call(coro)`` runs a coroutine (a delivery, say) on the twin's loop.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from core import config as cfg
from core import identity as ident
from core.cli.init import _create
from core.service import Service

T = TypeVar("T")
PORTS = {"imap.port": 0, "imap.tls_port": 0, "http.port": 0, "smtp.port": 0,
         "smtp.submission_port": 0, "smtp.submissions_port": 0}


def init_data(root: Path, name: str = "alice") -> tuple[Path, str, str]:
    """A data dir as ``twin init`` makes it: (data dir, login, password)."""
    data = root / name
    identity = ident.Identity.from_mnemonic(ident.new_mnemonic())
    result = _create(data, {"twin.name": name, "twin.domain": f"{name}.localhost"}, identity)
    return data, result["login"], result["password"]


async def open_service(data: Path, sets: dict[str, Any] | None = None) -> Service:
    """The Service with its dispersed store attached (no listeners started)."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=8))
    service = Service(cfg.load(data, {**PORTS, **(sets or {})}), ident.load(data))
    await service.attach_store()
    return service


async def close_service(service: Service) -> None:
    await service.release_store()
    service.close()


class ThreadTwin:
    """A Service + IMAP listener on a private event loop in a thread."""

    _counter = itertools.count(1)

    def __init__(self, root: Path, sets: dict[str, Any] | None = None) -> None:
        self.data, self.login, self.password = init_data(root)
        self.sets = sets or {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.service: Service = self.call(open_service(self.data, self.sets))
        self.listener = self.call(self._start_imap())
        self.host = "127.0.0.1"
        self.port = next(i.port for i in self.listener.info if i.name == "imap")
        self.tls_port = next(i.port for i in self.listener.info if i.name == "imaps")

    async def _start_imap(self) -> Any:
        import protocols.imap

        return await protocols.imap.start(self.service)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def new_user(self) -> tuple[str, str]:
        """A fresh login with its own mailboxes, so tests do not see each other's mail."""
        login = f"u{next(self._counter)}@alice.localhost"
        self.service.users.add(login)
        return login, self.service.users.set_password(login)

    def deliver(self, login: str, message: bytes, **kw: Any) -> int:
        return self.call(self.service.mail.deliver(login, message, **kw))

    def close(self) -> None:
        async def stop() -> None:
            await self.listener.stop()
            await close_service(self.service)
        self.call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
