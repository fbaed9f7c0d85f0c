"""``twin phonebook list | resolve NAME | publish | repin NAME``."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from typing import Any

from core.cli import open_service
from phonebook.pins import pk_matches


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("phonebook", help="find twins and publish this one")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("list", help="every twin in the phonebook")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a = actions.add_parser("resolve", help="one twin by name, id, key or mail address")
    a.add_argument("name", help="name, twin id, public key or mail address")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    actions.add_parser("publish", help="(re)publish this twin's signed record")
    a = actions.add_parser("repin", help="accept a twin's changed key on its next lookup")
    a.add_argument("name", help="the twin's name")
    p.set_defaults(func=run)


def _shown(record: Any) -> dict[str, Any]:
    """A record as printed; a TFChain twin adds its account and encryption key (pk)."""
    out: dict[str, Any] = record.to_json()
    if record.source == "tfchain":
        pk = record.extra.get("pk")
        out["account_id"] = record.extra.get("account_id")
        out["pk"] = pk.hex() if pk else None
    if "cache_age" in record.extra:  # answered from the on-disk cache
        out["cached"] = (f"{record.extra['cache_age']:.0f} s old"
                         + (" (phonebook unreachable)" if record.extra.get("stale") else ""))
    return out


def _when(epoch: int) -> str:
    """A record's ``valid_until`` as people read dates (0: the record never expires)."""
    if not epoch:
        return "never expires"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _warn(record: Any) -> None:
    if not pk_matches(record):
        print(f"twin: warning: {record.name} publishes pk {record.extra['pk'].hex()}, which is "
              "not the X25519 form of its account key; nothing will be encrypted to it",
              file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    service = open_service(args)
    try:
        if args.action == "list":
            records = service.list_twins()
            if args.json:
                print(json.dumps([r.to_json() for r in records], indent=2))
            elif not records:
                print("the phonebook holds no twins yet (`twin phonebook publish` adds this one)")
            for r in records if not args.json else []:
                print(f"{r.id:>5}  {r.name:<20} {','.join(r.mail_domains):<30} "
                      f"{' '.join(r.endpoints)}")
        elif args.action == "resolve":
            name = args.name
            if "@" in name:
                found = asyncio.run(service.twin_for_address(name))
                if found is None:
                    print(f"no twin serves {name}")
                    return 1
                record = found
            else:
                record = asyncio.run(service.resolve(name))
            _warn(record)
            if args.json:
                print(json.dumps(_shown(record), indent=2))
            else:
                for key, value in _shown(record).items():
                    print(f"{key:<13} {_when(value) if key == 'valid_until' else value}")
        elif args.action == "publish":
            record = service.publish()
            where = f" on TFChain as {record.extra.get('account_id')}" \
                if record.source == "tfchain" else ""
            print(f"published {record.name} (id {record.id}){where} at "
                  f"{', '.join(record.endpoints)}")
        elif args.action == "repin":
            service.phonebook.pins.repin(args.name)
            service.phonebook.invalidate()
            print(f"{args.name}: the next key seen will be pinned")
        return 0
    finally:
        service.close()
