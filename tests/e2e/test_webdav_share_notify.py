"""share.notify end to end: alice shares, bob's /dav/shared/ lists her at once; revoke hides her.

Two real twins on one phonebook; the share goes through the real CLI (``twin
share`` / ``twin unshare``), the notification through alice's durable outbox
and bob's peer API, and both sides are checked with PROPFIND over HTTPS.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable

import httpx

from tests.twins import TwinProcess, twin_cli

SHARED_WITH = b"""<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:T="urn:twin">
<D:prop><T:shared-with/></D:prop></D:propfind>"""
NS = {"D": "DAV:", "T": "urn:twin"}


def client(twin: TwinProcess) -> httpx.Client:
    return httpx.Client(base_url=twin.url, verify=False, timeout=60,
                        auth=(twin.login, twin.password))


def shared_names(c: httpx.Client) -> list[str]:
    """Member names of /dav/shared/ from a Depth: 1 PROPFIND."""
    r = c.request("PROPFIND", "/dav/shared/", headers={"Depth": "1"})
    assert r.status_code == 207, r.text
    hrefs = [h.text or "" for h in ET.fromstring(r.content).iter("{DAV:}href")]
    return sorted(h.rstrip("/").rsplit("/", 1)[-1] for h in hrefs
                  if h.rstrip("/") != "/dav/shared")


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.3)
    return check()


def grantees(c: httpx.Client, path: str, depth: str = "0") -> dict[str, list[tuple[str, str]]]:
    """href -> [(grantee, rights)] from {urn:twin}shared-with."""
    r = c.request("PROPFIND", path, content=SHARED_WITH, headers={"Depth": depth})
    assert r.status_code == 207, r.text
    out: dict[str, list[tuple[str, str]]] = {}
    for resp in ET.fromstring(r.content).iter("{DAV:}response"):
        href = resp.findtext("D:href", namespaces=NS) or ""
        prop = resp.find(".//T:shared-with", NS)
        assert prop is not None, r.text
        out[href] = [(g.text or "", g.get("rights", "")) for g in prop.findall("T:grantee", NS)]
    return out


def test_share_notify_lists_and_revoke_hides(twins: Callable[..., TwinProcess]) -> None:
    alice, bob = twins("alice"), twins("bob")
    with client(alice) as a:
        assert a.request("MKCOL", "/dav/photos").status_code == 201
        assert a.put("/dav/photos/cat.jpg", content=b"meow").status_code == 201
        assert a.put("/dav/notes.txt", content=b"private").status_code == 201
        assert grantees(a, "/dav/photos/cat.jpg") == {"/dav/photos/cat.jpg": []}

    with client(bob) as b:
        assert shared_names(b) == []  # nothing told, nothing asked

    out = twin_cli(alice.data, "share", "/photos/", "--with", "bob", "--rights", "rw")
    assert "notifying bob" in out.stdout, out.stdout + out.stderr

    with client(bob) as b:
        # no request to alice was made before: only the notification can list her
        assert wait_for(lambda: shared_names(b) == ["alice"]), shared_names(b)
        r = b.request("PROPFIND", "/dav/shared/alice/photos/", headers={"Depth": "1"})
        assert r.status_code == 207 and "cat.jpg" in r.text

    with client(alice) as a:
        found = grantees(a, "/dav/photos/", depth="1")
        assert found["/dav/photos/"] == [("bob", "read,write")]
        assert found["/dav/photos/cat.jpg"] == [("bob", "read,write")]
        assert grantees(a, "/dav/notes.txt") == {"/dav/notes.txt": []}
        # protected: it says what the ACL holds, it is not set by PROPPATCH
        r = a.request("PROPPATCH", "/dav/photos/cat.jpg", content=b"""<?xml version="1.0"?>
<D:propertyupdate xmlns:D="DAV:" xmlns:T="urn:twin"><D:set><D:prop>
<T:shared-with>carol</T:shared-with></D:prop></D:set></D:propertyupdate>""")
        assert r.status_code == 207 and "403" in r.text, r.text
        assert grantees(a, "/dav/photos/cat.jpg") == {
            "/dav/photos/cat.jpg": [("bob", "read,write")]}

    twin_cli(alice.data, "unshare", "/photos/", "--with", "bob")
    with client(bob) as b:
        assert wait_for(lambda: shared_names(b) == []), shared_names(b)
        assert b.request("PROPFIND", "/dav/shared/alice/photos/",
                         headers={"Depth": "1"}).status_code == 404
    with client(alice) as a:
        assert grantees(a, "/dav/photos/cat.jpg") == {"/dav/photos/cat.jpg": []}


def test_notify_from_a_stopped_twin_is_hidden(twins: Callable[..., TwinProcess]) -> None:
    """A twin that told us it shares but no longer answers is not listed."""
    alice, bob = twins("alice"), twins("bob")
    with client(alice) as a:
        assert a.request("MKCOL", "/dav/docs").status_code == 201
    twin_cli(alice.data, "share", "/docs/", "--with", "bob")
    with client(bob) as b:
        assert wait_for(lambda: shared_names(b) == ["alice"])
        alice.stop()
        time.sleep(5.5)  # the listing cache (LIST_TTL) expires
        assert shared_names(b) == []
