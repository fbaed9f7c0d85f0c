"""THREAD=REFERENCES on hostile references (protocols/imap/threads.py).

References are whatever a sender wrote: they can name each other in a loop,
or chain deeper than any real conversation. Threading must end, list every
message exactly once, and never link a container under its own descendant.
"""

from __future__ import annotations

import gc
import re
import time

from protocols.imap import threads
from protocols.imap.threads import MAX_DEPTH, Message, Node


def msg(num: int, message_id: str, parents: str = "", subject: str = "") -> Message:
    return Message(num, num, float(num), message_id, parents, subject or f"s{num}", False)


def listed(out: bytes) -> list[int]:
    return [int(n) for n in re.findall(rb"\d+", out)]


def depth(node: Node) -> int:
    return 1 + max((depth(c) for c in node.children), default=0)


def test_references_in_a_loop_end_and_list_each_message_once() -> None:
    roots = threads.thread([msg(1, "a", "b"), msg(2, "b", "c"), msg(3, "c", "a"),
                            msg(4, "d", "d")])  # and one naming itself
    assert sorted(listed(threads.render(roots))) == [1, 2, 3, 4]


def test_a_chain_deeper_than_the_bound_is_cut_not_followed() -> None:
    n = 3 * MAX_DEPTH
    chain = [msg(k, f"m{k}", " ".join(f"m{j}" for j in range(max(0, k - 20), k)),
                 subject="same")
             for k in range(1, n + 1)]
    start = time.monotonic()
    roots = threads.thread(chain)
    assert time.monotonic() - start < 5
    assert sorted(listed(threads.render(roots))) == list(range(1, n + 1))
    assert max(depth(r) for r in roots) <= MAX_DEPTH + 5  # not the chain's 600


def test_a_reply_lands_under_its_parent() -> None:
    roots = threads.thread([msg(1, "a"), msg(2, "b", "a"), msg(3, "c", "a b"), msg(4, "x")])
    assert threads.render(roots) == b"(1 2 3)(4)"


def test_many_threads_grouped_by_subject_stay_linear() -> None:
    """Step 6 with 20,000 subjects, each the subject of two unrelated messages:
    every pair gets a new dummy. Finding each pair's first root by scanning the
    roots made this quadratic (2.5 s for 40,000 messages, ~1 min for 100,000)."""
    n = 40_000
    start = time.process_time()
    roots = threads.thread([Message(k, k, float(k), f"id{k}", "", f"S{k // 2}", False)
                            for k in range(n)])
    out = threads.render(roots)
    assert time.process_time() - start < 4  # 0.4 s here; the scan took 10
    assert out.startswith(b"((0)(1))((2)(3))") and len(roots) == n // 2


def test_no_container_is_left_to_the_cyclic_collector() -> None:
    """The trees THREAD renders are freed when dropped: a container pointing
    up at its parent (which lists it) made every one a reference cycle, and
    the collector's pass over 100,000 of them was a sixth of the command."""
    def alive() -> int:
        return sum(isinstance(o, Node) for o in gc.get_objects())

    gc.collect()
    before = alive()
    gc.disable()
    try:
        roots = threads.thread([msg(1, "a"), msg(2, "b", "a"), msg(3, "c", "x b"),
                                msg(4, "d", "", "t"), msg(5, "e", "", "t")])
        assert threads.render(roots) == b"(1 2 3)((4)(5))"
        assert alive() >= before + 6  # five messages and the subject's dummy
        del roots
        assert alive() == before
    finally:
        gc.enable()
