"""Dovecot's imaptest against a real ``twin serve``: compliance groups and a stress run.

The compliance run is imaptest's own scripted tests (``test=DIR``): every
group must pass. A group whose capabilities the twin does not advertise is
skipped by imaptest; ``NOT_YET`` lists exactly those, so adding an extension
must remove its groups from the list (the test checks the list is exact).
The stress run drives 10 and then 50 clients with realistic messages and
asserts imaptest saw no protocol error at all (out-of-order untagged
responses, sequence numbers it was never told about, keywords not in FLAGS,
anything after BYE).
"""

from __future__ import annotations

import imaplib
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.protocols.imap import imaptest
from tests.tools import require
from tests.twins import TwinProcess

# Groups skipped for a capability not implemented yet. URLAUTH stays out for good.
NOT_YET = frozenset({
    "urlauth", "urlauth-binary", "urlauth2",
})
SETS = ["imap.max_sessions_per_user=100"]


def _capabilities(twin: TwinProcess) -> frozenset[str]:
    c = imaplib.IMAP4("127.0.0.1", twin.port("imap"))
    try:
        c.login(twin.login, twin.password)
        _, data = c.capability()
        return frozenset(data[0].decode().upper().split())
    finally:
        c.logout()


@pytest.fixture
def tested_twin(twins: Callable[..., TwinProcess]) -> TwinProcess:
    require(imaptest.available(), f"imaptest is not built in {imaptest.HOME} "
            "(bash tools/imaptest/build.sh /opt/imaptest)")
    return twins("alice", sets=SETS)


def test_imaptest_compliance_groups_all_pass(tested_twin: TwinProcess, tmp_path: Path) -> None:
    caps = _capabilities(tested_twin)
    wanted = imaptest.required_capabilities()
    skipped = {name for name, need in wanted.items() if not need <= caps}
    assert skipped == set(NOT_YET), (
        f"skipped now but not listed: {sorted(skipped - NOT_YET)}; "
        f"listed but no longer skipped (remove them): {sorted(NOT_YET - skipped)}")
    tests = tmp_path / "tests"
    shutil.copytree(imaptest.TESTS, tests)
    result = imaptest.compliance(tested_twin.port("imap"), tested_twin.login,
                                 tested_twin.password, tests)
    assert result.groups == len(wanted) - len(skipped) or result.groups == len(wanted)
    assert result.failed == 0, result.output[-6000:]
    assert "Traceback" not in tested_twin.log(), tested_twin.log()[-4000:]


@pytest.mark.slow
@pytest.mark.parametrize("clients", [10, 50])
def test_imaptest_stress_has_no_protocol_errors(tested_twin: TwinProcess, tmp_path: Path,
                                                 clients: int) -> None:
    mbox = imaptest.write_mbox(tmp_path / "stress.mbox")
    result = imaptest.stress(tested_twin.port("imap"), tested_twin.login,
                             tested_twin.password, mbox, clients=clients, secs=20)
    assert "Logi" in result.output, result.output[-3000:]  # it ran: the totals table
    assert result.errors == [], "\n".join(result.errors[:40])
    assert "Traceback" not in tested_twin.log(), tested_twin.log()[-4000:]
