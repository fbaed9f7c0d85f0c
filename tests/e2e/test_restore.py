"""A twin lost whole comes back from its words and its storage backends.

Real processes and real clients: mail submitted over SMTP and a file PUT over
WebDAV; the twin stops (which backs up twin.db and the catalogue into the
store); ``twin restore`` rebuilds it into an empty data dir from the mnemonic
and the old twin.toml (naming the old backends) alone; the restored twin serves
the same mail over IMAP and the same file over WebDAV, to the old login with
its old app password and to the fresh one ``twin restore`` prints.
"""

from __future__ import annotations

import imaplib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.protocols.smtp.helpers import client_tls, submit
from tests.twins import TwinProcess, twin_cli


def inbox_bodies(twin: TwinProcess, login: str, password: str) -> list[bytes]:
    c = imaplib.IMAP4_SSL("127.0.0.1", twin.port("imaps"), ssl_context=client_tls())
    try:
        c.login(login, password)
        c.select("INBOX", readonly=True)
        _, data = c.search(None, "ALL")
        bodies = []
        for num in data[0].split():
            _, parts = c.fetch(num, "(BODY.PEEK[])")
            bodies.append(bytes(parts[0][1]))  # type: ignore[index]
        return bodies
    finally:
        c.logout()


def wait_in_inbox(twin: TwinProcess, login: str, password: str, needle: bytes,
                  timeout: float = 20) -> None:
    """Poll as a client would: mail shows in the Inbox shortly after its 250."""
    deadline = time.monotonic() + timeout
    while not any(needle in m for m in inbox_bodies(twin, login, password)):
        assert time.monotonic() < deadline, f"{needle!r} never reached the Inbox"
        time.sleep(0.1)


async def test_restore_brings_back_mail_and_files_from_the_words_and_the_backends(
        twins: Callable[..., TwinProcess], tmp_path: Path) -> None:
    alice = twins("alice")
    message = (f"From: {alice.login}\r\nTo: {alice.login}\r\nSubject: before the fire\r\n"
               f"\r\nKeep this one.\r\n").encode()
    await submit(alice, alice.login, [alice.login], message)
    document = os.urandom(300_000)  # several segments at any segment size up to 64 KiB
    auth = (alice.login, alice.password)
    with httpx.Client(base_url=alice.url, auth=auth, verify=False, timeout=30) as dav:
        assert dav.request("MKCOL", "/dav/papers/").status_code == 201
        assert dav.put("/dav/papers/deed.bin", content=document).status_code in (201, 204)
    wait_in_inbox(alice, *auth, b"before the fire")
    assert alice.stop() == 0

    # The data dir burns down; the backends survive elsewhere, named in a saved twin.toml.
    backends = tmp_path / "backends"
    shutil.copytree(alice.data / "shards", backends)
    shutil.rmtree(alice.data)
    config = tmp_path / "saved-twin.toml"
    specs = ", ".join(f'{{ name = "local{i}", kind = "local", location = "{backends / str(i)}" }}'
                      for i in range(6))
    config.write_text(f'[twin]\nname = "alice"\n[storage]\nbackends = [{specs}]\n')

    new = tmp_path / "alice-again"
    out = twin_cli(new, "restore", "--name", "alice", "--config", str(config), "--json",
                   input=alice.mnemonic + "\n")
    result = json.loads(out.stdout)
    assert result["restored_metadata"] is True, out.stderr
    assert result["restored_objects"] >= 2  # the mail and the file (and twin.db itself)
    fresh = result["password"]
    assert fresh != alice.password

    again = TwinProcess(new, "alice", alice.login, fresh, alice.mnemonic)
    twins_started = again.start()
    try:
        for password in (fresh, alice.password):  # old logins are kept, a fresh one added
            assert any(b"Keep this one." in m
                       for m in inbox_bodies(twins_started, alice.login, password))
        with httpx.Client(base_url=again.url, auth=(alice.login, fresh), verify=False,
                          timeout=30) as dav:
            got = dav.get("/dav/papers/deed.bin")
            assert got.status_code == 200
            assert got.content == document
    finally:
        again.stop()


