"""Two (three) real twins: alice shares a folder with bob; bob reads it over WebDAV."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.twins import TwinProcess, twin_cli

MiB = 1024 * 1024


def client(twin: TwinProcess) -> httpx.Client:
    return httpx.Client(base_url=twin.url, verify=False, timeout=600,
                        auth=(twin.login, twin.password))


@pytest.mark.slow
def test_shared_with_me(twins: Callable[..., TwinProcess]) -> None:
    alice, bob, carol = twins("alice"), twins("bob"), twins("carol")
    size = int(os.environ.get("TWIN_SHARE_MIB", "256")) * MiB
    block = os.urandom(MiB)
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        for i in range(size // MiB):
            piece = block[i % 7:] + block[:i % 7]
            digest.update(piece)
            yield piece

    with client(alice) as a:
        assert a.request("MKCOL", "/dav/photos").status_code == 201
        r = a.put("/dav/photos/holiday.mp4", content=body(),
                  headers={"Content-Length": str(size)})
        assert r.status_code == 201
        a.put("/dav/private.txt", content=b"not for bob")
    twin_cli(alice.data, "share", "/photos/", "--with", "bob")

    with client(bob) as b:
        r = b.request("PROPFIND", "/dav/shared/alice/photos/", headers={"Depth": "1"})
        assert r.status_code == 207 and "holiday.mp4" in r.text, r.text
        got = hashlib.sha256()
        n = 0
        with b.stream("GET", "/dav/shared/alice/photos/holiday.mp4") as resp:
            assert resp.status_code == 200
            for chunk in resp.iter_raw(256 * 1024):
                got.update(chunk)
                n += len(chunk)
        assert n == size and got.digest() == digest.digest()
        r = b.get("/dav/shared/alice/photos/holiday.mp4", headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and len(r.content) == 10
        assert b.get("/dav/shared/alice/private.txt").status_code == 404
        assert b.put("/dav/shared/alice/photos/x", content=b"x").status_code in (403, 409)

    with client(carol) as c:
        assert c.request("PROPFIND", "/dav/shared/alice/photos/",
                         headers={"Depth": "1"}).status_code == 404

    twin_cli(alice.data, "unshare", "/photos/", "--with", "bob")
    time.sleep(6)  # bob's listing cache (LIST_TTL) expires
    with client(bob) as b:
        assert b.request("PROPFIND", "/dav/shared/alice/photos/",
                         headers={"Depth": "1"}).status_code == 404
