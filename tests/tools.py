"""External tools the tests drive (redis-server, swaks, litmus, ...).

A test that needs a tool calls ``require_tool`` (anything else it needs from
the machine: ``require``): when it is missing the test fails under
``TWIN_REQUIRE_TOOLS=1`` (CI, where .ci/run installs it) and is skipped with
the reason everywhere else.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"required tool {name!r} is not installed")
    assert path is not None  # require() went on, so it is there
    return path


def require(present: bool, missing: str) -> None:
    """Go on if ``present``; else fail under TWIN_REQUIRE_TOOLS=1 (CI) and skip elsewhere.

    For what a test needs from the machine (a tool, a network address, a
    filesystem behaviour): CI must have it, so there its absence is an error.
    """
    if present:
        return
    if os.environ.get("TWIN_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{missing} (TWIN_REQUIRE_TOOLS=1)")
    pytest.skip(missing)
