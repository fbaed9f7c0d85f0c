"""Fixtures for the storage tests: stores on temp dirs and ways to hurt their backends."""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from storage import Store, open_store
from storage.share import HEADER_BYTES

MASTER = bytes(range(32))
METADATA = bytes(range(32, 64))
KiB = 1024
MiB = 1024 * KiB


def local_specs(root: Path, count: int = 6, dead: frozenset[int] | set[int] = frozenset()
                ) -> list[dict[str, str]]:
    """``count`` local backends under ``root``; those in ``dead`` point at a plain file."""
    specs = []
    for i in range(count):
        location = str(root / f"b{i}")
        if i in dead:
            location = str(root / "not-a-directory")
            (root / "not-a-directory").write_bytes(b"a dead disk")
        specs.append({"name": f"b{i}", "kind": "local", "location": location})
    return specs


StoreFactory = Callable[..., Store]


def spawn_store_child(code: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    """Run ``code`` in a child Python that opens the store of ``tmp_path`` (to be killed).

    Its argv: data dir, backend specs as JSON, master and metadata keys in hex.
    """
    specs = local_specs(tmp_path / "shards")
    root = Path(__file__).parents[2]
    return subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "data"), json.dumps(specs), MASTER.hex(),
         METADATA.hex()],
        stdout=subprocess.PIPE, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[StoreFactory]:
    """``make_store(k=, n=, segment_size=, dead=, specs=)``: a store on ``tmp_path``."""
    opened: list[Store] = []

    def make(*, k: int = 4, n: int = 6, segment_size: int = 64 * KiB,
             dead: frozenset[int] | set[int] = frozenset(),
             specs: list[dict[str, str]] | None = None, data_dir: Path | None = None,
             master_key: bytes = MASTER, metadata_key: bytes = METADATA,
             **kw: object) -> Store:
        backends = specs if specs is not None else local_specs(tmp_path / "shards", dead=dead)
        store = open_store(data_dir or tmp_path / "data", k=k, n=n, segment_size=segment_size,
                           backends=backends, master_key=master_key, metadata_key=metadata_key,
                           **kw)  # type: ignore[arg-type]
        opened.append(store)
        return store

    (tmp_path / "shards").mkdir()
    yield make
    for store in opened:
        if not store._closed:
            store.engine.cpu.shutdown(wait=False)
            store.engine.io.shutdown(wait=False)


def pseudo_random(seed: int, size: int, chunk: int = MiB) -> Iterator[bytes]:
    """Deterministic bytes, generated piecewise so multi-GiB streams cost no memory."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        n = min(chunk, left)
        yield rng.randbytes(n)
        left -= n


async def astream(pieces: Iterator[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def digest_of(pieces: Iterator[bytes]) -> bytes:
    h = hashlib.blake2b()
    for piece in pieces:
        h.update(piece)
    return h.digest()


async def digest_stream(chunks: AsyncIterator[bytes] | Awaitable[object]) -> tuple[bytes, int]:
    h = hashlib.blake2b()
    total = 0
    async for chunk in chunks:  # type: ignore[union-attr]
        h.update(chunk)
        total += len(chunk)
    return h.digest(), total


def share_location(backend_dir: Path, key: str) -> tuple[Path, int, int]:
    """(data file, offset, length) of a share inside a local backend."""
    db = sqlite3.connect(backend_dir / "index.sqlite")
    try:
        row = db.execute("SELECT file, offset, length FROM shards WHERE key=?", (key,)).fetchone()
    finally:
        db.close()
    assert row is not None, f"{key} not in {backend_dir}"
    return backend_dir / "data" / f"{row[0]:08d}.dat", row[1], row[2]


def flip_byte(backend_dir: Path, key: str, where: int = HEADER_BYTES + 10) -> None:
    path, offset, length = share_location(backend_dir, key)
    assert where < length
    with open(path, "r+b") as f:
        f.seek(offset + where)
        byte = f.read(1)
        f.seek(offset + where)
        f.write(bytes([byte[0] ^ 0x40]))
