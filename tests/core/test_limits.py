"""Connection budgets and the byte budget, counted exactly (``core.limits``, ``core.budget``)."""

from __future__ import annotations

from core.budget import ByteBudget
from core.limits import Budget, ConnectionLimits


def test_a_full_budget_closes_the_oldest_stranger_never_a_logged_in_one() -> None:
    limits = ConnectionLimits(Budget("t", total=4, per_ip=2, unauthenticated=2))
    closed: list[str] = []
    owner = limits.admit("10.0.0.1", lambda: closed.append("owner"))
    assert owner is not None
    owner.authenticated()
    a = limits.admit("10.0.0.2", lambda: closed.append("a"))
    b = limits.admit("10.0.0.3", lambda: closed.append("b"))
    c = limits.admit("10.0.0.4", lambda: closed.append("c"))  # a makes room
    assert a is not None and b is not None and c is not None
    assert closed == ["a"] and a.released and limits.open == 3
    d = limits.admit("10.0.0.5", lambda: closed.append("d"))
    assert d is not None and closed == ["a", "b"] and limits.open == 3
    c.authenticated()
    d.authenticated()
    e = limits.admit("10.0.0.6", lambda: closed.append("e"))  # 4 of 4: nobody to close
    assert e is not None and limits.open == 4
    assert limits.admit("10.0.0.7", lambda: None) is not None  # e closed for it
    assert closed == ["a", "b", "e"]
    owner.release()
    a.release()  # twice is harmless
    assert limits.open == 3


def test_per_address_and_no_eviction_budgets_refuse() -> None:
    limits = ConnectionLimits(Budget("t", total=3, per_ip=2, unauthenticated=3, evict=False))
    slots = [limits.admit("10.0.0.1", lambda: None) for _ in range(2)]
    assert all(slots) and limits.admit("10.0.0.1", lambda: None) is None
    assert limits.admit("10.0.0.2", lambda: None) is not None
    assert limits.admit("10.0.0.3", lambda: None) is None  # full, and nobody is closed
    slots[0].release()  # type: ignore[union-attr]
    assert limits.admit("10.0.0.1", lambda: None) is not None


def test_the_byte_budget_is_a_ceiling_overall_and_per_address() -> None:
    budget = ByteBudget(total=100, per_ip=60)
    assert budget.take("a", 60) and not budget.take("a", 1)
    assert budget.take("b", 40) and not budget.take("c", 1)
    budget.give("a", 60)
    assert budget.used == 40 and budget.take("c", 60)
