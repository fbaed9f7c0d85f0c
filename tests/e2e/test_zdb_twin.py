"""A twin whose only storage is six 0-db namespaces behind passwords, end to end.

Mail over SMTP and IMAP, a file over WebDAV, a stop, then the data dir lost
and ``twin restore`` from the words and the 0-db backends alone.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx

from tests.e2e.test_restore import inbox_bodies, wait_in_inbox
from tests.e2e.test_storage_faults import _backends_toml
from tests.protocols.smtp.helpers import submit
from tests.servers import Servers
from tests.twins import TwinProcess, twin_cli


async def test_mail_files_and_restore_on_six_protected_zdb_namespaces(
        tmp_path: Path, zdbs: tuple[Servers, list[dict[str, str]]]) -> None:
    _, specs = zdbs
    backends = _backends_toml(specs)
    alice = TwinProcess.create(tmp_path, "alice", sets=[f"storage.backends={backends}"])
    alice.start()
    try:
        out = twin_cli(alice.data, "--set", f"storage.backends={backends}", "storage",
                       "status", check=False)
        assert "mode=userkey" in out.stdout and "password" in out.stdout, out
        message = (f"From: {alice.login}\r\nTo: {alice.login}\r\nSubject: on zdb\r\n"
                   f"\r\nStored on 0-db.\r\n").encode()
        await submit(alice, alice.login, [alice.login], message)
        document = os.urandom(300_000)
        auth = (alice.login, alice.password)
        with httpx.Client(base_url=alice.url, auth=auth, verify=False, timeout=30) as dav:
            assert dav.request("MKCOL", "/dav/papers/").status_code == 201
            assert dav.put("/dav/papers/deed.bin", content=document).status_code in (201, 204)
            assert dav.get("/dav/papers/deed.bin").content == document
        wait_in_inbox(alice, *auth, b"on zdb")
    finally:
        assert alice.stop() == 0

    # stopped: `--set` on the command line names the backends `twin storage` opens
    out = twin_cli(alice.data, "--set", f"storage.backends={backends}", "storage", "status",
                   check=False)
    assert out.returncode == 0 and "z5" in out.stdout and "mode=userkey" in out.stdout, out
    shutil.rmtree(alice.data)  # the data dir is lost; the 0-db namespaces are not
    config = tmp_path / "saved-twin.toml"
    config.write_text(f'[twin]\nname = "alice"\n[storage]\nbackends = {backends}\n')
    new = tmp_path / "alice-again"
    out = twin_cli(new, "restore", "--name", "alice", "--config", str(config), "--json",
                   input=alice.mnemonic + "\n")
    result = json.loads(out.stdout)
    assert result["restored_metadata"] is True, out.stderr
    again = TwinProcess(new, "alice", alice.login, result["password"], alice.mnemonic)
    again.start()
    try:
        assert any(b"Stored on 0-db." in m
                   for m in inbox_bodies(again, alice.login, alice.password))
        with httpx.Client(base_url=again.url, auth=(alice.login, alice.password),
                          verify=False, timeout=30) as dav:
            assert dav.get("/dav/papers/deed.bin").content == document
    finally:
        again.stop()
