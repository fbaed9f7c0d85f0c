"""External tools the tests drive (redis-server, swaks, litmus, ...).

A test that needs a tool calls ``require_tool``: when the tool is missing it
fails under ``TWIN_REQUIRE_TOOLS=1`` (CI, where .ci/run installs it) and is
skipped with the tool's name everywhere else.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("TWIN_REQUIRE_TOOLS") == "1":
        pytest.fail(f"required tool {name!r} is not installed (TWIN_REQUIRE_TOOLS=1)")
    pytest.skip(f"{name} not installed")
