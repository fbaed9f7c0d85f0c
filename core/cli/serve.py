"""``twin serve`` runs the twin; ``twin status`` asks a running one how it is."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import signal
import socket
import ssl
import time
import tracemalloc
import urllib.request
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from core import tls
from core.acme import cert_info
from core.cli import open_service, set_log_level
from core.errors import ConfigError
from core.logfile import log_to_file, use_format
from core.service import STATUS_FILE
from storage.memory import tune_malloc

log = logging.getLogger("twin.serve")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="run the twin until SIGINT/SIGTERM; SIGHUP reloads "
                                      "the TLS certificate and twin.toml")
    p.set_defaults(func=run_serve)
    p = sub.add_parser("status", help="is the twin running and are its listeners healthy?")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_status)


def raise_open_files_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit (#15.9).

    Every connection, SQLite database and shard file is a descriptor; at a
    typical soft limit of 1024 a few hundred clients would make accept() fail
    for everyone. The hard limit is the administrator's ceiling; we stop there.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or (hard != resource.RLIM_INFINITY and soft >= hard):
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:  # e.g. an infinite hard limit above the kernel's
        log.warning("cannot raise the open files limit from %d: %s", soft, exc)
        return
    log.info("open files limit raised from %d to %d", soft, hard)


def run_serve(args: argparse.Namespace) -> int:
    # before any thread starts: a thread that allocates before M_ARENA_MAX is set
    # gets an arena of its own, which the store's threads then share round-robin
    tune_malloc()
    raise_open_files_limit()
    if os.environ.get("TWIN_TRACEMALLOC"):
        trace_memory(Path(os.environ["TWIN_TRACEMALLOC"]))
    service = open_service(args)
    conf = service.config
    if args.log_level is None:  # twin.toml, TWIN_LOG_LEVEL or --set log.level=...
        set_log_level(conf.str("log.level"))
        service.on_log_level = set_log_level  # and again from twin.toml on SIGHUP
    use_format(conf.str("log.format"))
    if conf.str("log.file"):
        path = Path(conf.str("log.file")).expanduser()
        log_to_file(path if path.is_absolute() else service.data_dir / path,
                    max_bytes=conf.int("log.max_bytes"), backups=conf.int("log.backups"),
                    kind=conf.str("log.format"))
    try:
        run_loop(service.config.str("serve.event_loop"), service.serve_forever())
    finally:
        service.close()
    return 0


def trace_memory(directory: Path) -> None:
    """``TWIN_TRACEMALLOC=DIR``: trace every allocation (where it was made, one
    frame) and write a snapshot to DIR on each SIGUSR2.

    Why: a soak (``bench/soak.py``) tells that a twin's memory grows, not
    what holds it; two snapshots an hour apart, compared with
    ``Snapshot.compare_to``, do. Tracing slows the twin by half or more: for
    diagnosis, never on by default."""
    directory.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(1)

    def dump(signum: int, frame: object) -> None:
        path = directory / f"snapshot-{os.getpid()}-{int(time.time())}.tracemalloc"
        tracemalloc.take_snapshot().dump(f"{path}.part")
        os.replace(f"{path}.part", path)  # whole or absent for whoever reads it
        log.info("memory snapshot written to %s", path)

    signal.signal(signal.SIGUSR2, dump)
    log.info("tracing memory allocations (TWIN_TRACEMALLOC): SIGUSR2 writes a snapshot")


def run_loop(kind: str, main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on the configured event loop.

    uvloop by default: the twin's SMTP, IMAP and HTTP listeners spend a large
    share of their CPU in the event loop's socket and callback machinery, which
    libuv does in C. Measured with bench/smtp.py: the twin's CPU per message
    went from about 1.5x a stock-asyncio aiosmtpd sink's to about 1.0x."""
    log.info("event loop: %s", kind)
    if kind == "asyncio":
        asyncio.run(main)
        return
    try:
        import uvloop
    except ImportError as exc:  # e.g. a platform without a uvloop wheel
        main.close()
        raise ConfigError("serve.event_loop is uvloop but uvloop is not installed: "
                          "pip install uvloop, or set serve.event_loop=asyncio") from exc
    uvloop.run(main)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_listener(info: dict[str, Any], data: Path, found: dict[str, Any] | None = None
                    ) -> str | None:
    """None if the listener answers as it should, else what is wrong; the health
    endpoint's storage summary goes into ``found["storage"]``."""
    host = info["host"]
    try:
        with socket.create_connection((host, info["port"]), timeout=3) as sock:
            if info["name"] != "https":
                return None
            ctx = tls.client_context(data)
            ctx.check_hostname = False
            with ctx.wrap_socket(sock, server_hostname=host):
                pass  # the TLS handshake succeeding is the check
    except (OSError, ssl.SSLError) as exc:
        return str(exc)
    if info["name"] == "https":
        ctx = tls.client_context(data)
        ctx.check_hostname = False
        url = f"https://{host}:{info['port']}/twin/v1/health"
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
                answer = json.load(resp)
                if found is not None and isinstance(answer.get("storage"), dict):
                    found["storage"] = answer["storage"]
                if answer.get("ok") is not True:
                    return "health endpoint says not ok"
        except (OSError, ValueError) as exc:
            return f"health endpoint: {exc}"
    return None


