"""`twin serve` and `twin status` as a user runs them: real processes, real sockets."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.twins import TWIN, TwinProcess, twin_cli


def test_init_json_gives_login_address_and_password(tmp_path: Path) -> None:
    out = json.loads(twin_cli(tmp_path / "a", "init", "--name", "alice", "--json").stdout)
    assert out["login"] == out["address"] == "alice@alice.localhost"
    assert len(out["password"]) == 19 and len(out["mnemonic"].split()) == 12
    assert (tmp_path / "a" / "identity.key").stat().st_mode & 0o077 == 0
    again = twin_cli(tmp_path / "a", "init", "--name", "alice", check=False)
    assert again.returncode == 2 and "already holds a twin" in again.stderr


def test_init_writes_set_values_to_twin_toml(tmp_path: Path) -> None:
    twin_cli(tmp_path / "a", "--set", "imap.port=1999", "--set", "peer.ttl=600", "init",
             "--name", "alice", "--json")
    shown = twin_cli(tmp_path / "a", "config", "show").stdout
    assert re.search(r"imap\.port\s+=?\s*1999\b.*twin\.toml", shown), shown
    assert re.search(r"peer\.ttl\s+=?\s*600\b.*twin\.toml", shown), shown
    bad = twin_cli(tmp_path / "b", "--set", "imap.nope=1", "init", "--name", "bob",
                   check=False)
    assert bad.returncode == 2 and "imap.nope" in bad.stderr


def test_tfchain_down_at_init_keeps_the_twin_and_serve_publishes_later(
        tmp_path: Path) -> None:
    """The chain unreachable: init still shows the words and makes a whole twin; the
    phonebook commands say so in one line; serve starts and says why it is unpublished."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    sets = ["--set", "phonebook.backend=tfchain", "--set", f"phonebook.url=ws://127.0.0.1:{closed}",
            "--set", "phonebook.publish_retry=1"]
    data = tmp_path / "a"
    made = twin_cli(data, *sets, "init", "--name", "alice", "--json")
    out = json.loads(made.stdout)
    assert len(out["mnemonic"].split()) == 12 and out["password"] and out["twin_id"] is None
    assert "not published on TFChain yet" in made.stderr and "unreachable" in made.stderr
    assert (data / "identity.key").exists()
    listed = twin_cli(data, "phonebook", "list", check=False)
    assert listed.returncode == 2 and "Traceback" not in listed.stderr
    assert listed.stderr.splitlines()[-1].startswith("twin: TFChain node")
    twin = TwinProcess(data, "alice", out["login"], out["password"], out["mnemonic"])
    twin.start()
    try:
        deadline = time.monotonic() + 30
        while not re.search(r"NOT published yet after [2-9]", shown := twin_cli(
                data, "status", check=False).stdout):  # it keeps trying
            assert time.monotonic() < deadline, shown
            time.sleep(0.3)
        assert ": healthy" in shown and "unreachable" in shown
    finally:
        twin.stop()


def test_restore_from_the_words_gives_the_same_twin(tmp_path: Path) -> None:
    out = json.loads(twin_cli(tmp_path / "a", "init", "--name", "alice", "--json").stdout)
    twin_cli(tmp_path / "a", "storage", "backup")  # something to restore from
    back = twin_cli(tmp_path / "b", "restore", "--name", "alice", "--json",
                    "--config", str(tmp_path / "a" / "twin.toml"),
                    "--phonebook", str(tmp_path / "b.db"), input=out["mnemonic"] + "\n")
    assert json.loads(back.stdout)["public_key"] == out["public_key"]


def test_serve_reports_healthy_listeners_and_stops_on_sigterm(
        twins: Callable[..., TwinProcess]) -> None:
    alice = twins("alice")
    status = twin_cli(alice.data, "status", "--json")
    report = json.loads(status.stdout)
    assert report["running"] and report["healthy"], report
    for listener in report["listeners"]:
        assert set(listener) == {"name", "host", "port", "tls"}
        assert listener["host"] == "127.0.0.1" and listener["port"] > 0
    assert "https" in {i["name"] for i in report["listeners"]}
    start = time.monotonic()
    assert alice.stop(signal.SIGTERM, timeout=5) == 0
    assert time.monotonic() - start < 5
    after = twin_cli(alice.data, "status", "--json", check=False)
    assert after.returncode == 1 and json.loads(after.stdout)["running"] is False


def test_a_taken_port_is_a_clear_error(twins: Callable[..., TwinProcess]) -> None:
    alice = twins("alice", start=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [*TWIN, "--data", str(alice.data),
             "--set", f"http.port={port}", "serve"],
            capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert f"127.0.0.1:{port} is already in use" in proc.stderr
    assert "http.port" in proc.stderr


def test_a_missing_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    proc = twin_cli(tmp_path / "nowhere", "serve", check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "init" in proc.stderr


def test_one_data_dir_runs_one_twin(twins: Callable[..., TwinProcess]) -> None:
    alice = twins("alice")
    proc = subprocess.run(
        [*TWIN, "--data", str(alice.data),
         "--set", "http.port=0", "--set", "smtp.port=0", "--set", "imap.port=0",
         "--set", "imap.tls_port=0", "--set", "smtp.submission_port=0",
         "--set", "smtp.submissions_port=0", "serve"],
        capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "already running" in proc.stderr


def test_a_second_twin_shares_the_phonebook_and_they_know_each_other(
        twins: Callable[..., TwinProcess]) -> None:
    alice = twins("alice")
    bob = twins("bob")  # the fixture passes --phonebook alice's file
    seen = json.loads(twin_cli(bob.data, "phonebook", "resolve", "alice", "--json").stdout)
    assert seen["endpoints"] == [alice.url]
    seen = json.loads(twin_cli(alice.data, "phonebook", "resolve", "bob@bob.localhost",
                               "--json").stdout)
    assert seen["name"] == "bob" and seen["endpoints"] == [bob.url]


def test_the_log_level_key_sets_what_serve_logs(twins: Callable[..., TwinProcess]) -> None:
    import smtplib

    quiet = twins("quiet", sets=["log.level=warning"])
    chatty = twins("chatty")
    for twin in (quiet, chatty):
        with smtplib.SMTP("127.0.0.1", twin.port("smtp")) as client:
            client.sendmail("someone@example.com", [twin.login],
                            b"Subject: hi\r\n\r\nhello\r\n")
    assert "listening:" in chatty.log()  # info; a line per message is debug only
    assert " INFO " not in quiet.log() and "listening:" not in quiet.log()
