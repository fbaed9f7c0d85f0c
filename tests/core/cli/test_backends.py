"""``twin storage backends list|add|drain|rm`` against a running twin (issue #18).

A twin on its six local backends (one disk) gets two Redis servers (real
redis-servers, one with a password); two local backends are drained while a
client puts and reads through the twin, then removed; afterwards every object
reads back byte-identical with any n-k of the six backends left gone. A drain
cut off half way resumes; removing a backend that holds shares is refused.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis

from core import config as cfg
from core import identity, tls
from core.cli import main
from core.errors import ConfigError
from core.owner import TOKEN_FILE
from core.owner.storage import LOCAL_STORAGE
from storage import open_store
from tests.servers import Server, Servers, _wait_ping, spawn_redis
from tests.twins import TWIN, TwinProcess

KiB = 1024
SEG = 16 * KiB


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    def run(twin: TwinProcess, *argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--data", str(twin.data), "--log-level", "warning", "storage", *argv])
        out, err = capsys.readouterr()
        return code, out, err
    return run


def _client(twin: TwinProcess) -> httpx.Client:
    """The owner's local storage API, as a client program would use it."""
    token = (twin.data / TOKEN_FILE).read_text().strip()
    return httpx.Client(base_url=f"{twin.url}{LOCAL_STORAGE}", timeout=30,
                        verify=tls.local_context(twin.data),
                        headers={"authorization": f"Bearer {token}"})


class Load(threading.Thread):
    """Puts and gets through the running twin until stopped; every get checked."""

    def __init__(self, twin: TwinProcess, known: dict[str, bytes]) -> None:
        super().__init__(daemon=True)
        self.twin, self.known = twin, dict(known)
        self.written: dict[str, bytes] = {}
        self.reads = 0
        self.error: BaseException | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        try:
            with _client(self.twin) as http:
                refs = list(self.known)
                i = 0
                while not self.halt.is_set():
                    data = os.urandom(1 + (i * 7919) % (3 * SEG))
                    resp = http.put("/objects", content=data)
                    resp.raise_for_status()
                    self.written[resp.json()["ref"]] = data
                    ref = refs[i % len(refs)]
                    got = http.get(f"/objects/{ref}")
                    got.raise_for_status()
                    assert got.content == self.known[ref], f"{ref} read back different"
                    self.reads += 1
                    i += 1
        except BaseException as exc:
            self.error = exc


def _put_many(twin: TwinProcess, count: int) -> dict[str, bytes]:
    out = {}
    with _client(twin) as http:
        for i in range(count):
            data = os.urandom(1 + (i * 4099) % (4 * SEG))
            resp = http.put("/objects", content=data)
            resp.raise_for_status()
            out[resp.json()["ref"]] = data
    return out


