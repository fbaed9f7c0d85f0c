"""What real clients found (issue 20): `/dav` without a slash, odd names, one Date, racing PUTs."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

import httpx

from tests.protocols.webdav.test_webdav import auth_header, raw_request
from tests.twins import TwinProcess

CONTROL = [*range(0x20), 0x7F]


def test_dav_without_slash_is_answered_not_redirected(dav: httpx.Client) -> None:
    """gvfs strips the slash of ``davs://host/dav/`` and gives up on a 301."""
    r = dav.options("/dav")
    assert r.status_code == 200, r.headers
    assert "1" in r.headers["dav"] and "PROPFIND" in r.headers["allow"]
    r = dav.request("PROPFIND", "/dav", headers={"Depth": "1"})
    assert r.status_code == 207, r.text
    assert "<ns0:href>/dav/</ns0:href>" in r.text and "location" not in r.headers
    with httpx.Client(base_url=dav.base_url, verify=False) as anon:
        assert anon.request("PROPFIND", "/dav").status_code == 401  # still needs a login


def test_every_control_character_gets_400(dav_twin: TwinProcess, dav: httpx.Client) -> None:
    """At the end of a name (``x%0A`` was a 500 traceback), inside it and in front of it."""
    for code in CONTROL:
        esc = f"%{code:02X}"
        for name in (f"x{esc}", f"x{esc}y", f"{esc}x"):
            for method in ("PUT", "PROPFIND", "GET", "DELETE", "MKCOL"):
                r = dav.request(method, f"/dav/{name}",
                                content=b"hi" if method == "PUT" else None)
                assert r.status_code == 400, (method, name, r.status_code, r.text[:200])
                assert "Traceback" not in r.text
        r = dav.request("MOVE", "/dav/", headers={"Destination": f"{dav_twin.url}/dav/a{esc}"})
        assert r.status_code == 400, (esc, r.status_code)
    # a bare LF in the raw target never reaches a path: the HTTP parser refuses it
    out = raw_request(dav_twin, b"PUT /dav/x\n HTTP/1.1\r\nHost: x\r\n" + auth_header(dav_twin)
                      + b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
    assert out.startswith(b"HTTP/1.1 400") or out == b"", out[:200]
    listing = dav.request("PROPFIND", "/dav/", headers={"Depth": "1"}).text
    assert "<ns0:href>/dav/x" not in listing


def test_encoded_slash_is_refused_never_a_separator(dav_twin: TwinProcess,
                                                    dav: httpx.Client) -> None:
    assert dav.request("MKCOL", "/dav/slashdir").status_code == 201
    for name in ("x%2Fy", "%2Fx", "a%2F", "slashdir%2fz", "%2F"):
        for method in ("PUT", "GET", "PROPFIND", "MKCOL", "DELETE"):
            r = dav.request(method, f"/dav/{name}", content=b"hi" if method == "PUT" else None)
            assert r.status_code == 400, (method, name, r.status_code, r.text[:200])
    dav.put("/dav/stays.txt", content=b"here")
    r = dav.request("MOVE", "/dav/stays.txt",
                    headers={"Destination": f"{dav_twin.url}/dav/slashdir%2Fmoved.txt"})
    assert r.status_code == 400
    assert dav.get("/dav/stays.txt").content == b"here"
    for path in ("/dav/x", "/dav/a", "/dav/slashdir/z", "/dav/slashdir/moved.txt"):
        assert dav.get(path).status_code == 404, path  # nothing created under a decoded name


def _dates(head: bytes) -> int:
    return sum(1 for line in head.split(b"\r\n") if line.lower().startswith(b"date:"))


def test_one_date_header(dav_twin: TwinProcess, dav: httpx.Client) -> None:
    """RFC 9110 section 6.6.1: one Date (wsgidav and uvicorn each sent one)."""
    dav.put("/dav/dated.txt", content=b"d")
    wrong = b"Authorization: Basic " + httpx.BasicAuth("nobody", "x")._auth_header[6:].encode()
    for target, auth in ((b"PROPFIND /dav/", b""),                    # wsgidav's 401
                         (b"GET /dav/dated.txt", wrong),              # the fast path's 401
                         (b"GET /dav/dated.txt", auth_header(dav_twin)),  # fast GET
                         (b"PROPFIND /dav/", auth_header(dav_twin)),  # wsgidav
                         (b"OPTIONS /dav", auth_header(dav_twin))):
        out = raw_request(dav_twin, target + b" HTTP/1.1\r\nHost: x\r\n" + auth +
                          (b"\r\n" if auth else b"") + b"Depth: 0\r\nConnection: close\r\n\r\n")
        head = out.split(b"\r\n\r\n")[0]
        assert _dates(head) == 1, head.decode(errors="replace")


def _race(dav_twin: TwinProcess, put: Callable[[httpx.Client, int], httpx.Response],
          n: int = 8) -> list[httpx.Response]:
    clients = [httpx.Client(base_url=dav_twin.url, verify=False, timeout=60,
                            auth=(dav_twin.login, dav_twin.password)) for _ in range(n)]
    for c in clients:
        assert c.options("/dav/").status_code == 200  # connected and logged in before the race
    barrier = threading.Barrier(n)
    answers: list[httpx.Response] = []

    def one(i: int) -> None:
        barrier.wait()
        answers.append(put(clients[i], i))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    return answers


def test_concurrent_puts_of_a_new_file_one_201(dav_twin: TwinProcess, dav: httpx.Client) -> None:
    """RFC 9110 section 9.3.4: 201 for the PUT that created the file, 204 for those that
    replaced it, on the fast path and on wsgidav's (a conditional PUT goes there)."""
    for path, headers in (("/dav/race.txt", {}),
                          ("/dav/race-wsgidav.txt", {"If-None-Match": '"no-such-etag"'})):
        answers = _race(dav_twin, lambda c, i, p=path, h=headers: c.put(
            p, content=b"version %d" % i, headers=h))
        codes = sorted(r.status_code for r in answers)
        assert codes == [201] + [204] * 7, (path, codes)
        assert all(r.content == b"" for r in answers if r.status_code == 204)
        body = dav.get(path).content
        assert body.startswith(b"version ")
        # the last switch won: its ETag is the file's
        assert dav.head(path).headers["etag"] in {r.headers["etag"] for r in answers}


def test_mkcol_of_an_existing_folder_as_wsgidav_answers(dav_twin: TwinProcess,
                                                         dav: httpx.Client) -> None:
    """rclone's MKCOL before each upload: 405 from the fast path, as wsgidav answers it."""
    assert dav.request("MKCOL", "/dav/made").status_code == 201
    fast = dav.request("MKCOL", "/dav/made")
    slow = dav.request("MKCOL", "/dav/made", headers={"If": "(<urn:uuid:no-such-lock>)"})
    assert fast.status_code == slow.status_code == 405

    def page(r: httpx.Response) -> str:  # wsgidav's status page, less its time stamp
        return re.sub(r"\d\d\d\d-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?", "T", r.text)
    assert page(fast) == page(slow)

    def same(r: httpx.Response) -> dict[str, str]:
        return {k: v for k, v in r.headers.items() if k not in ("date", "connection")}
    assert same(fast) == same(slow)
    dav.put("/dav/made/file.txt", content=b"f")
    assert dav.request("MKCOL", "/dav/made/file.txt").status_code == 405  # a file is mapped too
    assert dav.request("MKCOL", "/dav/made", content=b"<x/>").status_code == 415
    assert dav.request("MKCOL", "/dav/made", headers={"Depth": "1"}).status_code == 400
    with httpx.Client(base_url=dav_twin.url, verify=False) as anon:
        assert anon.request("MKCOL", "/dav/made").status_code == 401
        assert anon.request("MKCOL", "/dav/made",
                            auth=(dav_twin.login, "wrong")).status_code == 401


def _responses(xml: str) -> dict[str, str]:
    """href -> that member's part of a multistatus."""
    parts = xml.split("<ns0:response>")[1:]
    return {p.split("<ns0:href>")[1].split("</ns0:href>")[0]: p for p in parts}


def test_listing_shows_each_members_own_properties_and_locks(dav: httpx.Client) -> None:
    """PROPFIND Depth: 1 reads dead properties for all members at once and locks from
    memory (issue 20): each member still shows its own, and changes show at once."""
    from tests.protocols.webdav.test_fastput import LOCK_BODY
    assert dav.request("MKCOL", "/dav/listed").status_code == 201
    for i in range(30):
        dav.put(f"/dav/listed/f{i:02d}.txt", content=b"x" * i)
    for i in (3, 17):
        body = (f'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z">'
                f"<D:set><D:prop><Z:colour>c{i}</Z:colour></D:prop></D:set>"
                f"</D:propertyupdate>").encode()
        assert dav.request("PROPPATCH", f"/dav/listed/f{i:02d}.txt",
                           content=body).status_code == 207
    r = dav.request("LOCK", "/dav/listed/f05.txt", content=LOCK_BODY,
                    headers={"Depth": "0", "Timeout": "Second-600"})
    assert r.status_code == 200, r.text
    token = r.headers["lock-token"].strip("<>")
    listing = _responses(dav.request("PROPFIND", "/dav/listed/", headers={"Depth": "1"}).text)
    assert len(listing) == 31
    for i in range(30):
        part = listing[f"/dav/listed/f{i:02d}.txt"]
        assert (f">c{i}<" in part) == (i in (3, 17)), (i, part)
        assert ("colour" in part) == (i in (3, 17))
        assert (token in part) == (i == 5), (i, part)
        assert f"<ns0:getcontentlength>{i}</ns0:getcontentlength>" in part
    assert dav.request("UNLOCK", "/dav/listed/f05.txt",
                       headers={"Lock-Token": f"<{token}>"}).status_code == 204
    listing = _responses(dav.request("PROPFIND", "/dav/listed/", headers={"Depth": "1"}).text)
    assert token not in listing["/dav/listed/f05.txt"]
    assert dav.put("/dav/listed/f05.txt", content=b"unlocked").status_code == 204