async def test_restore_with_the_twin_toml_init_wrote_brings_back_mail_files_and_grants(
        twins: Callable[..., TwinProcess], tmp_path: Path) -> None:
    """The README's path: init, use, lose everything but the backends, restore with
    the words and the twin.toml `twin init` wrote (backends named `shards/N`)."""
    alice = twins("alice")
    bob = twins("bob")
    for i in range(3):
        message = (f"From: {alice.login}\r\nTo: {alice.login}\r\nSubject: keep {i}\r\n"
                   f"\r\nLetter {i}.\r\n").encode()
        await submit(alice, alice.login, [alice.login], message)
    document = os.urandom(200_000)
    auth = (alice.login, alice.password)
    with httpx.Client(base_url=alice.url, auth=auth, verify=False, timeout=30) as dav:
        assert dav.request("MKCOL", "/dav/papers/").status_code == 201
        assert dav.put("/dav/papers/deed.bin", content=document).status_code in (201, 204)
    twin_cli(alice.data, "contacts", "add", "bob")
    twin_cli(alice.data, "share", "/papers/", "--with", "bob")
    wait_in_inbox(alice, *auth, b"keep 2")
    before = inbox_bodies(alice, *auth)
    assert alice.stop() == 0

    # Everything goes but the backends (and the phonebook, which stands for the
    # network's: bob shares it). The owner kept a copy of twin.toml.
    old_config = tmp_path / "kept-twin.toml"
    shutil.copy(alice.data / "twin.toml", old_config)
    for entry in alice.data.iterdir():
        if entry.name != "shards" and not entry.name.startswith("phonebook.db"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    out = twin_cli(alice.data, "restore", "--name", "alice", "--config", str(old_config),
                   "--json", input=alice.mnemonic + "\n")
    result = json.loads(out.stdout)
    assert result["restored_metadata"] is True, out.stderr
    assert result["restored"]["messages"] == 3 and result["restored"]["files"] == 1
    assert result["restored"]["contacts"] == 1 and result["restored"]["grants"] == 1

    again = TwinProcess(alice.data, "alice", alice.login, alice.password, alice.mnemonic)
    again.start()
    try:
        assert inbox_bodies(again, *auth) == before  # byte for byte, in order
        with httpx.Client(base_url=again.url, auth=auth, verify=False, timeout=30) as dav:
            assert dav.get("/dav/papers/deed.bin").content == document
        got = tmp_path / "fetched.bin"
        fetched = twin_cli(bob.data, "fetch", "alice", "/papers/deed.bin", "-o", str(got),
                           check=False)
        assert fetched.returncode == 0, fetched.stderr
        assert got.read_bytes() == document  # the grant works for bob
    finally:
        again.stop()


def test_restore_with_nothing_to_restore_fails_and_leaves_no_twin(
        twins: Callable[..., TwinProcess], tmp_path: Path) -> None:
    alice = twins("alice", start=False)
    # the twin.toml of a twin that never stored anything: no backends exist
    missing = twin_cli(tmp_path / "new", "restore", "--name", "alice", "--config",
                       str(alice.data / "twin.toml"), input=alice.mnemonic + "\n",
                       check=False)
    assert missing.returncode != 0 and "nothing to restore" in missing.stderr
    assert not (tmp_path / "new").exists()
    # backends that exist but hold nothing of this twin: refused, and nothing left
    empty = [tmp_path / "empty" / str(i) for i in range(6)]
    for d in empty:
        d.mkdir(parents=True)
    config = tmp_path / "empty.toml"
    specs = ", ".join(f'{{ name = "e{i}", kind = "local", location = "{d}" }}'
                      for i, d in enumerate(empty))
    config.write_text(f'[storage]\nbackends = [{specs}]\n')
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "note.txt").write_text("mine")
    nothing = twin_cli(tmp_path / "kept", "restore", "--name", "alice", "--config", str(config),
                       input=alice.mnemonic + "\n", check=False)
    assert nothing.returncode != 0, nothing.stdout
    assert "nothing to restore" in nothing.stderr
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["note.txt"]
