"""A fixed-seed slice of ``bench/fuzz.py``: a few thousand mutated inputs per
target, none may crash (raise outside the parser's refusals) or hang."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench_fuzz() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_fuzz", ROOT / "bench" / "fuzz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_fuzz"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


fuzz = _bench_fuzz()
INPUTS = {"ack": 1500}  # signs and encrypts each input: slower per input


@pytest.mark.parametrize("name", [n for n in fuzz.TARGETS if n not in fuzz.OUT_OF_SLICE])
def test_fixed_seed_slice(name: str) -> None:
    t = fuzz.TARGETS[name]()
    result = fuzz.fuzz(t, inputs=INPUTS.get(name, 4000), seed=1234)
    assert result.inputs == INPUTS.get(name, 4000)
    assert (result.crashes, result.hangs) == (0, 0), result.examples
    assert result.corpus > len(t.seeds) or name == "ack", "the mutations found nothing new"


def test_a_crash_is_counted() -> None:
    """The harness itself: an exception outside the allowed ones is a crash."""
    def run(data: bytes) -> None:
        if data.count(b"\x00") > 2:
            raise KeyError("boom")
        if data.startswith(b"x"):
            raise ValueError("refused")

    t = fuzz.Target("self", run, [b"x\x00\x00", b"abc"], (ValueError,), [b"\x00"])
    result = fuzz.fuzz(t, inputs=2000, seed=1)
    assert result.crashes > 0 and "KeyError" in result.examples[0]
