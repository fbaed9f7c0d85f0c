"""Delivery status notifications (RFC 3464 multipart/report, RFC 6522).

A bounce tells the sender, in their own Inbox, which recipients did not get a
message and why, in the format mail clients render as a failure notice; the
original headers are attached (text/rfc822-headers) so the sender can tell
which message it was without the whole body being copied again. The report is
assembled by hand because its structure is fixed and the stdlib generator
cannot serialise a message/delivery-status part built from scratch.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import format_datetime, make_msgid

MAX_HEADERS = 64 * 1024


@dataclass(frozen=True)
class Failure:
    recipient: str
    status: str  # RFC 3463 enhanced code, e.g. "5.1.1", or "4.4.7" when retries ran out
    diagnostic: str


def headers_of(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[:end + 2]
    return head[:MAX_HEADERS]


def _clean(text: str) -> str:
    return " ".join(text.split())[:900]


def make_dsn(reporting_domain: str, sender: str, original: bytes,
             failures: Sequence[Failure]) -> bytes:
    """The bounce for ``sender`` about ``failures`` of ``original``, as CRLF bytes."""
    now = format_datetime(dt.datetime.now(dt.UTC))
    boundary = "=_twin_dsn_" + secrets.token_hex(12)
    human = ["Your message could not be delivered to these recipients:", ""]
    human += [f"  {_clean(f.recipient)}: {_clean(f.diagnostic)}" for f in failures]
    status = [f"Reporting-MTA: dns; {reporting_domain}", f"Arrival-Date: {now}", ""]
    for f in failures:
        status += [f"Final-Recipient: rfc822; {_clean(f.recipient)}", "Action: failed",
                   f"Status: {f.status}", f"Diagnostic-Code: smtp; {_clean(f.diagnostic)}", ""]
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_domain}>",
        f"To: <{_clean(sender)}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {now}",
        f"Message-ID: {make_msgid(domain=reporting_domain)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated delivery status notification.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "",
        *human,
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        *status,
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "",
    ]
    tail = f"\r\n--{boundary}--\r\n".encode()
    return "\r\n".join(head).encode() + b"\r\n" + headers_of(original) + tail