@pytest.mark.slow  # ~50 s: two twin starts (one with a backend dead) dominate
def test_add_resp_drain_two_local_under_load_then_lose_any_two(
        twins: Callable[..., TwinProcess], cli: Callable[..., tuple[int, str, str]],
        redises: tuple[Servers, list[dict[str, str]]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    servers, specs = redises
    guarded = spawn_redis(tmp_path / "guarded", "--requirepass", "s3cret-pass")
    guarded.admin.close()
    guarded.admin = redis.Redis(port=guarded.port, password="s3cret-pass")
    _wait_ping(guarded.admin, guarded.proc, "redis-server")
    try:
        _run_scenario(twins, cli, specs[0], servers[0], guarded.port, tmp_path, monkeypatch)
    finally:
        guarded.close()
    assert len(servers) == 6


def _run_scenario(twins: Callable[..., TwinProcess], cli: Callable[..., tuple[int, str, str]],
                  r0: dict[str, str], r0_server: Server, guarded_port: int, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> None:
    alice = twins("alice", sets=[f"storage.segment_size={SEG}"])
    objects = _put_many(alice, 60)
    toml = (alice.data / "twin.toml").read_text()

    # add: a Redis, and a Redis with a password read from stdin (never on the command line)
    code, out, err = cli(alice, "backends", "add", "r0", "resp", r0["location"])
    assert code == 0, err
    assert "added r0 (resp" in out and f"server 127.0.0.1:{r0['location'].split(':')[2][:-2]}" \
        in out
    code, _, err = cli(alice, "backends", "add", "r1", "resp",
                       f"redis://127.0.0.1:{guarded_port}/0")
    assert code == 2 and "not reachable" in err and "r1" in err  # no password: refused
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-pass\n"))
    code, out, err = cli(alice, "backends", "add", "r1", "resp",
                         f"redis://127.0.0.1:{guarded_port}/0", "--password")
    assert code == 0, err
    assert "s3cret-pass" not in out
    new_toml = (alice.data / "twin.toml").read_text()
    # the file keeps every line it had but the backends, which now list eight
    old_lines = [line for line in toml.splitlines() if not line.startswith("backends")]
    assert [line for line in new_toml.splitlines() if line in old_lines] == old_lines
    listed = cfg.load(alice.data).list("storage.backends")
    assert [b["name"] for b in listed] == [f"local{i}" for i in range(6)] + ["r0", "r1"]
    assert listed[-1]["password"] == "s3cret-pass"

    # rm of a backend holding shares: refused, with the count
    code, out, _ = cli(alice, "backends", "list")
    held = {line.split()[0]: int(line.split()[3]) for line in out.splitlines()[1:]}
    assert held["local0"] > 0 and held["r0"] == 0
    code, _, err = cli(alice, "backends", "rm", "local0")
    assert code == 2 and f"backend local0 still holds {held['local0']} shares" in err, err

    # drain two local backends while a client puts and reads through the twin
    load = Load(alice, objects)
    load.start()
    try:
        for name in ("local0", "local1"):
            code, out, err = cli(alice, "backends", "drain", name)
            assert code == 0, (out, err)
            assert f"{name} drained: " in out and "shares moved this run" in out
            assert f"drain {name}: " in err and "shares moved" in err  # progress lines
    finally:
        load.halt.set()
        load.join(60)
    assert load.error is None, load.error
    assert load.reads > 0 and load.written
    objects |= load.written
    code, out, _ = cli(alice, "backends", "list")
    held = {line.split()[0]: int(line.split()[3]) for line in out.splitlines()[1:]}
    assert held["local0"] == held["local1"] == 0
    assert held["r0"] > 0 and held["r1"] > 0
    assert "draining" in out.splitlines()[1]

    for name in ("local0", "local1"):
        code, out, err = cli(alice, "backends", "rm", name)
        assert code == 0, err
    names = [b["name"] for b in cfg.load(alice.data).list("storage.backends")]
    assert names == ["local2", "local3", "local4", "local5", "r0", "r1"]
    code, out, err = cli(alice, "backends", "rm", "local2")
    assert code == 2 and "would leave 5 backends" in err, err
    code, out, _ = cli(alice, "status")
    assert "failure domains: 3 (at most 4 backends in one)" in out

    # any two of the six left lost (their shares gone: empty stand-ins), offline
    alice.stop()
    conf = cfg.load(alice.data)
    ident = identity.load(alice.data)
    left = conf.list("storage.backends")
    asyncio.run(_read_all_without_any_two(alice.data, conf, ident, left, objects, tmp_path))

    # and for real: a Redis server stopped, a backend directory deleted, the twin restarted
    r0_server.close()
    shutil.rmtree(alice.data / "shards" / "2")
    alice.start()
    with _client(alice) as http:
        for ref, want in objects.items():
            got = http.get(f"/objects/{ref}")
            assert got.status_code == 200 and got.content == want, ref


async def _read_all_without_any_two(data: Path, conf: cfg.Config, ident: identity.Identity,
                                    left: list[dict[str, str]], objects: dict[str, bytes],
                                    tmp_path: Path) -> None:
    for dead in itertools.combinations(range(len(left)), 2):
        backends = [s if i not in dead else
                    {"name": s["name"], "kind": "local", "location": str(tmp_path / f"gone{i}")}
                    for i, s in enumerate(left)]
        await _read_all(data, conf, ident, backends, objects, dead)


async def _read_all(data: Path, conf: cfg.Config, ident: identity.Identity,
                    backends: list[dict[str, str]], objects: dict[str, bytes],
                    dead: tuple[int, ...]) -> None:
    store = open_store(data, k=conf.int("storage.k"), n=conf.int("storage.n"),
                       segment_size=conf.int("storage.segment_size"), backends=backends,
                       master_key=ident.derive_key("storage"),
                       metadata_key=ident.derive_key("metadata"))
    try:
        for ref, want in objects.items():
            assert await store.read(ref) == want, f"{ref} with backends {dead} gone"
    finally:
        await store.close()


@pytest.mark.slow  # ~15 s: a twin started, 1,536 segments put, then drained twice
def test_interrupted_drain_resumes(twins: Callable[..., TwinProcess],
                                   cli: Callable[..., tuple[int, str, str]],
                                   tmp_path: Path) -> None:
    alice = twins("alice", sets=["storage.segment_size=4096"])
    extra = tmp_path / "extra"
    code, _, err = cli(alice, "backends", "add", "extra", "local", str(extra))
    assert code == 0, err
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(6 * 1024 * 1024))  # 1,536 segments: a drain of seconds
    code, out, err = cli(alice, "put", str(blob))
    assert code == 0, err
    ref = out.strip()
    code, out, _ = cli(alice, "backends", "list")
    held = {line.split()[0]: int(line.split()[3]) for line in out.splitlines()[1:]}
    victim = next(name for name in sorted(held) if held[name])  # one the object is on
    other = next(name for name in sorted(held) if name != victim)
    total = held[victim]

    # SIGINT as a terminal's Ctrl-C delivers it: a job started in the background (CI
    # under nohup, `cmd &`) inherits SIGINT ignored, and Python then keeps it ignored
    proc = subprocess.Popen([*TWIN, "--data", str(alice.data), "storage", "backends",
                             "drain", victim], stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stderr is not None
    for line in proc.stderr:
        if "shares moved" in line and not line.startswith(f"drain {victim}: 0 of"):
            break
    proc.send_signal(signal.SIGINT)  # Ctrl-C: the twin stops the drain where it is
    proc.wait(30)

    def left_on_victim() -> tuple[int, str]:
        _, out, _ = cli(alice, "backends", "list")
        row = next(line for line in out.splitlines() if line.startswith(victim))
        return int(row.split()[3]), row

    left, row = left_on_victim()
    for _ in range(20):  # the twin stops at its next step: wait until nothing moves
        time.sleep(0.5)
        again, row = left_on_victim()
        if again == left:
            break
        left = again
    print(f"drain interrupted with {left} of {total} shares left", file=sys.__stderr__)
    assert 0 < left < total and "draining" in row, (left, total)

    code, out, err = cli(alice, "backends", "drain", victim)
    assert code == 0, (out, err)
    assert f"resuming an interrupted drain, {total - left} of {total} shares moved before" \
        in err
    assert f"{left} shares moved this run" in out or int(out.split(":")[1].split()[0]) <= left
    code, _, err = cli(alice, "backends", "drain", other)
    assert code == 2 and "would leave 5 backends" in err
    assert cli(alice, "get", ref, "-o", str(tmp_path / "back"))[0] == 0
    assert (tmp_path / "back").read_bytes() == blob.read_bytes()
    code, _, err = cli(alice, "backends", "rm", victim)
    assert code == 0, err


def test_twin_toml_edited_in_place_and_config_show_hides_backend_passwords(
        tmp_path: Path) -> None:
    default = cfg.BY_NAME["storage.backends"].default
    path = cfg.write(tmp_path, {"storage.backends": default, "twin.name": "alice"})
    before = path.read_text().replace("# twin configuration.", "# twin configuration (mine).")
    path.write_text(before)  # an owner's own comment survives the edit
    added = {"name": "r0", "kind": "resp", "location": "redis://10.0.0.5:6379/0",
             "password": "s3cret-pass"}
    cfg.set_file_value(tmp_path, "storage.backends", [*default, added])
    after = path.read_text()
    kept = [line for line in before.splitlines() if not line.startswith("backends")]
    assert [line for line in after.splitlines() if line in kept] == kept
    assert cfg.load(tmp_path).list("storage.backends")[-1] == added
    shown = cfg.render_show(cfg.load(tmp_path))
    assert "s3cret-pass" not in shown and 'password = "********"' in shown
    with pytest.raises(ConfigError):
        cfg.set_file_value(tmp_path, "storage.nosuchkey", 1)
    assert path.read_text() == after
