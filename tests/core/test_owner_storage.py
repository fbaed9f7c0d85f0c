"""The owner's storage API on a real running twin: token first, then exact bytes.

One twin (segments of 64 KiB, so a small object spans several) serves every
test of this module over real HTTPS, its certificate pinned as the CA.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core import tls
from core.owner import TOKEN_FILE
from core.owner.storage import LOCAL_STORAGE, RangeNotSatisfiable, byte_range
from tests.twins import TwinProcess

SEGMENT = 64 * 1024


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwinProcess]:
    alice = TwinProcess.create(tmp_path_factory.mktemp("local-storage"), "alice",
                               sets=[f"storage.segment_size={SEGMENT}"]).start()
    yield alice
    alice.stop()


def client(twin: TwinProcess, token: str | None) -> httpx.Client:
    headers = {} if token is None else {"authorization": f"Bearer {token}".strip().encode()}
    return httpx.Client(base_url=twin.url + LOCAL_STORAGE, headers=headers, timeout=30,
                        verify=tls.client_context(twin.data))


def owner(twin: TwinProcess) -> httpx.Client:
    return client(twin, (twin.data / TOKEN_FILE).read_text())


def listing(api: httpx.Client) -> list[dict[str, Any]]:
    resp = api.get("/objects")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/x-ndjson"
    return [json.loads(line) for line in resp.text.splitlines()]


def test_without_the_local_token_every_route_is_refused_and_nothing_changes(
        twin: TwinProcess) -> None:
    with owner(twin) as api:
        ref = api.put("/objects", content=b"keep me").json()["ref"]
        before = listing(api)
        checked_before = api.post("/verify").json()["objects_checked"]
    good = (twin.data / TOKEN_FILE).read_text()
    for token in (None, "", "wrong", good[:-1], good + "x", "é"):
        with client(twin, token) as intruder:
            for method, path, body in (
                    ("PUT", "/objects", b"not stored"), ("GET", "/objects", None),
                    ("GET", f"/objects/{ref}", None), ("DELETE", f"/objects/{ref}", None),
                    ("GET", "/status", None), ("POST", "/verify?sample=1&clean=1", None),
                    ("POST", "/repair", None), ("POST", "/backup", None),
                    ("GET", "/no/such/route", None)):
                resp = intruder.request(method, path, content=body)
                assert resp.status_code == 403, (token, method, path, resp.text)
                assert resp.json() == {"code": "forbidden", "message": "bad local token"}
    with owner(twin) as api:
        assert listing(api) == before  # no put, no delete, no twin.db backup object
        assert api.get(f"/objects/{ref}").content == b"keep me"
        assert api.post("/verify").json()["objects_checked"] == checked_before


def test_the_publish_endpoint_refuses_a_wrong_or_non_ascii_token(twin: TwinProcess) -> None:
    for token in ("wrong", "é"):
        with httpx.Client(base_url=twin.url, timeout=30, verify=tls.client_context(twin.data),
                          headers={"authorization": f"Bearer {token}".encode()}) as intruder:
            resp = intruder.put("/twin/v1/local/objects?path=/x", content=b"no")
            assert resp.status_code == 403 and resp.json()["code"] == "forbidden"


def test_local_publish_and_send_answer_core_errors_by_their_code(twin: TwinProcess) -> None:
    """Issue #19.5: every core error was a 400 on these routes; now the peer table's
    status for its code (core.peer.errors), so a client can tell them apart."""
    token = (twin.data / TOKEN_FILE).read_text()
    with httpx.Client(base_url=twin.url, timeout=30, verify=tls.client_context(twin.data),
                      headers={"authorization": f"Bearer {token}"}) as api:
        assert api.put("/twin/v1/local/objects?path=/pub/a.txt", content=b"a").status_code == 200
        resp = api.put("/twin/v1/local/objects?path=/pub", content=b"onto a folder")
        assert resp.status_code == 409 and resp.json()["code"] == "conflict", resp.text
        resp = api.put("/twin/v1/local/objects?path=/pub/../x", content=b"x")
        assert resp.status_code == 400 and resp.json()["code"] == "invalid", resp.text
        resp = api.post("/twin/v1/local/send", json={"to": "nobody-known", "text": "hi"})
        assert resp.status_code == 404 and resp.json()["code"] == "not_found", resp.text


def test_a_streamed_put_reads_back_whole_and_in_exact_ranges(twin: TwinProcess) -> None:
    data = os.urandom(3 * SEGMENT + 1234)  # four segments, the last one short

    def chunks() -> Iterator[bytes]:  # a streamed (chunked) body, as the CLI sends it
        for pos in range(0, len(data), 10_000):
            yield data[pos:pos + 10_000]

    with owner(twin) as api:
        ref = api.put("/objects", content=chunks()).json()["ref"]
        assert ref.endswith(f":{len(data)}")
        whole = api.get(f"/objects/{ref}")
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["accept-ranges"] == "bytes"
        for header, start, end in (
                (f"bytes={SEGMENT - 10}-{2 * SEGMENT + 9}", SEGMENT - 10, 2 * SEGMENT + 10),
                ("bytes=0-0", 0, 1),
                (f"bytes={len(data) - 5}-", len(data) - 5, len(data)),
                ("bytes=-1234", len(data) - 1234, len(data)),
                (f"bytes=100-{10 * len(data)}", 100, len(data))):  # clamped to the end
            part = api.get(f"/objects/{ref}", headers={"range": header})
            assert part.status_code == 206, header
            assert part.content == data[start:end], header
            assert part.headers["content-range"] == f"bytes {start}-{end - 1}/{len(data)}"
        past = api.get(f"/objects/{ref}", headers={"range": f"bytes={len(data)}-"})
        assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(data)}"
        ignored = api.get(f"/objects/{ref}", headers={"range": "bytes=0-1,5-6"})
        assert ignored.status_code == 200 and ignored.content == data
        assert api.delete(f"/objects/{ref}").json() == {"deleted": ref}


def test_unknown_and_malformed_refs_get_json_errors(twin: TwinProcess) -> None:
    with owner(twin) as api:
        for method in ("GET", "DELETE"):
            missing = api.request(method, f"/objects/{'0' * 32}:5")
            assert missing.status_code == 404, method
            assert missing.json()["code"] == "not_found"
            bad = api.request(method, "/objects/not-a-ref")
            assert bad.status_code == 400 and bad.json()["code"] == "invalid", method
        assert api.post("/verify?sample=lots").json()["code"] == "invalid"


def test_status_verify_repair_backup_report_as_the_cli_prints_them(twin: TwinProcess) -> None:
    with owner(twin) as api:
        status = api.get("/status").json()
        assert (status["k"], status["n"], status["segment_size"]) == (4, 6, SEGMENT)
        assert [b["name"] for b in status["backends"]] == [f"local{i}" for i in range(6)]
        assert all(b["health"]["reachable"] for b in status["backends"])
        report = api.post("/verify", params={"sample": "1"}).json()
        assert report["problems"] == [] and report["unreadable"] == []
        assert api.post("/repair").json()["unrecoverable"] == []
        assert api.post("/backup").json()["name"].startswith("backup/")


@pytest.mark.parametrize(("header", "size", "expected"), [
    (None, 10, None), ("bytes=2-4", 10, (2, 5)), ("bytes=2-", 10, (2, 10)),
    ("bytes=-3", 10, (7, 10)), ("bytes=-30", 10, (0, 10)), ("bytes=8-99", 10, (8, 10)),
    ("bytes=5-2", 10, None), ("bytes=-", 10, None), ("items=0-1", 10, None),
    ("bytes=0-1,3-4", 10, None), ("bytes=x-1", 10, None)])
def test_byte_range_follows_rfc_9110(header: str | None, size: int,
                                     expected: tuple[int, int] | None) -> None:
    assert byte_range(header, size) == expected


@pytest.mark.parametrize(("header", "size"), [("bytes=10-", 10), ("bytes=-0", 10),
                                              ("bytes=0-", 0), ("bytes=-5", 0)])
def test_a_range_past_the_end_is_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        byte_range(header, size)


def test_the_token_file_is_the_owners_alone(twin: TwinProcess) -> None:
    assert (Path(twin.data) / TOKEN_FILE).stat().st_mode & 0o077 == 0
