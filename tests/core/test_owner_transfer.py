"""The owner's import/export API (core/owner/transfer.py): token first, bounded bodies."""

from __future__ import annotations

import json

import httpx
from starlette.applications import Starlette

from core.owner import transfer as local_transfer
from core.service import Service

TOKEN = "t" * 43


def client(svc: Service, token: str | None = TOKEN) -> httpx.AsyncClient:
    svc.owner_token.value = TOKEN
    app = Starlette(routes=local_transfer.routes(svc))
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                             base_url=f"http://test{local_transfer.LOCAL_TRANSFER}",
                             headers=headers)


def framed(items: list[tuple[str, bytes]]) -> bytes:
    head = {"items": [{"key": k, "flags": ["\\Seen", "bad flag("], "date": 1.6e9,
                       "size": len(d)} for k, d in items]}
    return json.dumps(head).encode() + b"\n" + b"".join(d for _, d in items)


async def test_without_the_token_nothing_is_read(service: tuple[Service, str]) -> None:
    svc, _ = service
    async with client(svc, token="wrong") as http:
        resp = await http.post("/import", params={"folder": "X", "source": "s"}, content=b"x")
        assert resp.status_code == 403
        assert (await http.get("/folders")).status_code == 403


async def test_a_batch_is_filed_once_and_bodies_come_back(service: tuple[Service, str]) -> None:
    svc, login = service
    msgs = [("k1", b"Subject: one\n\nbody\n"), ("k2", b"Subject: two\n\nbody\n")]
    async with client(svc) as http:
        params = {"folder": "Imported/Old", "source": "test", "login": login}
        resp = await http.post("/import", params=params, content=framed(msgs))
        assert resp.json() == {"added": 2, "bytes": 44, "skipped": []}
        resp = await http.post("/import", params=params, content=framed(msgs))
        assert resp.json()["added"] == 0
        known = await http.post("/known", params={"login": login},
                                json={"source": "test", "keys": ["k1", "k3"]})
        assert known.json() == {"known": ["k1"]}
        listed = (await http.get("/messages", params={"folder": "Imported/Old",
                                                      "login": login})).json()
        assert [(uid, flags) for uid, _, _, flags in listed] == [(1, ["\\Seen"]), (2, ["\\Seen"])]
        resp = await http.post("/bodies", params={"folder": "Imported/Old", "login": login},
                               json={"uids": [2, 1]})
        head, _, rest = resp.content.partition(b"\n")
        assert json.loads(head) == {"sizes": [22, 22]}
        assert rest == b"Subject: two\r\n\r\nbody\r\nSubject: one\r\n\r\nbody\r\n"


async def test_bodies_over_the_bound_and_lying_sizes_are_refused(
        service: tuple[Service, str]) -> None:
    svc, _ = service
    async with client(svc) as http:
        params = {"folder": "X", "source": "s"}
        limit = max(local_transfer.BATCH_BYTES, svc.config.int("smtp.max_message_size"))
        resp = await http.post("/import", params=params,
                               headers={"content-length": str(limit + 2 * local_transfer.MAX_JSON)},
                               content=b"x" * 10)
        assert resp.status_code == 400 and "over" in resp.json()["message"]
        lying = json.dumps({"items": [{"key": "k", "date": 0, "size": 10**9}]}).encode() + b"\nab"
        resp = await http.post("/import", params=params, content=lying)
        assert resp.status_code == 400 and "sizes" in resp.json()["message"]
        resp = await http.post("/import", params=params, content=b"no header line")
        assert resp.status_code == 400
        resp = await http.post("/bodies", params={"folder": "INBOX"},
                               json={"uids": list(range(local_transfer.MAX_UIDS + 1))})
        assert resp.status_code == 400
        resp = await http.get("/folders", params={"login": "nobody@nowhere"})
        assert resp.status_code == 404