def status(data: Path) -> dict[str, Any]:
    path = data / STATUS_FILE
    try:
        state = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {"running": False, "healthy": False, "data_dir": str(data), "listeners": []}
    running = _alive(int(state["pid"]))
    problems = {}
    found: dict[str, Any] = {}
    if running:
        for info in state["listeners"]:
            problem = _check_listener(info, data, found)
            if problem:
                problems[f"{info['name']}:{info['port']}"] = problem
    storage = found.get("storage")
    if storage is not None and not (storage.get("readable") and storage.get("writable")):
        can = "reads only" if storage.get("readable") else "neither reads nor writes"
        problems["storage"] = (f"{storage.get('reachable')} backends reachable, "
                               f"{storage.get('accepting_writes')} accepting writes (reads need "
                               f"{storage.get('k')}, writes {storage.get('write_quorum')}): "
                               f"{can}; down: {', '.join(storage.get('down') or []) or '-'}")
    return {
        "running": running,
        "healthy": running and not problems,
        "storage": storage,
        "pid": state["pid"],
        "name": state["name"],
        "domain": state["domain"],
        "data_dir": str(data),
        "listeners": state["listeners"],
        "problems": problems,
        "phonebook": state.get("phonebook", {}),
        "certificate": _certificate(data, state.get("acme")),
    }


def _certificate(data: Path, acme_state: dict[str, Any] | None) -> dict[str, Any] | None:
    """The certificate the listeners serve (names, expiry, issuer) and, with
    tls.acme, where getting the next one stands."""
    info = cert_info(data)
    if info is None:
        return None
    return {**info.to_json(), "acme": acme_state}


def run_status(args: argparse.Namespace) -> int:
    report = status(Path(args.data).expanduser().resolve())
    if args.json:
        print(json.dumps(report, indent=2))
    elif not report["running"]:
        print(f"twin in {report['data_dir']} is not running")
    else:
        state = "healthy" if report["healthy"] else "UNHEALTHY"
        print(f"twin {report['name']} ({report['domain']}) pid {report['pid']}: {state}")
        for info in report["listeners"]:
            problem = report["problems"].get(f"{info['name']}:{info['port']}")
            print(f"  {info['name']:<12} {info['host']}:{info['port']:<6} tls={info['tls']:<9}"
                  f" {problem if problem else 'ok'}")
        book = report["phonebook"]
        if book.get("published"):
            print(f"  phonebook    {book.get('backend')}: published (id {book.get('twin_id')})")
        elif book:
            print(f"  phonebook    {book.get('backend')}: NOT published yet after "
                  f"{book.get('attempts', 0)} attempt(s): {book.get('error')}")
        if "storage" in report["problems"]:
            print(f"  storage: {report['problems']['storage']}")
        cert = report["certificate"]
        if cert:
            kind = "self-signed" if cert["self_signed"] else f"from {cert['issuer']}"
            print(f"  certificate  {', '.join(cert['names'])}: {kind}, expires "
                  f"{cert['expires'][:10]}")
            acme_state = cert.get("acme")
            if acme_state and acme_state["status"] != "valid":
                print(f"  acme         {acme_state['status']}: {acme_state['detail']}")
    return 0 if report["healthy"] else 1
