"""RFC 3501 date-time rendering (INTERNALDATE): every zone, every year."""

from __future__ import annotations

import calendar
import os
import random
import time
from collections.abc import Iterator

import pytest

from protocols.imap import render

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def reference(ts: float) -> bytes:
    """The grammar spelled out field by field (RFC 3501 §9 date-time)."""
    t = time.localtime(ts)
    off = abs(t.tm_gmtoff) // 60
    sign = "+" if t.tm_gmtoff >= 0 else "-"
    return (f'"{t.tm_mday:2d}-{MONTHS[t.tm_mon - 1]}-{t.tm_year:04d} {t.tm_hour:02d}:'
            f'{t.tm_min:02d}:{t.tm_sec:02d} {sign}{off // 60:02d}{off % 60:02d}"').encode()


@pytest.fixture(params=["UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham",
                        "Asia/Kathmandu", "Australia/Lord_Howe", "Europe/Amsterdam"])
def zone(request: pytest.FixtureRequest) -> Iterator[str]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    yield request.param
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def test_date_time_matches_the_grammar_in_every_zone(zone: str) -> None:
    rng = random.Random(7)
    stamps = [0.0, 1.5, 1_700_000_000.7, calendar.timegm((999, 5, 4, 3, 2, 1, 0, 0, 0)),
              *(rng.uniform(-2e9, 4e9) for _ in range(2000))]
    for ts in stamps:
        assert render.date_time(ts) == reference(ts), (zone, ts)


def test_date_time_across_offset_changes(zone: str) -> None:
    """Every 7 minutes 13 seconds over two years, through each DST change (hours
    where the offset changes are rendered from ``localtime``), and the 1930s,
    when Amsterdam's offset was +00:19:32 (not whole minutes)."""
    start = calendar.timegm((2023, 1, 1, 0, 0, 0, 0, 0, 0))
    stamps = [start + i * 433.25 for i in range(2 * 365 * 24 * 60 * 60 // 433)]
    stamps += [-1_200_000_000 + i * 3607.5 for i in range(3000)]
    for ts in stamps:
        assert render.date_time(ts) == reference(ts), (zone, ts)
