"""The PUT fast path (``protocols.webdav.fastput``) against wsgidav's PUT, on a real twin.

A PUT carrying ``If-None-Match: "<an etag nobody has>"`` is always allowed by
wsgidav yet is left to it by the fast path, so each pair below runs the same
upload through both and compares what the client sees.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.types import Message

from core.owner import TOKEN_FILE
from protocols.webdav.fastput import _Ending
from tests.twins import TwinProcess

SLOW = {"If-None-Match": '"no-such-etag"'}  # passes wsgidav's check; the fast path defers
LOCK_BODY = b"""<?xml version="1.0" encoding="utf-8"?>
<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>
<D:locktype><D:write/></D:locktype><D:owner>test</D:owner></D:lockinfo>"""


def comparable(r: httpx.Response) -> dict[str, str]:
    """Headers that must match between the paths (date and the new etag's value differ)."""
    out = {k: v for k, v in r.headers.items() if k not in ("date", "etag")}
    out["etag-quoted"] = str(r.headers["etag"].startswith('"') and r.headers["etag"].endswith('"'))
    return out


def test_fast_put_answers_like_wsgidav(dav: httpx.Client) -> None:
    data = os.urandom(5 * 1024 * 1024 + 17)
    fast = dav.put("/dav/fp-new.bin", content=data, headers={"Content-Type": "video/mp4"})
    slow = dav.put("/dav/fp-new-slow.bin", content=data,
                   headers={"Content-Type": "video/mp4", **SLOW})
    assert fast.status_code == slow.status_code == 201
    assert comparable(fast) == comparable(slow), (fast.headers, slow.headers)
    stamp = re.compile(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?")
    assert stamp.sub(b"T", fast.content) == stamp.sub(b"T", slow.content)
    for name, put in (("fp-new.bin", fast), ("fp-new-slow.bin", slow)):
        got = dav.get(f"/dav/{name}")
        assert got.content == data and got.headers["etag"] == put.headers["etag"]
        assert got.headers["content-type"] == "video/mp4"
    # replacing: 204 and a new ETag from both
    fast = dav.put("/dav/fp-new.bin", content=b"second")
    slow = dav.put("/dav/fp-new-slow.bin", content=b"second", headers=SLOW)
    assert fast.status_code == slow.status_code == 204
    assert comparable(fast) == comparable(slow), (fast.headers, slow.headers)
    assert fast.content == slow.content == b""
    for name, put in (("fp-new.bin", fast), ("fp-new-slow.bin", slow)):
        got = dav.get(f"/dav/{name}")
        assert got.content == b"second" and got.headers["etag"] == put.headers["etag"]
    # an empty body
    assert dav.put("/dav/fp-empty.bin", content=b"").status_code == 201
    assert dav.put("/dav/fp-empty.bin", content=b"").status_code == 204
    r = dav.get("/dav/fp-empty.bin")
    assert r.status_code == 200 and r.content == b""


def test_what_the_fast_path_leaves_gets_wsgidavs_answers(
        dav: httpx.Client, dav_twin: TwinProcess) -> None:
    with httpx.Client(base_url=dav_twin.url, verify=False) as anon:
        assert anon.put("/dav/fp-anon.txt", content=b"x").status_code == 401
        assert anon.put("/dav/fp-anon.txt", content=b"x",
                        auth=(dav_twin.login, "wrong")).status_code == 401
    assert dav.get("/dav/fp-anon.txt").status_code == 404
    assert dav.put("/dav/no-such-dir/f.txt", content=b"x").status_code == 409
    assert dav.request("MKCOL", "/dav/fp-dir").status_code == 201
    assert dav.put("/dav/fp-dir", content=b"x").status_code == 405
    assert dav.put("/dav/fp-dir/in.txt", content=b"inside").status_code == 201
    assert dav.get("/dav/fp-dir/in.txt").content == b"inside"
    assert dav.put("/dav/fp-r.txt", content=b"x",
                   headers={"Content-Range": "bytes 0-0/1"}).status_code == 400
    assert dav.put("/dav/fp-r.txt", content=b"x",
                   headers={"Content-Encoding": "gzip"}).status_code == 501
    assert dav.get("/dav/fp-r.txt").status_code == 404
    assert dav.put("/dav/shared/fp.txt", content=b"no").status_code in (403, 409)
    assert dav.put("/dav/fp-dir/in.txt", content=b"x",
                   headers={"If-Match": '"not-it"'}).status_code == 412
    assert dav.get("/dav/fp-dir/in.txt").content == b"inside"


def _lock(dav: httpx.Client, path: str, depth: str = "0") -> str:
    r = dav.request("LOCK", path, content=LOCK_BODY,
                    headers={"Depth": depth, "Timeout": "Second-600"})
    assert r.status_code in (200, 201), r.text
    return r.headers["lock-token"].strip("<>")


def test_locks_refuse_a_put_without_their_token(dav: httpx.Client) -> None:
    assert dav.put("/dav/fp-locked.txt", content=b"old").status_code == 201
    token = _lock(dav, "/dav/fp-locked.txt")
    assert dav.put("/dav/fp-locked.txt", content=b"new").status_code == 423
    assert dav.get("/dav/fp-locked.txt").content == b"old"
    r = dav.put("/dav/fp-locked.txt", content=b"new",
                headers={"If": f"(<{token}>)"})
    assert r.status_code == 204
    assert dav.request("UNLOCK", "/dav/fp-locked.txt",
                       headers={"Lock-Token": f"<{token}>"}).status_code == 204
    assert dav.put("/dav/fp-locked.txt", content=b"free").status_code == 204
    assert dav.get("/dav/fp-locked.txt").content == b"free"
    # lock keys are quoted URLs: a name that needs quoting is found all the same
    assert dav.put("/dav/fp l\u00fcck%.txt", content=b"old").status_code == 201
    token = _lock(dav, "/dav/fp l\u00fcck%.txt")
    assert dav.put("/dav/fp l\u00fcck%.txt", content=b"new").status_code == 423
    assert dav.get("/dav/fp l\u00fcck%.txt").content == b"old"
    dav.request("UNLOCK", "/dav/fp l\u00fcck%.txt", headers={"Lock-Token": f"<{token}>"})
    # a depth-infinity lock on a folder covers new and old files below it
    assert dav.request("MKCOL", "/dav/fp-ldir").status_code == 201
    assert dav.put("/dav/fp-ldir/a.txt", content=b"a").status_code == 201
    token = _lock(dav, "/dav/fp-ldir/", "infinity")
    assert dav.put("/dav/fp-ldir/a.txt", content=b"b").status_code == 423
    assert dav.put("/dav/fp-ldir/new.txt", content=b"b").status_code == 423
    assert dav.get("/dav/fp-ldir/a.txt").content == b"a"
    assert dav.get("/dav/fp-ldir/new.txt").status_code == 404
    dav.request("UNLOCK", "/dav/fp-ldir/", headers={"Lock-Token": f"<{token}>"})
    # a depth-0 lock on a folder forbids adding members, not changing them
    token = _lock(dav, "/dav/fp-ldir/", "0")
    assert dav.put("/dav/fp-ldir/new.txt", content=b"b").status_code == 423
    assert dav.put("/dav/fp-ldir/a.txt", content=b"c").status_code == 204
    dav.request("UNLOCK", "/dav/fp-ldir/", headers={"Lock-Token": f"<{token}>"})
    # a lock on an unmapped URL (a "lock-null" resource)
    token = _lock(dav, "/dav/fp-ldir/reserved.txt")
    assert dav.put("/dav/fp-ldir/reserved.txt", content=b"b").status_code == 423
    assert dav.put("/dav/fp-ldir/reserved.txt", content=b"mine",
                   headers={"If": f"(<{token}>)"}).status_code in (201, 204)
    assert dav.get("/dav/fp-ldir/reserved.txt").content == b"mine"


def test_no_lock_while_a_fast_put_streams(dav: httpx.Client, dav_twin: TwinProcess) -> None:
    """wsgidav's write transaction is held for the body: a LOCK meanwhile is refused."""
    started, release = threading.Event(), threading.Event()

    def body() -> Iterator[bytes]:
        yield b"a" * 65536
        started.set()
        release.wait(30)
        yield b"b" * 65536

    result: list[httpx.Response] = []
    with httpx.Client(base_url=dav_twin.url, verify=False, timeout=60,
                      auth=(dav_twin.login, dav_twin.password)) as other:
        t = threading.Thread(target=lambda: result.append(
            other.put("/dav/fp-busy.bin", content=body())))
        t.start()
        try:
            assert started.wait(30)
            time.sleep(0.3)
            # the fast path took it: wsgidav would have created the file empty by now
            assert dav.get("/dav/fp-busy.bin").status_code == 404
            r = dav.request("LOCK", "/dav/fp-busy.bin", content=LOCK_BODY,
                            headers={"Depth": "0"})
            assert r.status_code == 423, r.text
        finally:
            release.set()
            t.join(60)
    # wsgidav's refused LOCK had made the unmapped URL an empty file (RFC 4918 section
    # 9.10.4, before its lock check), so the PUT replaced a file: 204 (RFC 9110 section 9.3.4)
    assert result and result[0].status_code == 204
    assert dav.get("/dav/fp-busy.bin").content == b"a" * 65536 + b"b" * 65536
    # and the transaction ended with the PUT: locking now works
    token = _lock(dav, "/dav/fp-busy.bin")
    dav.request("UNLOCK", "/dav/fp-busy.bin", headers={"Lock-Token": f"<{token}>"})


def test_chunked_put_through_both_paths(dav: httpx.Client) -> None:
    blocks = [os.urandom(50_000 + i) for i in range(30)]
    for name, headers in (("fp-chunked.bin", {}), ("fp-chunked-slow.bin", SLOW)):
        r = dav.put(f"/dav/{name}", content=iter(blocks), headers=headers)
        assert r.status_code == 201
        got = dav.get(f"/dav/{name}").content
        assert hashlib.sha256(got).digest() == hashlib.sha256(b"".join(blocks)).digest()


def _aborted_put(twin: TwinProcess, path: str, length: int, send: int,
                 extra: bytes = b"") -> None:
    """Headers for ``length`` bytes, ``send`` of them, then the connection drops."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    auth = httpx.BasicAuth(twin.login, twin.password)._auth_header.encode()
    with socket.create_connection(("127.0.0.1", twin.port("https")), timeout=30) as raw, \
            ctx.wrap_socket(raw) as s:
        s.sendall(b"PUT " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth +
                  b"\r\n" + extra + b"Content-Length: " + str(length).encode() + b"\r\n\r\n")
        s.sendall(os.urandom(send))
        time.sleep(0.5)  # let the server take the bytes in before the drop


@pytest.mark.parametrize("extra", [b"", b'If-None-Match: "no-such-etag"\r\n'],
                         ids=["fast", "wsgidav"])
def test_aborted_put_keeps_the_previous_version(
        dav: httpx.Client, dav_twin: TwinProcess, extra: bytes) -> None:
    name = "fp-abort-fast.bin" if not extra else "fp-abort-slow.bin"
    old = os.urandom(300_000)
    assert dav.put(f"/dav/{name}", content=old).status_code == 201
    etag = dav.get(f"/dav/{name}").headers["etag"]
    _aborted_put(dav_twin, f"/dav/{name}", 9 * 1024 * 1024, 5 * 1024 * 1024, extra)
    # a new file whose upload breaks does not appear (wsgidav removes its empty placeholder)
    _aborted_put(dav_twin, f"/dav/new-{name}", 4 * 1024 * 1024, 1024 * 1024, extra)
    # the server notices the drops on its own time: nothing may change for a while
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        r = dav.get(f"/dav/{name}")
        assert r.content == old and r.headers["etag"] == etag
        time.sleep(0.2)
    assert dav.get(f"/dav/new-{name}").status_code == 404


@pytest.fixture(scope="module")
def small_twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwinProcess]:
    twin = TwinProcess.create(Path(tmp_path_factory.mktemp("davq")), "bob",
                              sets=["webdav.quota=1000000"]).start()
    yield twin
    twin.stop()


def test_quota_refuses_with_507_on_both_paths(small_twin: TwinProcess) -> None:
    with httpx.Client(base_url=small_twin.url, verify=False, timeout=60,
                      auth=(small_twin.login, small_twin.password)) as dav:
        assert dav.put("/dav/keep.bin", content=b"k" * 600_000).status_code == 201
        for headers in ({}, SLOW):
            # announced too big: refused before the body is stored
            r = dav.put("/dav/big.bin", content=os.urandom(500_000), headers=headers)
            assert r.status_code == 507, (headers, r.status_code, r.text)
            # not announced (chunked): refused at the switch
            r = dav.put("/dav/big.bin", content=iter([os.urandom(250_000)] * 2),
                        headers=headers)
            assert r.status_code == 507, (headers, r.status_code, r.text)
            assert dav.get("/dav/big.bin").status_code == 404
        # replacing within the quota is fine
        assert dav.put("/dav/keep.bin", content=b"k" * 900_000).status_code == 204
        assert len(dav.get("/dav/keep.bin").content) == 900_000


def test_over_quota_is_507_for_copy_and_for_the_owners_local_publish(
        small_twin: TwinProcess) -> None:
    """Issue #19.5: one QuotaExceeded, one OVER_QUOTA row per table. The local
    publish route (``twin share FILE --as``) answered every error 400."""
    with httpx.Client(base_url=small_twin.url, verify=False, timeout=60,
                      auth=(small_twin.login, small_twin.password)) as dav:
        assert dav.put("/dav/keep.bin", content=b"k" * 900_000).status_code in (201, 204)
        r = dav.request("COPY", "/dav/keep.bin",
                        headers={"Destination": f"{small_twin.url}/dav/copy.bin"})
        assert r.status_code == 507, (r.status_code, r.text)
        assert dav.get("/dav/copy.bin").status_code == 404
    token = (small_twin.data / TOKEN_FILE).read_text()
    with httpx.Client(base_url=small_twin.url, verify=False, timeout=60,
                      headers={"authorization": f"Bearer {token}"}) as api:
        r = api.put("/twin/v1/local/objects?path=/pub/big.bin", content=b"b" * 1_100_000)
        assert r.status_code == 507 and r.json()["code"] == "overquota", (r.status_code, r.text)


async def test_the_write_lock_is_released_before_the_answer_goes_out() -> None:
    """A client may LOCK a file the moment its PUT is answered (seen as a 423 race)."""
    events: list[str] = []

    class Transaction:
        def __enter__(self) -> Transaction:
            return self

        def __exit__(self, *exc: object) -> None:
            events.append("released")

    async def send(message: Message) -> None:
        events.append(message["type"])

    ending = _Ending(Transaction(), send)
    await ending.send({"type": "http.response.start", "status": 201, "headers": []})
    await ending.send({"type": "http.response.body", "body": b""})
    await ending.end()  # the caller's finally: released once only
    assert events == ["released", "http.response.start", "http.response.body"]
