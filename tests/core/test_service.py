"""`twin serve` and `twin status` as a user runs them: real processes, real sockets."""

from __future__ import annotations

import json
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


def test_restore_from_the_words_gives_the_same_twin(tmp_path: Path) -> None:
    out = json.loads(twin_cli(tmp_path / "a", "init", "--name", "alice", "--json").stdout)
    back = twin_cli(tmp_path / "b", "restore", "--name", "alice", "--json",
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
