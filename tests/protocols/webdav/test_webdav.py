"""WebDAV on a real twin over HTTPS with httpx: HTTP semantics, quota, safety."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import ssl
from collections.abc import Iterator

import httpx

from tests.twins import TwinProcess

PROPFIND_QUOTA = b"""<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>
<D:quota-available-bytes/><D:quota-used-bytes/></D:prop></D:propfind>"""


def test_login_required_and_wrong_password_refused(dav_twin: TwinProcess) -> None:
    with httpx.Client(base_url=dav_twin.url, verify=False) as anon:
        r = anon.request("PROPFIND", "/dav/", headers={"Depth": "0"})
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Basic")
        r = anon.get("/dav/", auth=(dav_twin.login, "wrong-password"))
        assert r.status_code == 401


def test_put_get_etag_conditionals_and_ranges(dav: httpx.Client) -> None:
    data = os.urandom(700_000)
    r = dav.put("/dav/file.bin", content=data)
    assert r.status_code == 201
    etag = r.headers["etag"]
    r = dav.get("/dav/file.bin")
    assert r.content == data and r.headers["etag"] == etag and "last-modified" in r.headers
    assert dav.get("/dav/file.bin", headers={"If-None-Match": etag}).status_code == 304
    assert dav.put("/dav/file.bin", content=b"x",
                   headers={"If-Match": '"not-the-etag"'}).status_code == 412
    assert dav.get("/dav/file.bin").content == data  # the refused PUT changed nothing
    r = dav.get("/dav/file.bin", headers={"Range": "bytes=1000-1999"})
    assert r.status_code == 206 and r.content == data[1000:2000]
    assert r.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    r = dav.get("/dav/file.bin", headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == data[-10:]
    r = dav.put("/dav/file.bin", content=b"second", headers={"If-Match": etag})
    assert r.status_code in (200, 204) and r.headers["etag"] != etag


def test_chunked_put_as_finder_sends(dav: httpx.Client) -> None:
    blocks = [os.urandom(65_536 + i) for i in range(20)]

    def body() -> Iterator[bytes]:
        yield from blocks

    r = dav.put("/dav/chunked.bin", content=body())  # a generator: Transfer-Encoding: chunked
    assert r.status_code == 201
    got = dav.get("/dav/chunked.bin").content
    assert hashlib.sha256(got).digest() == hashlib.sha256(b"".join(blocks)).digest()


def test_quota_properties(dav: httpx.Client) -> None:
    dav.put("/dav/q.txt", content=b"12345")
    r = dav.request("PROPFIND", "/dav/", content=PROPFIND_QUOTA, headers={"Depth": "0"})
    assert r.status_code == 207
    assert b"quota-available-bytes>" in r.content and b"quota-used-bytes>" in r.content
    used = int(r.text.split("quota-used-bytes>")[1].split("<")[0])
    assert used >= 5


def test_well_known_redirect(dav: httpx.Client) -> None:
    r = dav.get("/.well-known/webdav")
    assert r.status_code == 301 and r.headers["location"].endswith("/dav/")


def raw_request(twin: TwinProcess, request: bytes) -> bytes:
    """Send bytes no well-behaved client library would (bad UTF-8, dot segments)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", twin.port("https")), timeout=30) as raw, \
            ctx.wrap_socket(raw) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
            if b"\r\n\r\n" in out:
                break
        return out


def auth_header(twin: TwinProcess) -> bytes:
    return b"Authorization: " + httpx.BasicAuth(twin.login, twin.password)._auth_header.encode()


