"""Driving Dovecot's imaptest against a real twin: where it is, what it says.

imaptest is built by ``tools/imaptest/build.sh /opt/imaptest`` (``.ci/run``
does that when it is missing). ``TWIN_IMAPTEST`` names another build dir.
Its two modes are parsed here: the scripted compliance tests (``test=DIR``),
whose summary line counts failed groups, and the stress run, whose protocol
errors are ``Error:`` lines on its output.
"""

from __future__ import annotations

import email.generator
import email.policy
import io
import os
import random
import re
import subprocess
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

HOME = Path(os.environ.get("TWIN_IMAPTEST", "/opt/imaptest"))
BINARY = HOME / "imaptest"
TESTS = HOME / "tests"
_SUMMARY = re.compile(rb"(\d+) test groups: (\d+) failed, (\d+) skipped")
_FAILED_GROUP = re.compile(rb"^\*\*\* Test (\S+) command", re.M)


def available() -> bool:
    return BINARY.exists() and TESTS.is_dir()


@dataclass(frozen=True)
class Compliance:
    groups: int
    failed: int
    failed_names: frozenset[str]
    output: str


@dataclass(frozen=True)
class Stress:
    errors: list[str]
    output: str


def required_capabilities(tests: Path = TESTS) -> dict[str, frozenset[str]]:
    """Each scripted test group and the capabilities its header requires."""
    out: dict[str, frozenset[str]] = {}
    for path in sorted(tests.iterdir()):
        if not path.is_file() or path.suffix == ".mbox":
            continue
        head = path.read_bytes().split(b"\n\n", 1)[0].decode("utf-8", "replace")
        caps: frozenset[str] = frozenset()
        for line in head.splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() == "capabilities":
                caps = frozenset(c.upper() for c in value.split())
        out[path.name] = caps
    return out


def _base(port: int, user: str, password: str) -> list[str]:
    return [str(BINARY), "host=127.0.0.1", f"port={port}", f"user={user}", f"pass={password}"]


def compliance(port: int, user: str, password: str, tests: Path, timeout: float = 300,
               ) -> Compliance:
    proc = subprocess.run([*_base(port, user, password), f"test={tests}"],
                          capture_output=True, timeout=timeout, check=False)
    out = proc.stdout + proc.stderr
    m = _SUMMARY.search(out)
    assert m is not None, out.decode("utf-8", "replace")[-3000:]
    names = frozenset(n.decode() for n in _FAILED_GROUP.findall(out))
    return Compliance(int(m.group(1)), int(m.group(2)), names,
                      out.decode("utf-8", "replace"))


def stress(port: int, user: str, password: str, mbox: Path, *, clients: int, secs: int,
           timeout: float = 300) -> Stress:
    proc = subprocess.run([*_base(port, user, password), f"mbox={mbox}", f"clients={clients}",
                           f"secs={secs}", "msgs=60", "seed=1"],
                          capture_output=True, timeout=timeout, check=False)
    out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    errors = [line for line in out.splitlines() if line.startswith(("Error:", "Panic:",
                                                                    "Fatal:"))]
    return Stress(errors, out)


# -- realistic messages for the stress run

_WORDS = ["invoice", "meeting", "holiday", "report", "quarterly", "budget", "draft", "review",
          "photo", "lunch", "release", "schedule", "contract", "update", "minutes", "agenda"]


def _text(rng: random.Random, lines: int) -> str:
    return "\n".join(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 14)))
                     for _ in range(lines)) + "\n"


def _message(rng: random.Random, n: int, big: bool) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Sender {n} <sender{n}@example.org>"
    msg["To"] = f"team{n % 5}@example.com, Someone Else <else@example.net>"
    msg["Subject"] = f"{rng.choice(_WORDS)} {rng.choice(_WORDS)} #{n}"
    msg["Message-ID"] = f"<m{n}@example.org>"
    msg["Date"] = f"Mon, {1 + n % 28:02d} Jan 2024 10:{n % 60:02d}:00 +0100"
    if n > 3:
        msg["In-Reply-To"] = f"<m{n - rng.randint(1, 3)}@example.org>"
    kind = n % 4
    msg.set_content(_text(rng, rng.randint(3, 40)))
    if kind == 1:
        msg.add_alternative(f"<html><body><p>{_text(rng, 5)}</p></body></html>", subtype="html")
    elif kind == 2:
        size = 1024 * 1024 if big else rng.randint(2_000, 60_000)
        msg.add_attachment(rng.randbytes(size), maintype="application", subtype="octet-stream",
                           filename=f"report-{n}.bin")
    elif kind == 3:
        inner = EmailMessage()
        inner["From"] = "inner@example.net"
        inner["Subject"] = f"forwarded {n}"
        inner.set_content(_text(rng, 4))
        inner.add_attachment(b"%PDF-1.4 " + rng.randbytes(3_000), maintype="application",
                             subtype="pdf", filename="doc.pdf")
        msg.add_attachment(inner)
    return msg


def write_mbox(path: Path, count: int = 300, big_every: int = 60, seed: int = 7) -> Path:
    """An mbox of ``count`` messages: plain, alternative, attachments (some 1 MiB),
    and forwarded message/rfc822 parts with their own attachments."""
    rng = random.Random(seed)
    with path.open("wb") as f:
        for n in range(count):
            buf = io.BytesIO()
            gen = email.generator.BytesGenerator(buf, policy=email.policy.SMTP,
                                                 mangle_from_=True)
            gen.flatten(_message(rng, n, big=n % big_every == 2))
            body = buf.getvalue().replace(b"\r\n", b"\n")
            f.write(b"From sender@example.org Mon Jan  1 10:00:00 2024\n" + body + b"\n")
    return path
