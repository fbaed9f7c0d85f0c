"""``twin config show | doc``: the effective settings and the schema."""

from __future__ import annotations

import argparse
from pathlib import Path

from core import config as cfg
from core.cli import overrides


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("config", help="show the effective configuration or document every key",
                       description=cfg.render_doc(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("show", "doc"), nargs="?", default="show",
                   help="show: the values in force and where each comes from; doc: every key")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "doc":
        print(cfg.render_doc(), end="")
    else:
        print(cfg.render_show(cfg.load(Path(args.data), overrides(args))), end="")
    return 0