def test_unsafe_paths_are_refused(dav_twin: TwinProcess, dav: httpx.Client) -> None:
    head = auth_header(dav_twin)
    for target in (b"/dav/bad%ff%fe.txt", b"/dav/%2e%2e/%2e%2e/etc/passwd",
                   b"/dav/ctl%01name.txt"):
        out = raw_request(dav_twin, b"PUT " + target + b" HTTP/1.1\r\nHost: x\r\n" + head +
                          b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
        status = int(out.split(b" ")[1])
        assert status in (400, 403, 404), (target, out[:200])
    listing = dav.request("PROPFIND", "/dav/", headers={"Depth": "1"}).text
    # Only the names: an etag's hex digits may spell "bad".
    hrefs = " ".join(re.findall(r"<[^>]*href>([^<]*)<", listing))
    assert "/dav/" in hrefs
    assert "bad" not in hrefs and "ctl" not in hrefs and "passwd" not in hrefs


def test_destination_on_another_host_is_refused(dav: httpx.Client) -> None:
    dav.put("/dav/stay.txt", content=b"here")
    r = dav.request("MOVE", "/dav/stay.txt",
                    headers={"Destination": "https://elsewhere.example/dav/gone.txt"})
    assert r.status_code in (400, 403, 502)
    assert dav.get("/dav/stay.txt").content == b"here"


def test_xml_bomb_and_oversized_bodies_are_refused(dav: httpx.Client) -> None:
    bomb = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<D:propfind xmlns:D="DAV:"><D:prop><D:displayname>&lol3;</D:displayname></D:prop></D:propfind>"""
    r = dav.request("PROPFIND", "/dav/", content=bomb, headers={"Depth": "0"})
    assert r.status_code in (400, 422)
    big = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/>' + \
        b"<!--" + b"x" * (2 * 1024 * 1024) + b"--></D:propfind>"
    r = dav.request("PROPFIND", "/dav/", content=big, headers={"Depth": "0"})
    assert r.status_code == 413

    def chunked() -> Iterator[bytes]:
        for _ in range(40):
            yield b"y" * 65536

    r = dav.request("PROPPATCH", "/dav/q.txt", content=chunked())
    assert r.status_code == 413


def test_shared_folder_is_read_only_and_empty(dav: httpx.Client) -> None:
    assert dav.request("MKCOL", "/dav/shared/mine").status_code in (403, 404, 409)
    assert dav.put("/dav/shared/x.txt", content=b"no").status_code in (403, 409)
    assert dav.get("/dav/shared/nobody-here/file").status_code == 404


def test_fast_get_matches_wsgidav(dav: httpx.Client, dav_twin: TwinProcess) -> None:
    """Plain GETs take the ASGI fast path; a conditional one goes through wsgidav: same answer."""
    data = os.urandom(9 * 1024 * 1024 + 123)  # three segments, the last one short
    assert dav.put("/dav/fast.bin", content=data,
                   headers={"Content-Type": "video/mp4"}).status_code == 201
    fast = dav.get("/dav/fast.bin")
    slow = dav.get("/dav/fast.bin", headers={"If-None-Match": '"another-etag"'})
    assert fast.status_code == slow.status_code == 200
    assert hashlib.sha256(fast.content).digest() == hashlib.sha256(data).digest()
    assert fast.content == slow.content

    def same(r: httpx.Response) -> dict[str, str]:
        return {k: v for k, v in r.headers.items() if k not in ("date", "connection")}
    assert same(fast) == same(slow), (fast.headers, slow.headers)
    assert fast.headers["content-type"] == "video/mp4"
    # what the fast path leaves to wsgidav still gets wsgidav's answers
    with httpx.Client(base_url=dav_twin.url, verify=False) as anon:
        assert anon.get("/dav/fast.bin").status_code == 401
        assert anon.get("/dav/fast.bin", auth=(dav_twin.login, "wrong")).status_code == 401
    assert dav.get("/dav/no-such.bin").status_code == 404
    assert dav.request("MKCOL", "/dav/fastdir").status_code == 201
    assert dav.get("/dav/fastdir").status_code == 403  # no directory browsing
    assert dav.get("/dav/fast.bin", headers={"Range": "bytes=5-9"}).content == data[5:10]
    empty = dav.put("/dav/empty.bin", content=b"")
    assert empty.status_code == 201
    r = dav.get("/dav/empty.bin")
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "0"
