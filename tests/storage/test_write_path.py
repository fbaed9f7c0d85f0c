"""The big-put write path: parity coded in chunks, and big records out of the page cache."""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import zfec

from storage import erasure
from storage.backends.local import LocalBackend
from tests.tools import require

KiB = 1024
MiB = 1024 * KiB
CHUNK = erasure.PARITY_CHUNK


@pytest.mark.parametrize("size", [1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + CHUNK // 2])
@pytest.mark.parametrize(("k", "n"), [(4, 6), (3, 5), (2, 2)])
def test_parity_coded_in_chunks_is_zfecs_parity_of_the_whole_blocks(size: int, k: int,
                                                                    n: int) -> None:
    # shares already stored were coded a whole block at a time: chunking must not change
    # a byte, or repairs and degraded reads of old objects would decode garbage
    primaries = [os.urandom(size) for _ in range(k)]
    buf = bytearray(b"".join(primaries) + b"\xee" * (size * (n - k)))  # stale parity room
    payloads = erasure.encode(buf, k, n)
    whole = zfec.Encoder(k, n).encode(primaries, list(range(k, n)))
    assert [bytes(p) for p in payloads] == primaries + list(whole)
    assert all(p.obj is buf for p in payloads)  # views of the buffer: nothing allocated


def test_a_buffer_that_is_not_n_whole_blocks_is_refused() -> None:
    with pytest.raises(ValueError):
        erasure.encode(bytearray(4 * 100 + 1), 4, 6)


def _resident(path: Path) -> list[bool]:
    """Which pages of ``path`` are in the page cache (mincore over a shared mapping)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    size = path.stat().st_size
    pages = -(-size // mmap.PAGESIZE)
    vec = (ctypes.c_ubyte * pages)()
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        try:
            if libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
        finally:
            libc.munmap(ctypes.c_void_p(addr), size)
    finally:
        os.close(fd)
    return [bool(v & 1) for v in vec]


def _page_cache_obeys_dontneed(directory: Path) -> bool:
    probe = directory / "probe"
    with open(probe, "wb") as f:
        f.write(os.urandom(MiB))
        f.flush()
        os.fdatasync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    try:
        return not any(_resident(probe))
    finally:
        probe.unlink()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mincore and fadvise: Linux")
async def test_big_records_leave_the_page_cache_once_durable_and_small_ones_stay(
        tmp_path: Path) -> None:
    require(_page_cache_obeys_dontneed(tmp_path),
            "this filesystem keeps pages in memory whatever it is advised")
    with ThreadPoolExecutor(4) as pool:
        b = LocalBackend("l", tmp_path / "l", pool)
        big = [os.urandom(3 * MiB) for _ in range(3)]
        for i, value in enumerate(big):
            await b.put(f"s/big/0/{i}", [value])
        await b.put("s/small/0/0", [b"mail" * 1024])
        data = tmp_path / "l" / "data" / "00000001.dat"
        resident = _resident(data)
        big_pages = len(big) * 3 * MiB // mmap.PAGESIZE
        # the big records are durable and read back from disk; only the small record
        # written after them (the file's last page or two) is still in memory
        assert sum(resident[:big_pages]) == 0
        assert resident[-1]
        assert [await b.get(f"s/big/0/{i}") for i in range(3)] == big
        assert await b.get("s/small/0/0") == b"mail" * 1024
        await b.close()
