"""What ``twin serve`` sets up for itself before listening (#15.9)."""

from __future__ import annotations

import os
import platform
import resource
import socket
import ssl
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.tools import require
from tests.twins import TwinProcess


@pytest.fixture
def low_nofile() -> Iterator[int]:
    """A soft open-files limit below the hard one, inherited by the twin started next."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    require(hard == resource.RLIM_INFINITY or hard > 512,
            f"hard RLIMIT_NOFILE is {hard}: nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    try:
        yield hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_serve_raises_the_open_files_limit_to_the_hard_one(
        low_nofile: int, twins: Callable[..., TwinProcess]) -> None:
    alice = twins("alice")
    assert alice.proc is not None
    limits = open(f"/proc/{alice.proc.pid}/limits").read()  # noqa: SIM115
    line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    assert soft == hard, line
    assert soft == ("unlimited" if low_nofile == resource.RLIM_INFINITY else str(low_nofile))


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_https_refuses_tls_below_1_2(twins: Callable[..., TwinProcess]) -> None:
    """RFC 8996. Python's default context is already 1.2; the twin no longer relies on it."""
    alice = twins("alice")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection(("127.0.0.1", alice.port("https")), timeout=10) as raw, \
            pytest.raises(ssl.SSLError):
        ctx.wrap_socket(raw)
    ok = ssl.create_default_context()
    ok.check_hostname = False
    ok.verify_mode = ssl.CERT_NONE
    ok.minimum_version = ok.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", alice.port("https")), timeout=10) as raw, \
            ok.wrap_socket(raw) as tls:
        assert tls.version() == "TLSv1.2"


ARENA = 64 * 1024 * 1024  # glibc's HEAP_MAX_SIZE on 64-bit: what every extra arena reserves


def malloc_arenas(pid: int) -> int:
    """glibc arenas besides the main one (the ``[heap]``): each is an anonymous
    mapping of exactly ``ARENA`` bytes aligned to ``ARENA``, its unused tail
    mapped without access (thread stacks start with their guard page instead)."""
    rows = []
    for line in open(f"/proc/{pid}/maps").read().splitlines():  # noqa: SIM115
        fields = line.split()
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        rows.append((lo, hi, fields[1], fields[5] if len(fields) > 5 else ""))
    count = 0
    for i, (lo, hi, perm, name) in enumerate(rows):
        if lo % ARENA or name or not perm.startswith("rw"):
            continue
        if i + 1 < len(rows) and rows[i + 1][0] == hi and rows[i + 1][2].startswith("---"):
            hi = rows[i + 1][1]
        count += hi - lo == ARENA
    return count


def test_serve_allocates_from_one_malloc_arena(twins: Callable[..., TwinProcess]) -> None:
    """``tune_malloc`` runs before any thread starts. Run when the store opened, the
    threads started before had an arena each (four, by then), which the store's
    threads then shared round-robin: a 1 GiB PUT+GET peaked 36 MiB higher."""
    require(platform.libc_ver()[0] == "glibc", "not glibc")
    alice = twins("alice")
    assert alice.proc is not None
    with httpx.Client(base_url=alice.url, verify=False, timeout=60,
                      auth=(alice.login, alice.password)) as dav:
        assert dav.put("/dav/f.bin", content=os.urandom(20 * 1024 * 1024)).status_code == 201
        assert len(dav.get("/dav/f.bin").content) == 20 * 1024 * 1024
    assert malloc_arenas(alice.proc.pid) == 0
