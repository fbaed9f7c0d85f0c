"""One error vocabulary (``core.errors.ErrorCode``), one table per adapter keyed by it.

Adding a code to core without deciding what each adapter says for it fails
here, and so does a raise site that spells a code as a bare string.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import core.errors as errors
from core.errors import (
    FAMILY,
    Conflict,
    ErrorCode,
    Forbidden,
    Invalid,
    NotFound,
    PeerRejected,
    QuotaExceeded,
    TwinError,
    code_of,
    from_code,
)
from core.peer import errors as peer_errors
from core.users import Throttled
from protocols.imap import errors as imap_errors
from protocols.smtp import errors as smtp_errors
from protocols.webdav import bridge

ROOT = Path(__file__).resolve().parents[2]
TABLES: dict[str, Mapping[Any, Any]] = {
    "smtp": smtp_errors.TABLE,
    "imap": imap_errors.TABLE,
    "webdav": bridge.STATUS,
    "peer and local APIs": peer_errors.REFUSALS,
}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_adapter_table_has_a_row_for_every_code(name: str) -> None:
    missing = [code.name for code in ErrorCode if code not in TABLES[name]]
    assert not missing, f"{name} has no row for {missing}"


def test_every_code_has_a_family() -> None:
    assert set(FAMILY) == set(ErrorCode)
    for code, cls in FAMILY.items():
        assert issubclass(cls, TwinError), code


def test_each_class_default_code_is_in_the_vocabulary() -> None:
    for cls in {*FAMILY.values(), Throttled}:
        assert isinstance(cls.__dict__["code"], ErrorCode), cls


def test_one_over_quota_error_for_mail_and_files() -> None:
    from core.files import QuotaExceeded as files_quota

    assert files_quota is QuotaExceeded
    assert issubclass(QuotaExceeded, Forbidden)  # mail callers catch Forbidden
    assert QuotaExceeded("full").code == "overquota" == ErrorCode.OVER_QUOTA
    assert smtp_errors.to_smtp(QuotaExceeded("full")).reply.startswith("452 4.2.2 ")
    imap = imap_errors.from_core(QuotaExceeded("full"))
    assert (imap.status, imap.code) == ("NO", "OVERQUOTA")
    assert bridge.status_of(QuotaExceeded("full")) == 507
    refusal = peer_errors.Refusal.from_error(QuotaExceeded("full"))
    assert (refusal.code, refusal.status) == ("overquota", 507)
    assert refusal.code not in peer_errors.PERMANENT  # the outbox retries, like SMTP's 452


def test_rows_that_say_more_than_the_class_did() -> None:
    # a message over a size limit: SMTP's "too big" (aiosmtpd's own 552 5.3.4 too)
    too_big = Invalid("big", code=ErrorCode.TOO_LARGE)
    assert smtp_errors.to_smtp(too_big).reply.startswith("552 5.3.4 ")
    assert imap_errors.from_core(too_big).code == "TOOBIG"
    assert bridge.status_of(too_big) == 413
    assert imap_errors.from_core(Forbidden("x", code=ErrorCode.LIMIT)).code == "LIMIT"
    # another twin's refusal, by the code it carries
    assert bridge.status_of(PeerRejected("x", code="not_found")) == 404
    assert bridge.status_of(PeerRejected("x", code="malformed")) == 502


def test_code_of_prefers_the_errors_own_code_then_its_class() -> None:
    assert code_of(Invalid("x", code=ErrorCode.TOO_LARGE)) is ErrorCode.TOO_LARGE
    assert code_of(Invalid("x", code="something else")) is ErrorCode.INVALID
    assert code_of(Throttled(3)) is ErrorCode.THROTTLED
    assert code_of(TwinError("x")) is ErrorCode.ERROR
    # another twin's refusal: by the code it carries when it is ours
    assert code_of(PeerRejected("x", code="not_found")) is ErrorCode.NOT_FOUND
    assert code_of(PeerRejected("x", code="bad_signature")) is ErrorCode.PEER_REJECTED
    assert code_of(PeerRejected("x", code="quota")) is ErrorCode.OVER_QUOTA  # an older twin


def test_refusals_from_older_twins_are_read_in_our_vocabulary() -> None:
    got = peer_errors.rejected("quota", "no room")
    assert got.code == ErrorCode.OVER_QUOTA and bridge.status_of(got) == 507


def test_from_code_rebuilds_the_error_a_local_api_reported() -> None:
    assert isinstance(from_code("overquota", "full"), QuotaExceeded)
    assert isinstance(from_code("exists", "there"), Conflict)
    got = from_code("not_found", "gone")
    assert isinstance(got, NotFound) and str(got) == "gone"
    assert from_code("failed", "?") is None


def test_local_apis_answer_core_errors_with_the_peer_tables_status() -> None:
    assert peer_errors.http_status(NotFound("x")) == 404
    assert peer_errors.http_status(Forbidden("x")) == 403
    assert peer_errors.http_status(Conflict("x")) == 409
    assert peer_errors.http_status(QuotaExceeded("x")) == 507
    assert peer_errors.http_status(Invalid("x", code=ErrorCode.TOO_LARGE)) == 413
    assert peer_errors.http_status(errors.Unavailable("x")) == 503
    assert peer_errors.http_status(Invalid("x")) == 400


def _raise_sites() -> list[tuple[str, int, ast.Call]]:
    sites = []
    for folder in ("core", "storage", "protocols"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and any(k.arg == "code" for k in node.keywords):
                    sites.append((str(path.relative_to(ROOT)), node.lineno, node))
    return sites


def test_raise_sites_name_their_code_and_use_its_family() -> None:
    classes = {cls.__name__: cls for cls in (*FAMILY.values(), Throttled)}
    checked = 0
    for where, line, call in _raise_sites():
        if not isinstance(call.func, ast.Name) or call.func.id not in classes:
            continue
        value = next(k.value for k in call.keywords if k.arg == "code")
        assert not isinstance(value, ast.Constant), \
            f"{where}:{line}: code={value.value!r}: use an ErrorCode member"
        if isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name) \
                and value.value.id == "ErrorCode":
            code, cls = ErrorCode[value.attr], classes[call.func.id]
            assert issubclass(cls, FAMILY[code]) or issubclass(FAMILY[code], cls), \
                f"{where}:{line}: {cls.__name__} raised with {code.name} ({FAMILY[code].__name__})"
            checked += 1
    assert checked >= 10  # the scan found the raise sites
