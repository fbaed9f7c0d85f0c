"""``twin share`` / ``unshare`` / ``shares``: grants that mean what they say.

A grantee must be a twin the phonebook knows (or a circle, or public), as for
``contacts add``; a path must exist; revoking a prefix revokes what lies below
it. The commands run as separate processes against data dirs, as a user runs
them (no twin needs to be serving: grants live in twin.db).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.twins import TwinProcess, twin_cli


@pytest.fixture
def alice(tmp_path: Path) -> TwinProcess:
    alice = TwinProcess.create(tmp_path, "alice")
    TwinProcess.create(tmp_path, "bob", phonebook=alice.phonebook)
    (tmp_path / "holiday.jpg").write_bytes(b"sunny")
    twin_cli(alice.data, "share", str(tmp_path / "holiday.jpg"), "--as", "/photos/holiday.jpg",
             "--with", "bob")
    return alice


def grants(twin: TwinProcess, *prefix: str) -> list[tuple[str, str]]:
    out = json.loads(twin_cli(twin.data, "shares", *prefix, "--json").stdout)
    return [(g["path"], g["grantee"]) for g in out["grants"]]


def test_sharing_with_a_twin_the_phonebook_does_not_know_is_refused(
        alice: TwinProcess, tmp_path: Path) -> None:
    typo = twin_cli(alice.data, "share", "/photos/", "--with", "bobb", check=False)
    assert typo.returncode != 0 and "no twin or circle named 'bobb'" in typo.stderr
    (tmp_path / "other.txt").write_text("x")
    stored = twin_cli(alice.data, "share", str(tmp_path / "other.txt"), "--as", "/other.txt",
                      "--with", "nosuchtwin", check=False)
    assert stored.returncode != 0
    assert "stored" not in stored.stdout  # refused before the file went into the store
    assert grants(alice) == [("/photos/holiday.jpg", "bob")]
    # circles and the public stay fine
    twin_cli(alice.data, "share", "/photos/", "--with", "public")
    assert ("/photos/", "public") in grants(alice)


def test_sharing_a_path_that_does_not_exist_is_refused(alice: TwinProcess) -> None:
    for path in ("/nope/", "/photos/nope.jpg", "/photos/holiday.jpg/"):
        got = twin_cli(alice.data, "share", path, "--with", "bob", check=False)
        assert got.returncode != 0, path
    assert grants(alice) == [("/photos/holiday.jpg", "bob")]


def test_unsharing_a_prefix_lists_and_revokes_the_grants_below_it(alice: TwinProcess) -> None:
    twin_cli(alice.data, "share", "/photos/", "--with", "bob")
    twin_cli(alice.data, "share", "/photos/", "--with", "public")
    assert sorted(grants(alice, "/photos/")) == [("/photos/", "bob"), ("/photos/", "public"),
                                                 ("/photos/holiday.jpg", "bob")]
    out = twin_cli(alice.data, "unshare", "/photos/", "--with", "bob").stdout
    assert "revoked /photos/ for bob" in out and "revoked /photos/holiday.jpg for bob" in out
    assert grants(alice) == [("/photos/", "public")]  # other grantees keep theirs
    again = twin_cli(alice.data, "unshare", "/photos/", "--with", "bob", check=False)
    assert again.returncode != 0 and "no grant" in again.stderr
