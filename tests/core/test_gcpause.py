"""``core.gcpause``: the collector is off inside, back after the last pause."""

from __future__ import annotations

import gc
import threading

import pytest

from core import gcpause


def test_nested_and_overlapping_pauses_resume_once_at_the_end() -> None:
    assert gc.isenabled()
    inner_entered, outer_may_end = threading.Event(), threading.Event()

    def other() -> None:
        with gcpause.paused():
            inner_entered.set()
            outer_may_end.wait(5)

    with gcpause.paused():
        assert not gc.isenabled()
        t = threading.Thread(target=other)
        t.start()
        inner_entered.wait(5)
    assert not gc.isenabled()  # the other thread's pause is still on
    outer_may_end.set()
    t.join(5)
    assert gc.isenabled()


def test_an_error_inside_ends_the_pause() -> None:
    with pytest.raises(ValueError), gcpause.paused():
        raise ValueError
    assert gc.isenabled()


def test_a_collector_off_before_stays_off() -> None:
    gc.disable()
    try:
        with gcpause.paused():
            pass_through = gc.isenabled()
        assert not pass_through and not gc.isenabled()
    finally:
        gc.enable()
