"""``twin dns`` (the records the mail domain needs) and ``twin doctor`` (are
they published, and does the twin answer where they point)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

from core import doctor, zone
from core.cli import open_service

# listener names in run/status.json, for the config key of each port
LIVE_PORTS = {"smtp.port": "smtp", "imap.tls_port": "imaps", "http.port": "https"}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("dns", help="the DNS records the twin's mail domain needs")
    p.add_argument("--json", action="store_true", help="one JSON list of records")
    p.set_defaults(func=show)
    p = sub.add_parser("doctor", help="check the domain's DNS and the twin's listeners")
    p.add_argument("--nameserver", metavar="HOST[:PORT]",
                   help="ask this DNS server (default: the system's resolver)")
    p.add_argument("--json", action="store_true", help="one JSON list of checks")
    p.set_defaults(func=check)


def _records(args: argparse.Namespace) -> tuple[Any, list[zone.Record]]:
    service = open_service(args)
    try:
        return service.config, zone.plan(service.config, service.outbound.dkim)
    finally:
        service.close()


def show(args: argparse.Namespace) -> int:
    config, records = _records(args)
    if args.json:
        print(json.dumps([r.to_json() for r in records], indent=2))
        return 0
    print(f"; DNS records for {config.domain}: publish them at your DNS provider,")
    print("; then run `twin doctor` to check. The domain's A/AAAA record must point at")
    print("; this twin (not listed: only you know the address).")
    for required in (True, False):
        print("\n; required for mail" if required else "\n; recommended")
        for r in (r for r in records if r.required is required):
            print(f"; {r.why}\n{r.zone_line()}")
    return 0


def _ports(config: Any, data: Path) -> dict[str, int]:
    """The ports clients are sent to: the running twin's real ones, else the config's."""
    ports = {key: config.int(key) for key in LIVE_PORTS}
    try:
        state = json.loads((data / "run" / "status.json").read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return ports
    live = {i["name"]: int(i["port"]) for i in state["listeners"]}
    return {key: live.get(name, ports[key]) for key, name in LIVE_PORTS.items()}


def check(args: argparse.Namespace) -> int:
    config, records = _records(args)
    resolver = doctor.resolver(args.nameserver)

    async def run() -> list[doctor.Finding]:
        found = list(await asyncio.gather(*(doctor.check_record(resolver, r) for r in records)))
        return found + await doctor.check_listeners(resolver, config.domain,
                                                    _ports(config, config.data_dir))

    findings = asyncio.run(run())
    if args.json:
        print(json.dumps([f.to_json() for f in findings], indent=2))
    else:
        marks = {"ok": "✓", "missing": "✗", "wrong": "✗", "unreachable": "?"}
        for f in findings:
            note = "" if f.required or f.ok else " (recommended)"
            print(f"{marks[f.status]} {f.what}: {f.status}{note}: {f.detail}")
    failed = [f for f in findings if f.required and not f.ok]
    if not args.json:
        print(f"\n{len(findings) - len(failed)} of {len(findings)} checks pass" +
              (f"; {len(failed)} required ones do not" if failed else ""))
    return 1 if failed else 0
