"""The composition root: one twin, assembled from its parts and run.

``Service.open(data_dir)`` loads config, identity, the metadata database, the
logins and the phonebook; ``start()`` opens the dispersed store, publishes the
twin's own phonebook record and starts the listeners; ``stop()`` undoes that in
reverse order. CLI commands use ``open`` alone; ``twin serve`` uses all three.

The dispersed store is opened one way: ``attach_store()`` opens it and gives it
to the parts (``service.store``, which the file tree and the outbound queue
read, and ``service.mail``), ``release_store()`` closes it; ``start``/``stop`` call
them, and a CLI command that works on a stopped twin's store uses
``async with service.opened_store():``.

Protocol listeners are found through the ``twin.listeners`` entry point group
(each names ``async def start(service) -> Listener``), so dependencies still
point one way: protocols import core, core imports no protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import ssl
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

from starlette.routing import BaseRoute

import phonebook as pb
import storage
from core import acme, backup, net, owner, tls
from core import config as cfg
from core import identity as ident
from core.acl import OWNER, Access, Principal
from core.budget import ByteBudget
from core.contacts import Contacts
from core.db import Database
from core.errors import ConfigError, Conflict, NotFound, TwinError, Unavailable
from core.files import FileTree
from core.foreign import phonebook_error
from core.mail import MailStore
from core.outbound import OutboundQueue
from core.owner import OwnerToken
from core.peer import Peer, PeerSettings
from core.peer import api as peer_api
from core.peer.kinds import KindOwner
from core.peer.serve import ContentServer
from core.peer.shares import SharedWithMe
from core.peer.uploads import Uploads
from core.peer.writes import SharedWrites
from core.routing import MailRouter
from core.spam import Spam
from core.users import Users
from phonebook.pins import GuardedPhonebook, PinStore
from phonebook.record import TwinRecord

log = logging.getLogger("twin.service")
T = TypeVar("T")
RUN_DIR = "run"
STATUS_FILE = "run/status.json"
LOCK_FILE = "run/twin.lock"
DB_FILE = "twin.db"
JOURNAL_DIR = "mail-journal"  # accepted mail not filed yet (core.mail.journal)
SHUTDOWN_BACKUP = 6  # seconds the backup at stop may take: a stop must stay bounded
SHUTDOWN_KEEP_INDEXES = 5  # seconds keeping large mailboxes' indexes at stop may take
COMPACT_INTERVAL = 10.0  # seconds between looks at the shard files' dead bytes
TRIM_INTERVAL = 60.0  # seconds between giving freed heap pages back (Store.trim_loop)


def store_in_use_message(exc: storage.StoreInUse) -> str:
    """What a CLI user reads when ``twin serve`` (or another command) holds the store."""
    who = f"pid {exc.pid}" if exc.pid is not None else "another process"
    return (f"the twin's storage is in use by {who} (is `twin serve` running?): stop it "
            f"first, or let the running twin do the work (`twin share` uploads through "
            f"it); {exc.path} is locked")


class Service:
    def __init__(self, config: cfg.Config, identity: ident.Identity) -> None:
        self.config = config
        self.data_dir = config.data_dir
        self.identity = identity
        self.db = Database(self.data_dir / DB_FILE)
        self.users = Users(self.db)  # logins, throttled (``users.login``)
        self.phonebook = self._open_phonebook()
        self.listeners: list[net.Listener] = []
        self.started_at = 0.0
        # Where publishing stands (`twin status` shows it): see _publish_until_done.
        self.publish_state: dict[str, Any] = {"published": False, "twin_id": None,
                                              "error": "not tried yet", "attempts": 0}
        self._lock_fd: int | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.store: storage.Store | None = None  # between attach_store and release_store
        self.acme: acme.CertManager | None = None  # with tls.acme, once started
        self.overrides: dict[str, Any] = {}  # --set values, applied again on reload
        self.on_log_level: Callable[[str], None] | None = None  # set by `serve` (see reload)
        self.owner_token = OwnerToken()  # the owner's CLI into the running twin (core.owner)
        # Parts, in dependency order, each handed the collaborators it uses. Each
        # keeps its tables in twin.db; the dispersed store opens only in start(),
        # so parts reach it through ``need_store`` or, mail, are handed it by
        # attach_store.
        self.mail = MailStore(self.db, quota_bytes=config.int("mail.quota"),
                              vanished_keep=config.int("mail.vanished_keep"))
        self.contacts = Contacts(self.db)
        self.access = Access(self.db, self.contacts)  # every access check goes through it
        self.files = FileTree(self.db, lambda: self.store, quota=config.int("webdav.quota"),
                              data_dir=self.data_dir,
                              redundancy=config.int("storage.n") / config.int("storage.k"))
        self.peer = Peer(name=self.phonebook_name, identity=identity, db=self.db,
                         data_dir=self.data_dir, settings=PeerSettings.from_config(config),
                         resolve=self.resolve, forget=self.phonebook.invalidate)
        self.shared_with_me = SharedWithMe(self.db)  # share.notify received
        self.shared_writes = SharedWrites(  # content.put|delete|mkdir|move received
            self.files, self.access,
            Uploads(self.data_dir, config.int("peer.max_upload")), config.int("peer.max_put"))
        self.outbound = OutboundQueue(config=config, db=self.db, store=self.need_store,
                                      users=self.users, mail=self.mail)  # legacy SMTP
        self.router = MailRouter(config=config, db=self.db, users=self.users, mail=self.mail,
                                 outbound=self.outbound, peer=self.peer,
                                 find_twin=self.twin_for_address)
        self.spam = Spam(config, self.db, self.mail)  # inbound filter; learns from Junk moves
        # Every envelope kind's owner installs its handlers here, in one place
        # (core.peer.kinds lists each kind and its owner).
        owners: list[KindOwner] = [ContentServer(self.access, self.files), self.shared_with_me,
                                   self.shared_writes, self.router]
        for part in owners:
            part.install(self.peer)

    @classmethod
    def open(cls, data_dir: Path, overrides: dict[str, Any] | None = None) -> Service:
        data_dir = Path(data_dir).expanduser().resolve()
        if not data_dir.is_dir():
            raise NotFound(
                f"data dir {data_dir} does not exist (run `twin --data {data_dir} init`)")
        config = cfg.load(data_dir, overrides)
        service = cls(config, ident.load(data_dir))
        service.overrides = dict(overrides or {})
        return service

    def _open_phonebook(self) -> GuardedPhonebook:
        conf = self.config
        backend = conf.str("phonebook.backend")
        options: dict[str, Any]
        if backend == "local":
            options = {"path": conf.path("phonebook.path")}
        else:
            options = {"url": conf.str("phonebook.url"), "identity_seed": self.identity.seed,
                       "cache_ttl": conf.int("phonebook.cache_ttl"),
                       "port": conf.int("phonebook.tfchain_port"),
                       "timeout": conf.float("phonebook.tfchain_timeout"),
                       "connect_timeout": conf.float("phonebook.tfchain_connect_timeout"),
                       "submit_timeout": conf.float("phonebook.tfchain_submit_timeout"),
                       "retry_after": conf.float("phonebook.tfchain_retry_after"),
                       "terms_link": conf.str("phonebook.terms_link"),
                       "terms_hash": conf.str("phonebook.terms_hash")}
        inner = pb.load(backend, **options)
        pins = PinStore(self.data_dir / "pins.db")
        return GuardedPhonebook(inner, pins, ttl=conf.int("phonebook.cache_ttl"),
                                fresh_from_cache=backend != "local")

    # -- phonebook, in core's terms, off the event loop

    async def resolve(self, name_or_id: str | int) -> TwinRecord:
        try:
            return await asyncio.to_thread(self.phonebook.resolve, name_or_id)
        except pb.PhonebookError as exc:
            raise phonebook_error(exc) from exc

    async def twin_for_address(self, address: str, *,
                               wait: float | None = None) -> TwinRecord | None:
        """The twin serving ``address``'s domain, or None (the legacy world).

        ``wait`` bounds the time spent on the backend (mail routing passes
        ``phonebook.mail_wait``: an SMTP reply never waits on a slow chain);
        past it the cached answer is used whatever its age, else Unavailable.
        """
        try:
            lookup = asyncio.to_thread(self.phonebook.by_address, address)
            if wait is None:
                return await lookup
            try:
                return await asyncio.wait_for(lookup, wait)
            except TimeoutError:
                log.warning("phonebook did not answer within %.1f s for %s; using the cache",
                            wait, address)
                return await asyncio.to_thread(self.phonebook.cached, address, address=True)
        except pb.PhonebookError as exc:
            raise phonebook_error(exc) from exc

    def list_twins(self) -> list[TwinRecord]:
        try:
            return self.phonebook.list()
        except pb.PhonebookError as exc:
            raise phonebook_error(exc) from exc

    def principal(self, login: str) -> Principal:
        """Who a logged-in login is to ``Access``: the owner, or ``Principal.local``.

        The owner's login is the one ``twin init`` (or a restore) made, role
        ``owner`` in twin.db; every other login (``twin mail users add``) is a
        plain user: its own mail, and on the owner's files only what
        ``user:LOGIN`` grants give it.
        """
        return OWNER if self.users.is_owner(login) else Principal.local(login)

    @property
    def phonebook_name(self) -> str:
        """This twin's name as other twins find it: on TFChain, the relay domain."""
        if self.config.str("phonebook.backend") == "tfchain":
            return self.config.domain
        return self.config.name

    def public_url(self, http_port: int | None = None) -> str:
        url = self.config.str("http.public_url")
        if url:
            return url.rstrip("/")
        port = http_port if http_port is not None else self.config.int("http.port")
        return f"https://{self.config.str('listen.host')}:{port}"

    def own_record(self, http_port: int | None = None) -> TwinRecord:
        conf = self.config
        return TwinRecord(
            name=conf.name,
            public_key=self.identity.public_key,
            endpoints=(self.public_url(http_port),),
            mail_domains=(conf.domain,),
            valid_until=int(time.time()) + conf.int("phonebook.record_ttl"),
            seq=time.time_ns() // 1000,
        ).signed_by(self.identity.signing_key)

    def publish(self, http_port: int | None = None) -> TwinRecord:
        try:
            return self.phonebook.publish(self.own_record(http_port))
        except pb.PhonebookError as exc:
            raise phonebook_error(exc) from exc

    # -- parts

    def routes(self) -> list[BaseRoute]:
        """The HTTPS listener's /twin/v1/ routes: the peer API, then the owner's."""
        budget = ByteBudget(self.config.int("peer.max_buffered"),
                            self.config.int("peer.max_buffered_per_ip"))
        return [*peer_api.routes(self.peer, budget), *owner.routes(self)]

    def open_store(self) -> storage.Store:
        """The dispersed store, opened as twin.toml says (blocking: call it in a thread).

        ``attach_store`` is what opens it for the service's parts."""
        conf = self.config
        try:
            return storage.open_store(
                self.data_dir,
                k=conf.int("storage.k"),
                n=conf.int("storage.n"),
                segment_size=conf.int("storage.segment_size"),
                backends=conf.list("storage.backends"),
                master_key=self.identity.derive_key("storage"),
                metadata_key=self.identity.derive_key("metadata"),
                policy=storage.CompactPolicy(slack=conf.float("storage.compact_slack"),
                                             age=conf.int("storage.compact_age")),
            )
        except storage.StoreInUse as exc:
            raise Unavailable(store_in_use_message(exc)) from exc

    async def attach_store(self) -> storage.Store:
        """Open the dispersed store and hand it to the parts that use it.

        ``service.store`` (read by the file tree and the outbound queue) and
        the mail store's; ``release_store`` closes it. ``start`` and ``stop``
        call these two; ``opened_store`` pairs them for a CLI command."""
        store = await asyncio.to_thread(self.open_store)
        self.store = store
        self.mail.attach(store)
        return store

    def need_store(self) -> storage.Store:
        """The open store, or ``Unavailable`` outside ``attach_store``/``release_store``."""
        if self.store is None:
            raise Unavailable("the dispersed store is not open")
        return self.store

    async def release_store(self) -> None:
        """Close the store ``attach_store`` opened (nothing when it is not open)."""
        if self.store is not None:
            await self.store.close()
            self.store = None

    @contextlib.asynccontextmanager
    async def opened_store(self) -> AsyncIterator[storage.Store]:
        """``attach_store`` for the length of an ``async with``, then ``release_store``."""
        store = await self.attach_store()
        try:
            yield store
        finally:
            await self.release_store()

    # -- lifecycle

    def _take_lock(self) -> None:
        run = self.data_dir / RUN_DIR
        run.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Conflict(f"another twin is already running on {self.data_dir}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    async def start(self) -> None:
        from core.http import HttpListener  # uvicorn: loaded by `serve`, not by every CLI command

        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=8, thread_name_prefix="twin"))
        self._take_lock()
        try:
            store = await self.attach_store()
            try:
                await store.check_backends()  # what can never work is refused now
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
            store.monitor.listeners.append(self._storage_health_changed)
            self.spawn(store.monitor.refresh_loop(), "storage-health")
            self.spawn(store.maintain(self.config.int("storage.scrub_interval")),
                       "storage-maintain")
            await self.mail.start_intake(self.data_dir / JOURNAL_DIR,
                                         self.identity.derive_key("journal"),
                                         self.config.int("mail.journal_backlog"))
            if self.config.bool("mail.warm_indexes"):  # those kept at the last stop
                self.spawn(self.mail.warm_indexes(), "warm-indexes")
            interval = self.config.int("storage.backup_interval")
            if interval:  # twin.db and the catalogue, into the dispersed store
                self.spawn(backup.backup_loop(self.db, store, interval), "backup")
            # dead shard bytes back, by ratio and age, also on a twin too small to rotate
            self.spawn(store.compact_loop(COMPACT_INTERVAL), "storage-compaction")
            self.spawn(store.trim_loop(TRIM_INTERVAL), "memory-trim")
            # objects a crash left listed as garbage (core.reclaim)
            self.spawn(self.files.sweep(), "files-sweep")
            self.spawn(self.mail.garbage.sweep(), "mail-sweep")
            self.spawn(self.outbound.run(), "outbound-queue")
            self.owner_token.issue(self.data_dir)  # before the listener takes requests
            self.spawn(self.peer.run_outbox(), "peer-outbox")
            if self.config.bool("tls.acme"):
                acme.finish_write(self.data_dir)  # before any listener loads the pair
            http = HttpListener(self)
            self.listeners.append(http)
            for ep in entry_points(group="twin.listeners"):
                self.listeners.append(await ep.load()(self))
            await http.start()
            if self.config.bool("tls.acme"):
                await self._start_acme(http.port)
            if self.config.str("phonebook.backend") == "tfchain":
                # A chain that is down or an account not funded yet must not keep
                # the twin from serving: publish in the background, with retries.
                self.spawn(self._publish_until_done(http.port), "publish")
            else:
                record = await asyncio.to_thread(self.publish, http.port)
                self._published(record)
        except BaseException:
            await self.stop()
            raise
        self.started_at = time.time()
        for listener in self.listeners:
            for info in listener.info:
                log.info("listening: %s on %s:%d (tls: %s)", info.name, info.host, info.port,
                         info.tls)
        self._write_status()

    async def _start_acme(self, https_port: int) -> None:
        """The HTTP-01 listener and the certificate manager (``core.acme``)."""
        conf = self.config
        responder = acme.Http01Responder(conf.str("listen.host"), conf.int("http.acme_port"),
                                         https_port)
        await responder.start()
        self.listeners.append(responder)
        self.acme = acme.CertManager(
            self.data_dir, [str(n) for n in conf.list("tls.acme_names")] or [conf.domain],
            directory=conf.str("tls.acme_directory"), email=conf.str("tls.acme_email"),
            ca_bundle=conf.str("tls.acme_ca_bundle"),
            renew_days=conf.int("tls.acme_renew_days"), responder=responder)
        self.acme.on_change.append(self._acme_changed)
        self.spawn(self.acme.run(), "acme")

    def _acme_changed(self) -> None:
        if self.started_at:  # before that, start() writes the status file itself
            self._write_status()

    def _published(self, record: TwinRecord) -> None:
        log.info("published %s (id %d) with endpoint %s", record.name, record.id,
                 record.endpoints[0] if record.endpoints else "-")
        self.publish_state = {"published": True, "twin_id": record.id, "at": time.time(),
                              "error": None, "attempts": self.publish_state["attempts"] + 1}

    async def _publish_until_done(self, http_port: int) -> None:
        """Publish on the phonebook, retrying (doubling waits) until it works once."""
        delay = first = self.config.float("phonebook.publish_retry")
        while True:
            try:
                record = await asyncio.to_thread(self.publish, http_port)
            except TwinError as exc:
                self.publish_state = {
                    "published": False, "twin_id": None, "error": str(exc),
                    "attempts": self.publish_state["attempts"] + 1,
                    "next_try": time.time() + delay}
                log.warning("not published yet (attempt %d, next in %.0f s): %s",
                            self.publish_state["attempts"], delay, exc)
                if self.started_at:
                    self._write_status()
                await asyncio.sleep(delay)
                delay = min(delay * 2, first * 10)
                continue
            self._published(record)
            if self.started_at:
                self._write_status()
            return

    def _storage_health_changed(self) -> None:
        intake = self.mail.intake
        if intake is not None:
            intake.retry_now()

    def listener_info(self) -> list[net.ListenerInfo]:
        return [info for listener in self.listeners for info in listener.info]

    def _write_status(self) -> None:
        status = {
            "pid": os.getpid(),
            "name": self.config.name,
            "domain": self.config.domain,
            "started_at": self.started_at,
            "listeners": [i.to_json() for i in self.listener_info()],
            "phonebook": {"backend": self.config.str("phonebook.backend"),
                          **self.publish_state},
            "acme": self.acme.state.to_json() if self.acme is not None else None,
        }
        path = self.data_dir / STATUS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=2))
        os.replace(tmp, path)

    def reload(self) -> None:
        """SIGHUP: load the TLS certificate again and re-read twin.toml, dropping nothing.

        New TLS handshakes use the new certificate (``core.tls.reload``); open
        connections keep theirs. Of twin.toml, only what can change under
        running listeners is applied: ``log.level`` (unless ``--log-level``
        was given). Other changed keys are named in the log as needing a
        restart, and a file that does not load is reported and ignored."""
        try:
            tls.reload(self.data_dir)
        except (OSError, ssl.SSLError) as exc:
            log.error("SIGHUP: the TLS certificate was not reloaded (%s); the old one stays "
                      "in use", exc)
        try:
            fresh = cfg.load(self.data_dir, self.overrides)
        except TwinError as exc:
            log.error("SIGHUP: twin.toml not reloaded: %s", exc)
            return
        changed = sorted(k for k, v in fresh.values.items() if self.config.values.get(k) != v)
        if "log.level" in changed and self.on_log_level is not None:
            self.on_log_level(fresh.str("log.level"))
            self.config.values["log.level"] = fresh.values["log.level"]
            changed.remove("log.level")
            log.warning("SIGHUP: log level is now %s", fresh.str("log.level"))
        if changed:
            log.warning("SIGHUP: changed in twin.toml, applied at the next restart: %s",
                        ", ".join(changed))
        log.info("SIGHUP: reloaded")

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        """Run a background job for the life of the service; cancelled on stop."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.append(task)
        return task

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.peer.stop()
        for listener in reversed(self.listeners):
            try:
                await listener.stop()
            except Exception:
                log.exception("error while stopping a listener")
        self.listeners.clear()
        await self.spam.close()
        await self.mail.stop_intake()  # files what the listeners accepted
        try:
            await asyncio.wait_for(self.mail.keep_indexes(), SHUTDOWN_KEEP_INDEXES)
        except TimeoutError:
            log.warning("keeping mailbox indexes at shutdown took over %d s: skipped "
                        "(the next start loads them from their rows)", SHUTDOWN_KEEP_INDEXES)
        if self.store is not None:
            try:  # leave a fresh twin.db + catalogue backup behind on a clean stop
                await asyncio.wait_for(backup.backup_all(self.db, self.store),
                                       SHUTDOWN_BACKUP)
            except TimeoutError:
                log.warning("backup at shutdown took over %d s: skipped (the last scheduled "
                            "backup stands; the journal and twin.db hold the rest)",
                            SHUTDOWN_BACKUP)
            except Exception as exc:
                log.warning("backup at shutdown failed: %s", exc)
        await self.release_store()
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / STATUS_FILE).unlink()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def close(self) -> None:
        self.peer.close()
        self.phonebook.close()
        self.mail.shutdown()
        self.db.close()

    async def serve_forever(self) -> None:
        """Start, wait for SIGINT/SIGTERM, stop gracefully; SIGHUP reloads (``reload``)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        await self.start()
        log.info("twin %s is up: log in as %s@%s with the app password `twin init` printed "
                 "(a new one: `twin mail passwd`)", self.config.name, self.config.name,
                 self.config.domain)
        try:
            await stop.wait()
        finally:
            log.info("shutting down")
            await self.stop()
            log.info("stopped")
