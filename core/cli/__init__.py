"""The ``twin`` command.

Each command group lives in its own module with ``register(subparsers)``; the
handlers get the parsed arguments and return an exit code. Errors that core
raises on purpose (``TwinError``) become one clear line on stderr and exit
code 2; anything else is a bug and shows its traceback.

A command that works on a stopped twin's dispersed store opens it with
``async with service.opened_store():`` (``core.service``); with a running
twin it asks that twin, which holds the store's lock.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from core import config as cfg
from core import logsafe
from core.errors import Invalid, TwinError

if TYPE_CHECKING:
    from core.service import Service

GROUPS = ("init", "serve", "config", "phonebook", "storage", "mail", "peer", "domain",
          "service")
DEFAULT_DATA = ".twin"


def default_data_dir() -> str:
    return os.environ.get("TWIN_DATA", DEFAULT_DATA)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    return dict(cfg.parse_assignments(getattr(args, "set", None) or []))


def binary_stdout() -> BinaryIO:
    """stdout for a file's bytes, refused when it is a terminal: binary data
    there garbles the terminal and is never what was meant (curl does the same)."""
    if sys.stdout.isatty():
        raise Invalid("refusing to write the file's bytes to a terminal: "
                      "use -o FILE, or redirect stdout")
    return sys.stdout.buffer


def open_service(args: argparse.Namespace) -> Service:
    from core.service import Service

    return Service.open(Path(args.data), overrides(args))


def setup_logging(level: str) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        stream=sys.stderr)
    logsafe.install()  # one record, one line: nothing from outside forges a log line
    set_log_level(level)


def set_log_level(level: str) -> None:
    """The root level; libraries that chat at INFO are held at WARNING or above."""
    logging.root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for noisy in ("httpx", "httpcore", "mail.log", "uvicorn.error", "wsgidav"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.root.level))


GLOBAL_OPTIONS = ("--data", "--set", "--log-level")


def hoist_global_options(argv: Sequence[str]) -> list[str]:
    """Move ``--data``, ``--set`` and ``--log-level`` written after the command
    (``twin status --data /srv/twin``) in front of it, where argparse wants them.

    Users type the global options wherever they remember them; argparse only
    accepts them before the subcommand. Nothing after a ``--`` is touched.
    """
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_OPTIONS and "=" in arg:
            front.append(arg)
        elif name in GLOBAL_OPTIONS and i + 1 < len(argv):
            front.extend(argv[i:i + 2])
            i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


def version() -> str:
    try:
        return importlib.metadata.version("twin")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="twin",
        description="A personal Digital Twin: identity, mail and files, twin-to-twin.")
    p.add_argument("--version", action="version", version=f"twin {version()}")
    p.add_argument("--data", default=default_data_dir(),
                   help="the twin's data dir (default: $TWIN_DATA or ./.twin)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key for this run (see `twin config doc`)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   help="overrides the log.level config key (default: info)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        importlib.import_module(f"core.cli.{group}").register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(hoist_global_options(sys.argv[1:] if argv is None else argv))
    # A command's output is what it prints; its INFO log lines ("pinned key of
    # twin …") would interleave with it on a terminal. Only `serve` logs at
    # info by default (from log.level); other commands say warnings and errors.
    quiet = "info" if args.command == "serve" else "warning"
    setup_logging(args.log_level or os.environ.get("TWIN_LOG_LEVEL", quiet))
    try:
        return int(args.func(args))
    except TwinError as exc:
        print(f"twin: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
