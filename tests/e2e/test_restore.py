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
