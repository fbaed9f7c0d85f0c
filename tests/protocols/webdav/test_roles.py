"""Roles over WebDAV (#15.8): a login other than the owner's sees only what it was granted.

One real twin: the owner stores files, ``twin mail users add`` makes a second
login, ``twin share ... --with user:LOGIN`` grants it read then read-write.
Every request goes over the twin's HTTPS socket, as a client's would.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import httpx
import pytest

from tests.twins import TwinProcess, twin_cli

PROPFIND = b'<?xml version="1.0"?><propfind xmlns="DAV:"><allprop/></propfind>'


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwinProcess]:
    t = TwinProcess.create(tmp_path_factory.mktemp("roles"), "alice").start()
    yield t
    t.stop()


def _client(twin: TwinProcess, login: str, password: str) -> httpx.Client:
    return httpx.Client(base_url=twin.url, verify=False, timeout=60, auth=(login, password))


@pytest.fixture(scope="module")
def bob(twin: TwinProcess) -> tuple[str, str]:
    login = "bob@" + twin.login.split("@", 1)[1]
    out = json.loads(twin_cli(twin.data, "mail", "users", "add", login, "--json").stdout)
    return str(out["login"]), str(out["password"])


def _share(twin: TwinProcess, path: str, who: str, rights: str) -> None:
    twin_cli(twin.data, "share", path, "--with", who, "--rights", rights)


def _propfind(c: httpx.Client, path: str, depth: str = "1") -> httpx.Response:
    return c.request("PROPFIND", path, content=PROPFIND, headers={"Depth": depth})


def _hrefs(response: httpx.Response) -> set[str]:
    assert response.status_code == 207, response.text
    return {h.text or "" for h in ET.fromstring(response.content).iter("{DAV:}href")}


def test_second_login_gets_only_what_is_granted(twin: TwinProcess,
                                                bob: tuple[str, str]) -> None:
    owner = _client(twin, twin.login, twin.password)
    other = _client(twin, *bob)
    with owner, other:
        assert owner.request("MKCOL", "/dav/docs").status_code == 201
        assert owner.request("MKCOL", "/dav/private").status_code == 201
        assert owner.put("/dav/docs/a.txt", content=b"shared words").status_code == 201
        assert owner.put("/dav/private/secret.txt", content=b"owner only").status_code == 201

        # no grant: nothing of the owner's, neither read nor written nor deleted
        assert _hrefs(_propfind(other, "/dav/")) == {"/dav/"}  # not even /dav/shared/
        assert _hrefs(_propfind(other, "/dav/", "infinity")) == {"/dav/"}
        assert _propfind(other, "/dav/docs/").status_code == 404
        assert other.get("/dav/docs/a.txt").status_code == 404
        assert other.get("/dav/private/secret.txt").status_code == 404
        assert other.put("/dav/docs/a.txt", content=b"x").status_code == 403
        assert other.put("/dav/new.txt", content=b"x").status_code == 403
        assert other.delete("/dav/private/secret.txt").status_code == 403
        assert other.delete("/dav/docs").status_code == 403
        assert other.request("MKCOL", "/dav/mine").status_code == 403
        assert _propfind(other, "/dav/shared/").status_code == 403
        assert owner.get("/dav/private/secret.txt").content == b"owner only"

        # the owner's usage and free space are the owner's: not shown to another login
        assert b"quota-used-bytes" in _propfind(owner, "/dav/", "0").content
        assert b"quota-" not in _propfind(other, "/dav/", "0").content

        # read grant on /docs/: GET and list it, but no write, no delete, nothing else
        _share(twin, "/docs/", f"user:{bob[0]}", "r")
        assert other.get("/dav/docs/a.txt").content == b"shared words"
        assert _hrefs(_propfind(other, "/dav/")) == {"/dav/", "/dav/docs/"}
        assert _hrefs(_propfind(other, "/dav/docs/")) == {"/dav/docs/", "/dav/docs/a.txt"}
        assert b"quota-" not in _propfind(other, "/dav/docs/").content
        assert other.put("/dav/docs/a.txt", content=b"overwritten").status_code == 403
        assert other.put("/dav/docs/b.txt", content=b"new").status_code == 403
        assert other.delete("/dav/docs/a.txt").status_code == 403
        assert other.request("MOVE", "/dav/docs/a.txt", headers={
            "Destination": f"{twin.url}/dav/docs/moved.txt"}).status_code == 403
        assert other.request("COPY", "/dav/docs/a.txt", headers={
            "Destination": f"{twin.url}/dav/private/copied.txt"}).status_code == 403
        assert other.get("/dav/private/secret.txt").status_code == 404
        assert owner.get("/dav/docs/a.txt").content == b"shared words"

        # read-write grant: writes and deletes inside /docs/, still nothing outside it
        _share(twin, "/docs/", f"user:{bob[0]}", "rw")
        assert other.put("/dav/docs/b.txt", content=b"from bob").status_code == 201
        assert other.put("/dav/docs/a.txt", content=b"edited").status_code == 204
        assert other.request("MOVE", "/dav/docs/b.txt", headers={
            "Destination": f"{twin.url}/dav/docs/c.txt"}).status_code == 201
        assert other.request("MOVE", "/dav/docs/c.txt", headers={
            "Destination": f"{twin.url}/dav/private/c.txt"}).status_code == 403
        assert other.delete("/dav/docs/c.txt").status_code == 204
        assert other.request("MKCOL", "/dav/docs/sub").status_code == 201
        assert other.delete("/dav/docs/sub").status_code == 204
        assert other.delete("/dav/docs").status_code == 403  # the granted folder stays
        assert other.request("MOVE", "/dav/docs", headers={
            "Destination": f"{twin.url}/dav/docs2"}).status_code == 403
        assert other.delete("/dav/private/secret.txt").status_code == 403
        assert other.put("/dav/private/x.txt", content=b"x").status_code == 403
        assert owner.get("/dav/docs/a.txt").content == b"edited"
        assert owner.get("/dav/private/secret.txt").content == b"owner only"

        # the owner is unaffected: everything, /shared/ included
        assert owner.put("/dav/private/secret.txt", content=b"v2").status_code == 204
        assert _propfind(owner, "/dav/shared/").status_code == 207
        assert {"/dav/private/", "/dav/shared/"} <= _hrefs(_propfind(owner, "/dav/"))


def test_grant_to_unknown_or_owner_login_refused(twin: TwinProcess) -> None:
    owner = _client(twin, twin.login, twin.password)
    with owner:
        assert owner.put("/dav/f.txt", content=b"x").status_code in (201, 204)
    nobody = twin_cli(twin.data, "share", "/f.txt", "--with", "user:nobody@example.org",
                      check=False)
    assert nobody.returncode != 0 and "no login" in nobody.stderr
    itself = twin_cli(twin.data, "share", "/f.txt", "--with", f"user:{twin.login}",
                      check=False)
    assert itself.returncode != 0 and "owner" in itself.stderr


def test_users_list_their_roles(twin: TwinProcess, bob: tuple[str, str]) -> None:
    listed = json.loads(twin_cli(twin.data, "mail", "users", "--json").stdout)
    assert {u["login"]: u["role"] for u in listed} == {twin.login: "owner", bob[0]: "user"}
