"""Three real twins: alice shares /docs/ read-write and /ro/ read-only with bob; bob
writes through his own WebDAV under /dav/shared/alice/; carol holds no grant."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.tools import require_tool
from tests.twins import TwinProcess, twin_cli

MiB = 1024 * 1024
QUOTA = 8 * MiB  # alice's webdav.quota
ALICE_MAX_UPLOAD = 6 * MiB  # the largest file alice takes from another twin
BOB_MAX_PUT = 1 * MiB  # bob sends bigger files in chunks of this
BOB_MAX_UPLOAD = 12 * MiB  # the largest file bob sends
DOCS = "/dav/shared/alice/docs"


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TwinProcess]]:
    root = tmp_path_factory.mktemp("rwshare")
    made: dict[str, TwinProcess] = {}
    sets = {"alice": [f"webdav.quota={QUOTA}", f"peer.max_upload={ALICE_MAX_UPLOAD}"],
            "bob": [f"peer.max_put={BOB_MAX_PUT}", f"peer.max_upload={BOB_MAX_UPLOAD}"]}
    try:
        for name in ("alice", "bob", "carol"):
            book = made["alice"].phonebook if made else None
            made[name] = TwinProcess.create(root, name, phonebook=book,
                                            sets=sets.get(name)).start()
        alice = made["alice"]
        with client(alice) as a:
            for folder in ("/dav/docs", "/dav/ro", "/dav/private"):
                assert a.request("MKCOL", folder).status_code == 201
            assert a.put("/dav/ro/notes.txt", content=b"read only").status_code == 201
            assert a.put("/dav/private/s.txt", content=b"owner only").status_code == 201
        twin_cli(alice.data, "share", "/docs/", "--with", "bob", "--write")
        twin_cli(alice.data, "share", "/ro/", "--with", "bob")
        yield made
    finally:
        for twin in made.values():
            try:
                twin.stop()
            except Exception:
                twin.kill9()


def client(twin: TwinProcess) -> httpx.Client:
    return httpx.Client(base_url=twin.url, verify=False, timeout=120,
                        auth=(twin.login, twin.password))


def move(c: httpx.Client, twin: TwinProcess, src: str, dst: str) -> int:
    return c.request("MOVE", src, headers={"Destination": twin.url + dst}).status_code


def test_bob_writes_renames_and_deletes_and_alice_sees_it(trio: dict[str, TwinProcess]) -> None:
    alice, bob = trio["alice"], trio["bob"]
    body = os.urandom(300_000)
    with client(bob) as b:
        assert b.request("MKCOL", f"{DOCS}/sub").status_code == 201
        assert b.put(f"{DOCS}/sub/a.bin", content=body).status_code == 201
        assert b.get(f"{DOCS}/sub/a.bin").content == body
        r = b.put(f"{DOCS}/sub/a.bin", content=body[:10])  # overwrite
        assert r.status_code == 204
        seen = r.headers["etag"]
        assert move(b, bob, f"{DOCS}/sub/a.bin", f"{DOCS}/b.bin") == 201
        assert move(b, bob, f"{DOCS}/sub", f"{DOCS}/folder") == 201
        r = b.request("PROPFIND", f"{DOCS}/", headers={"Depth": "1"})
        assert r.status_code == 207 and "b.bin" in r.text and "folder" in r.text, r.text
    with client(alice) as a:
        assert a.get("/dav/docs/b.bin").content == body[:10]
        assert a.get("/dav/docs/sub/a.bin").status_code == 404
        assert a.request("PROPFIND", "/dav/docs/folder/",
                         headers={"Depth": "0"}).status_code == 207
        # alice changes it; bob sees the change on his next request
        assert a.put("/dav/docs/b.bin", content=b"from alice").status_code == 204
    with client(bob) as b:
        assert b.get(f"{DOCS}/b.bin").content == b"from alice"
        # bob's version is gone: a conditional write of it changes nothing (RFC 9110 13.1.1)
        r = b.put(f"{DOCS}/b.bin", content=b"stale", headers={"If-Match": seen})
        assert r.status_code == 412, r.text
        assert b.get(f"{DOCS}/b.bin").content == b"from alice"
        assert b.delete(f"{DOCS}/b.bin").status_code == 204
        assert b.delete(f"{DOCS}/folder").status_code == 204
        assert b.get(f"{DOCS}/b.bin").status_code == 404
        # the granted folder itself stays: bob writes below it, not of it
        assert b.delete(DOCS).status_code == 403
    with client(alice) as a:
        assert a.get("/dav/docs/b.bin").status_code == 404
        assert a.get("/dav/docs/folder/").status_code == 404
        assert a.request("PROPFIND", "/dav/docs/", headers={"Depth": "0"}).status_code == 207


def test_read_only_share_and_carol_are_refused(trio: dict[str, TwinProcess]) -> None:
    alice, bob, carol = trio["alice"], trio["bob"], trio["carol"]
    with client(bob) as b:
        assert b.get("/dav/shared/alice/ro/notes.txt").content == b"read only"
        assert b.put("/dav/shared/alice/ro/new.txt", content=b"x").status_code == 403
        assert b.put("/dav/shared/alice/ro/notes.txt", content=b"x").status_code == 403
        assert b.request("MKCOL", "/dav/shared/alice/ro/d").status_code == 403
        assert b.delete("/dav/shared/alice/ro/notes.txt").status_code == 403
        assert move(b, bob, "/dav/shared/alice/ro/notes.txt", f"{DOCS}/stolen.txt") == 403
        assert b.put(f"{DOCS}/tmp.txt", content=b"t").status_code == 201
        assert move(b, bob, f"{DOCS}/tmp.txt", "/dav/shared/alice/ro/tmp.txt") == 403
        assert b.delete(f"{DOCS}/tmp.txt").status_code == 204
        # outside every grant: not found, whether it exists or not
        assert b.put("/dav/shared/alice/private/s.txt", content=b"x").status_code == 404
        assert b.put("/dav/shared/alice/private/new.txt", content=b"x").status_code == 404
        assert b.delete("/dav/shared/alice/private/s.txt").status_code == 404
    with client(carol) as c:
        assert c.put(f"{DOCS}/c.txt", content=b"carol").status_code == 404
        assert c.request("MKCOL", f"{DOCS}/c").status_code == 404
        assert c.delete(f"{DOCS}/").status_code == 404
    with client(alice) as a:
        assert a.get("/dav/ro/notes.txt").content == b"read only"
        assert a.get("/dav/ro/new.txt").status_code == 404
        assert a.get("/dav/private/s.txt").content == b"owner only"
        assert a.get("/dav/private/new.txt").status_code == 404
        assert a.get("/dav/docs/c.txt").status_code == 404


def test_chunked_upload_quota_and_size_limits(trio: dict[str, TwinProcess]) -> None:
    alice, bob = trio["alice"], trio["bob"]
    parts = alice.data / "uploads"
    first = os.urandom(3 * MiB + 512 * 1024)  # four chunks of bob's 1 MiB
    with client(bob) as b:
        # over bob's own peer.max_upload: refused before the body is read
        r = b.put(f"{DOCS}/huge.bin", content=bytes(13 * MiB))
        assert r.status_code == 413, r.text
        assert b.put(f"{DOCS}/q1.bin", content=first).status_code == 201
        assert b.get(f"{DOCS}/q1.bin").content == first
        r = b.put(f"{DOCS}/q2.bin", content=os.urandom(5 * MiB))
        assert r.status_code == 507, r.text  # alice's quota of 8 MiB
        assert b.delete(f"{DOCS}/q1.bin").status_code == 204
        r = b.put(f"{DOCS}/big.bin", content=os.urandom(7 * MiB))
        assert r.status_code == 413, r.text  # alice's peer.max_upload of 6 MiB
        assert b.put(f"{DOCS}/q2.bin", content=os.urandom(5 * MiB)).status_code == 201
        assert b.delete(f"{DOCS}/q2.bin").status_code == 204
    with client(alice) as a:
        for name in ("huge.bin", "big.bin", "q1.bin", "q2.bin"):
            assert a.get(f"/dav/docs/{name}").status_code == 404
    assert list(parts.glob("*.part")) == []  # refused uploads left nothing staged


def rclone_env(bob: TwinProcess, rclone: str) -> dict[str, str]:
    obscured = subprocess.run([rclone, "obscure", bob.password], capture_output=True,
                              text=True, check=True).stdout.strip()
    return {**os.environ, "RCLONE_CONFIG_BOB_TYPE": "webdav",
            "RCLONE_CONFIG_BOB_URL": f"{bob.url}{DOCS}/",
            "RCLONE_CONFIG_BOB_VENDOR": "other",
            "RCLONE_CONFIG_BOB_USER": bob.login, "RCLONE_CONFIG_BOB_PASS": obscured}


def test_rclone_in_and_out_of_alices_share(trio: dict[str, TwinProcess], tmp_path: Path) -> None:
    rclone = require_tool("rclone")
    alice, bob = trio["alice"], trio["bob"]
    env = rclone_env(bob, rclone)

    def run(*args: str) -> None:
        out = subprocess.run([rclone, "--no-check-certificate", *args], env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr

    src = tmp_path / "src"
    (src / "répertoire").mkdir(parents=True)
    (src / "répertoire" / "日本語.txt").write_text("こんにちは\n" * 500)
    (src / "one.bin").write_bytes(os.urandom(700_000))
    (src / "empty").write_bytes(b"")
    run("copy", str(src), "bob:rc")
    run("check", "--download", str(src), "bob:rc")
    with client(alice) as a:  # in alice's own tree, byte for byte
        for f in src.rglob("*"):
            if f.is_file():
                rel = f.relative_to(src).as_posix()
                assert a.get(f"/dav/docs/rc/{rel}").content == f.read_bytes(), rel
    run("moveto", "bob:rc/one.bin", "bob:rc/two.bin")
    back = tmp_path / "back"
    run("copy", "bob:rc", str(back))
    assert (back / "two.bin").read_bytes() == (src / "one.bin").read_bytes()
    assert not (back / "one.bin").exists()
    assert (back / "répertoire" / "日本語.txt").read_text() == "こんにちは\n" * 500
    run("purge", "bob:rc")
    with client(alice) as a:
        assert a.get("/dav/docs/rc/two.bin").status_code == 404


def test_litmus_basic_in_alices_share(trio: dict[str, TwinProcess], tmp_path: Path) -> None:
    litmus = require_tool("litmus")
    bob = trio["bob"]
    out = subprocess.run([litmus, f"{bob.url}{DOCS}/", bob.login, bob.password],
                         env={**os.environ, "TESTS": "basic"}, capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    text = out.stdout + out.stderr
    m = re.search(r"summary for `basic': of (\d+) tests run: (\d+) passed, (\d+) failed", text)
    assert m, text
    print(m.group(0))  # in the CI log: the counts against another twin's share
    run, passed, failed = map(int, m.groups())
    assert run > 0 and passed == run and failed == 0, text
    assert "WARNING" not in text, text
