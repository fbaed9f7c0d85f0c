"""``twin init`` and ``twin restore``: make a twin, or rebuild one from its words.

The mnemonic and the owner's app password are shown exactly once and never
stored in clear: the key file holds the derived seed (0600) and the password
only as an Argon2id hash.

``twin restore`` brings back, from the storage backends named in ``--config``
and the keys derived from the words: the store's catalogue (every object),
then the newest ``twin.db`` snapshot (mailboxes, file tree, contacts, grants,
outbox, logins; see core/backup.py). The restored database keeps the old
logins and their app passwords, so mail clients set up before go on working;
since whoever restores may have nothing but the words, the owner also gets a
fresh app password (label ``restore``, replaced by each restore), printed once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from core import config as cfg
from core import identity as ident
from core import progress as prog
from core import tls
from core.cli import overrides
from core.errors import Invalid, NotFound, TwinError, Unavailable
from phonebook.record import NAME_RE

PORT_KEYS = ("http.port", "smtp.port", "smtp.submission_port", "smtp.submissions_port",
             "imap.port", "imap.tls_port")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for command, helptext in (("init", "create a new twin in the data dir"),
                              ("restore", "rebuild a twin from its mnemonic (read from stdin)")):
        p = sub.add_parser(command, help=helptext)
        p.add_argument("--name", required=True, help="the twin's short name (a-z, 0-9, -)")
        p.add_argument("--domain", help="mail domain and TLS name (default NAME.localhost)")
        p.add_argument("--phonebook", metavar="PATH",
                       help="share this local phonebook file (e.g. another twin's "
                            ".twin/phonebook.db)")
        p.add_argument("--port-offset", type=int, default=0,
                       help="add this to every default port (a second twin on one host: 100)")
        p.add_argument("--json", action="store_true",
                       help="print login, address, password (and mnemonic) as JSON")
        if command == "restore":
            p.add_argument("--config", metavar="TOML",
                           help="start from this twin.toml (e.g. a copy of the old one naming "
                                "the storage backends to restore from)")
            p.add_argument("--progress", action="store_true",
                           help="progress on stderr even when it is not a terminal")
        p.set_defaults(func=run_init if command == "init" else run_restore)


def _prepare(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    name = args.name.strip().lower()
    if not NAME_RE.match(name):
        raise Invalid(f"bad twin name {args.name!r}: use a-z, 0-9 and -, at most 63")
    data = Path(args.data).expanduser().resolve()
    if (data / ident.KEY_FILE).exists():
        raise Invalid(f"{data} already holds a twin; choose another --data")
    # Written out, not left to the default: `twin restore --config` of a copy of
    # this file must find the same backends (see _template).
    values: dict[str, Any] = {"storage.backends": copy.deepcopy(
        cfg.BY_NAME["storage.backends"].default)}
    if getattr(args, "config", None):
        values |= _template(Path(args.config).expanduser().resolve(), data)
    values |= {"twin.name": name, "twin.domain": (args.domain or f"{name}.localhost").lower()}
    if args.port_offset:
        for key in PORT_KEYS:
            values[key] = cfg.BY_NAME[key].default + args.port_offset
    if args.phonebook:
        values["phonebook.path"] = str(Path(args.phonebook).expanduser().resolve())
    for key, text in overrides(args).items():  # `twin --set K=V init`: into twin.toml
        if key not in cfg.BY_NAME:
            raise Invalid(f"--set {key}: no such config key (see `twin config doc`)")
        values[key] = cfg.coerce(cfg.BY_NAME[key], text, "--set")
    return data, values


def _template(path: Path, data: Path) -> dict[str, Any]:
    """Settings of an old twin.toml; its local backends stay where they are.

    A relative location (``shards/0``, as init writes it) is the old data
    dir's: taken against the file's own directory, or, for a copy of the file
    kept elsewhere, against the new data dir when the backend is there."""
    values = cfg.load_file_values(path)
    backends = values.get("storage.backends", [])
    for backend in backends:
        location = Path(str(backend.get("location", ""))).expanduser()
        if backend.get("kind") == "local" and not location.is_absolute():
            beside, inside = path.parent / location, data / location
            backend["location"] = str(inside if not beside.is_dir() and inside.is_dir()
                                      else beside)
    return values


def _create(data: Path, values: dict[str, Any], identity: ident.Identity) -> dict[str, Any]:
    from core.service import Service

    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(data, 0o700)
    cfg.write(data, values)
    ident.save(identity, data)
    config = cfg.load(data)
    tls.make_self_signed(data, [config.domain, f"{config.name}.localhost"])
    service = Service(config, identity)
    try:
        login = f"{config.name}@{config.domain}"
        service.users.add(login, role="owner")
        password = service.users.set_password(login)
    finally:
        service.close()
    return {
        "name": config.name,
        "data_dir": str(data),
        "login": login,
        "address": login,
        "password": password,
        "public_key": identity.public_key.hex(),
        "account": identity.ss58_address,
        "twin_id": None,
        "phonebook": (str(config.path("phonebook.path"))
                      if config.str("phonebook.backend") == "local"
                      else f"TFChain {config.str('phonebook.url')}"),
    }


def _publish(data: Path) -> tuple[int | None, str | None]:
    """Publish the new twin: (its id, None) or (None, why not)."""
    from core.service import Service

    service = Service.open(data)
    try:
        return service.publish().id, None
    except TwinError as exc:
        return None, str(exc)
    finally:
        service.close()


def _show(data: Path, result: dict[str, Any], as_json: bool, mnemonic: str | None) -> None:
    """Print the result; publish first only when that needs no network.

    A twin on TFChain is printed (words, password) before anything is sent to
    the chain: a chain down or an account without funds must not lose them.
    The twin is complete either way; `twin serve` publishes in the background.
    """
    if cfg.load(data).str("phonebook.backend") == "local":
        result["twin_id"], error = _publish(data)
        if error:
            raise Invalid(f"twin created in {data}, but publishing failed: {error}")
        _print(result, as_json, mnemonic)
        return
    _print(result, as_json, mnemonic)
    sys.stdout.flush()
    twin_id, error = _publish(data)
    out = sys.stderr if as_json else sys.stdout
    if error is None:
        print(f"published on TFChain: twin id {twin_id}", file=out)
    else:
        print(f"not published on TFChain yet: {error}\n`twin serve` keeps trying in the "
              f"background (or run `twin phonebook publish`); the account is "
              f"{result['account']}", file=out)


def _print(result: dict[str, Any], as_json: bool, mnemonic: str | None) -> None:
    if as_json:
        if mnemonic:
            result = {**result, "mnemonic": mnemonic}
        print(json.dumps(result, indent=2))
        return
    print(f"twin {result['name']} created in {result['data_dir']}")
    print(f"  public key   {result['public_key']}")
    print(f"  account      {result['account']} (TFChain, SS58 42)")
    print(f"  phonebook    {result['phonebook']}"
          + (f" (id {result['twin_id']})" if result["twin_id"] is not None else ""))
    if mnemonic:
        print("\nYour mnemonic. Write it down now; it is shown only this once and, with your")
        print("storage backends, is all you need to rebuild this twin:\n")
        print(f"    {mnemonic}\n")
    print(f"Mail and files login:  {result['login']}")
    print(f"App password:          {result['password']}   (shown once)")
    print("\nStart it with:  twin --data " + result["data_dir"] + " serve")


def run_init(args: argparse.Namespace) -> int:
    data, values = _prepare(args)
    mnemonic = ident.new_mnemonic()
    result = _create(data, values, ident.Identity.from_mnemonic(mnemonic))
    _show(data, result, args.json, mnemonic)
    return 0


def run_restore(args: argparse.Namespace) -> int:
    """Rebuild a twin; with nothing to restore, exit 1 and leave no twin behind.

    What was in the data dir before (the surviving backends) is never touched
    by the clean-up; everything restore created is removed again."""
    data, values = _prepare(args)
    _check_backends(values)
    if sys.stdin.isatty():
        print("mnemonic: ", end="", file=sys.stderr, flush=True)
    identity = ident.Identity.from_mnemonic(sys.stdin.readline())
    existed = data.exists()
    before = set(os.listdir(data)) if existed else set()
    try:
        result = _create(data, values, identity)
        steps = prog.Progress("restore", forced=args.progress)
        restored, db_restored = _restore_storage(data, steps)
        if not restored:
            raise Unavailable("nothing to restore: the backends hold no backup of this "
                              "twin's catalogue (wrong words, or the wrong backends?); "
                              "no twin was created")
    except BaseException:
        _undo(data, existed, before)
        raise
    result["restored_objects"] = restored
    result["restored_metadata"] = db_restored
    result["restored"] = _counts(data) if db_restored else {}
    result["seconds"] = round(steps.seconds, 3)
    if db_restored:
        result["password"] = _fresh_owner_password(data, identity)
    _show(data, result, args.json, None)
    if not args.json:
        print(f"Restored the catalogue: {restored} objects are readable again "
              f"(in {result['seconds']:.1f} s).")
        if db_restored:
            print("Restored twin.db (old app passwords still work): " + ", ".join(
                f"{n} {what}" for what, n in result["restored"].items()) + ".")
        else:
            print("No twin.db backup found: objects are back, but not which are mail or files.")
    return 0


def _check_backends(values: dict[str, Any]) -> None:
    """Refuse before creating anything when fewer than k local backends exist at all."""
    backends = values.get("storage.backends") or []
    k = int(values.get("storage.k", cfg.BY_NAME["storage.k"].default))
    local = [b for b in backends if b.get("kind") == "local"]
    present = [b for b in local if Path(str(b["location"])).is_dir()]
    if len(backends) - len(local) + len(present) < k:
        missing = ", ".join(str(b["location"]) for b in local if b not in present)
        raise NotFound(f"nothing to restore: {len(present)} of the {len(backends)} backends "
                       f"exist ({k} needed); missing: {missing}. Name the old backends with "
                       "--config OLD/twin.toml")


def _undo(data: Path, existed: bool, before: set[str]) -> None:
    if not existed:
        shutil.rmtree(data, ignore_errors=True)
        return
    for name in set(os.listdir(data)) - before:
        target = data / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)


def _counts(data: Path) -> dict[str, int]:
    """What the restored twin.db holds, for the summary."""
    import sqlite3

    from core.service import DB_FILE

    queries = {
        "messages": "SELECT count(*) FROM mail_messages",
        "mailboxes": "SELECT count(*) FROM mail_mailboxes",
        "files": "SELECT count(*) FROM file_nodes WHERE NOT is_dir",
        "contacts": "SELECT count(*) FROM contacts",
        "grants": "SELECT count(*) FROM grants",
    }
    out: dict[str, int] = {}
    with contextlib.closing(sqlite3.connect(data / DB_FILE)) as conn:
        for what, sql in queries.items():
            try:
                out[what] = int(conn.execute(sql).fetchone()[0])
            except sqlite3.Error:  # a part this twin never used
                out[what] = 0
    return out


def _fresh_owner_password(data: Path, identity: ident.Identity) -> str:
    """The restored twin.db has the old logins; give the owner a new app password too."""
    from core.errors import Conflict
    from core.service import Service

    service = Service(cfg.load(data), identity)
    try:
        login = f"{service.config.name}@{service.config.domain}"
        with contextlib.suppress(Conflict):  # restored under another name: a new owner
            service.users.add(login)
        service.users.make_owner(login)
        return str(service.users.set_password(login, label="restore"))
    finally:
        service.close()


def _restore_storage(data: Path, steps: prog.Progress) -> tuple[int | None, bool]:
    """The catalogue from the backends, then twin.db from the store: (objects, db back?)."""
    import storage
    from core import backup
    from core.service import DB_FILE

    config = cfg.load(data)
    identity = ident.load(data)

    async def restore() -> tuple[int | None, bool]:
        try:
            store = await storage.Store.restore(
                data,
                k=config.int("storage.k"),
                n=config.int("storage.n"),
                segment_size=config.int("storage.segment_size"),
                backends=config.list("storage.backends"),
                master_key=identity.derive_key("storage"),
                metadata_key=identity.derive_key("metadata"),
            )
        except storage.StorageError as exc:
            print(f"twin: no objects restored: {exc}", file=sys.stderr)
            return None, False
        try:
            ref = await backup.restore_db(store, data / DB_FILE)
            return len(await store.list()), ref is not None
        finally:
            await store.close()

    return asyncio.run(prog.heartbeat(steps, restore(), "reading the backends' shares back"))
