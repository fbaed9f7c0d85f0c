"""The twin's log stays bounded (issue 23 item 4): rotated by size, no line per
message at the default level, and aiosmtpd's two per-session warnings dropped."""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.logfile import log_to_file
from tests.twins import TwinProcess


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in root.handlers:
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)


def test_the_log_file_rotates_by_size(tmp_path: Path, restore_root_logging: None) -> None:
    logging.getLogger().setLevel(logging.INFO)
    path = tmp_path / "log" / "twin.log"
    log_to_file(path, max_bytes=4000, backups=2)
    for i in range(2000):
        logging.getLogger("twin.test").info("line %d of a long run", i)
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["twin.log", "twin.log.1", "twin.log.2"]
    assert all((path.parent / f).stat().st_size <= 4000 for f in files)
    assert "line 1999 of a long run" in path.read_text()


def test_a_busy_twin_logs_a_bounded_file_with_one_line_per_transaction(
        twins: Callable[..., TwinProcess]) -> None:
    twin = twins("busy", sets=["log.file=log/twin.log", "log.max_bytes=20000", "log.backups=1"])
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for i in range(30):  # implicit TLS + AUTH: both aiosmtpd warnings, once per session
        with smtplib.SMTP_SSL("127.0.0.1", twin.port("submissions"), context=ctx,
                              timeout=30) as client:
            client.login(twin.login, twin.password)
            client.sendmail(twin.login, [twin.login],
                            f"From: {twin.login}\r\nSubject: {i}\r\n\r\nhi\r\n".encode())
    for _ in range(30):
        with smtplib.SMTP("127.0.0.1", twin.port("smtp"), timeout=30) as client:
            client.sendmail("someone@example.com", [twin.login], b"Subject: in\r\n\r\nhi\r\n")
    twin.stop()
    logs = sorted((twin.data / "log").iterdir())
    text = "".join(p.read_text(errors="replace") for p in logs)
    assert "listening:" in text and "logging to" in twin.log()
    assert "auth_require_tls" not in text and "login_data" not in text
    assert "routed mail" not in text and "submitted by" not in text  # debug-only lines
    assert 0 < text.count("smtp submission: id=") <= 30 and 0 < text.count("smtp in: id=") <= 30
    assert len(logs) <= 2 and all(p.stat().st_size <= 20000 for p in logs)


def test_the_log_file_keeps_one_record_on_one_line(tmp_path: Path,
                                                   restore_root_logging: None) -> None:
    logging.getLogger().setLevel(logging.INFO)
    path = tmp_path / "twin.log"
    log_to_file(path, max_bytes=0, backups=0)
    logging.getLogger("twin.imap").info("login %s refused", "mallory\n2026-01-01 forged")
    assert path.read_text().count("\n") == 1 and "mallory\\x0a2026" in path.read_text()


def test_json_lines_for_machines(tmp_path: Path, restore_root_logging: None) -> None:
    import json

    logging.getLogger().setLevel(logging.INFO)
    path = tmp_path / "twin.log"
    log_to_file(path, max_bytes=0, backups=0, kind="json")
    logging.getLogger("twin.smtp").info("smtp in: id=%s", "abc\ndef")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("twin.smtp").exception("failed")
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert first["level"] == "INFO" and first["logger"] == "twin.smtp"
    assert first["message"].startswith("smtp in: id=abc") and first["ts"].endswith("+00:00")
    assert "ValueError: boom" in second["exception"]
