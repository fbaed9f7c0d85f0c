"""A client of rspamd (https://rspamd.com), a spam filter server, over its HTTP protocol.

Scanning is ``POST /checkv2`` on rspamd's *normal* worker (port 11333 by
default): the body is the message as received, the SMTP facts travel as
request headers (``IP``, ``Helo``, ``From``, one ``Rcpt`` each, ``Queue-Id``,
``MTA-Name``; rspamd's "protocol" page), and the answer is one JSON object
with ``action``, ``score``, ``symbols``, ``messages.smtp_message`` and, when
rspamd's milter_headers module is on, ``milter.add_headers`` /
``milter.remove_headers``. ``Hostname`` (the client's reverse DNS name) is not
sent: the twin does not look it up, and rspamd resolves it itself when absent.

Learning is ``POST /learnspam`` or ``/learnham`` on the *controller* worker
(port 11334) with its ``Password`` header; the password is never logged.

The action decides, not the score: rspamd's own configuration (actions.conf)
owns the thresholds, so the owner tunes one place. The mapping:

- ``reject`` -> reject (550 5.7.1 at DATA);
- ``soft reject`` -> defer (451 4.7.1); this is also what rspamd's greylist
  module answers while it holds a new triplet back (greylist.lua's default
  ``action = 'soft reject'``);
- ``add header``, ``rewrite subject`` -> junk (the recipient's \\Junk mailbox);
- ``greylist`` -> deliver: as an action it only means "score past the greylist
  threshold"; the greylist module, when enabled, either turns it into
  ``soft reject`` or downgrades it to ``no action`` once the sender retried
  (greylist.lua ``disable_action('greylist')``). Without the module a
  tempfail would repeat on every retry and the mail would bounce days later.
- ``no action`` -> deliver.

Everything is bounded: the message sent (``max_size``; larger mail is not
scanned), the answer read (``MAX_ANSWER``), the time (``timeout``, one
figure for connect, send and answer), the headers taken from the answer.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import httpx

from core.spam.verdict import Transaction, Verdict

log = logging.getLogger("twin.spam")

MAX_ANSWER = 256 * 1024  # bytes of one JSON answer read
MAX_HEADERS = 20  # headers taken from milter.add_headers
MAX_HEADER_VALUE = 1000
MAX_SYMBOLS = 30  # symbol names kept for the log line
MAX_REASON = 200
_TOKEN = re.compile(r"[!-9;-~]{1,64}")  # RFC 5322 §3.6.8 field name: printable, no colon
_ACTIONS = {
    "reject": "reject",
    "soft reject": "defer",
    "add header": "junk",
    "rewrite subject": "junk",
    "greylist": "deliver",
    "no action": "deliver",
}


class RspamdError(Exception):
    """rspamd could not be asked or its answer was unusable."""


def _clean(text: str, limit: int) -> str:
    """One line of printable text: an answer must not inject header lines or replies."""
    return "".join(c if c.isprintable() else " " for c in text)[:limit].strip()


def _milter_headers(milter: Any) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """``milter.add_headers`` (name -> value | {value, order} | [those]) and
    ``milter.remove_headers`` (name -> index), as rspamd's milter_headers module
    writes them; names must be field names, values are made one line."""
    if not isinstance(milter, dict):
        return (), ()
    add: list[tuple[str, str]] = []
    adds = milter.get("add_headers")
    for name, spec in (adds.items() if isinstance(adds, dict) else ()):
        for item in spec if isinstance(spec, list) else [spec]:
            value = item.get("value") if isinstance(item, dict) else item
            if isinstance(name, str) and _TOKEN.fullmatch(name) and isinstance(value, str) \
                    and len(add) < MAX_HEADERS:
                add.append((name, _clean(value, MAX_HEADER_VALUE)))
    removes = milter.get("remove_headers")
    remove = tuple(name for name in (removes if isinstance(removes, dict) else ())
                   if isinstance(name, str) and _TOKEN.fullmatch(name))[:MAX_HEADERS]
    return tuple(add), remove


def parse(answer: bytes) -> Verdict:
    """A ``/checkv2`` answer as a verdict; ``RspamdError`` when it is not one."""
    try:
        data = json.loads(answer)
    except ValueError as exc:
        raise RspamdError(f"rspamd answered something other than JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("action"), str):
        raise RspamdError("rspamd's answer has no action")
    action = _ACTIONS.get(data["action"])
    if action is None:
        raise RspamdError(f"rspamd answered an unknown action {data['action'][:40]!r}")
    try:
        score = float(data.get("score", 0.0))
    except (TypeError, ValueError):
        score = 0.0
    messages = data.get("messages")
    smtp_message = messages.get("smtp_message") if isinstance(messages, dict) else None
    reason = (_clean(smtp_message, MAX_REASON) if isinstance(smtp_message, str) and smtp_message
              else f"rspamd: {data['action']} (score {score:.2f})")
    symbols = data.get("symbols")
    names = tuple(sorted(symbols, key=lambda n: -_score_of(symbols[n]))[:MAX_SYMBOLS]
                  ) if isinstance(symbols, dict) else ()
    add, remove = _milter_headers(data.get("milter"))
    return Verdict(action, score, reason, "rspamd", add_headers=add, remove_headers=remove,
                   symbols=tuple(_clean(str(n), 64) for n in names))


def _score_of(symbol: Any) -> float:
    try:
        return float(symbol.get("score", 0.0)) if isinstance(symbol, dict) else 0.0
    except (TypeError, ValueError):
        return 0.0


class Rspamd:
    """Scans through the normal worker; learns through the controller."""

    def __init__(self, url: str, *, controller_url: str = "", password: str = "",
                 timeout: float = 5.0, max_size: int = 10 * 1024 * 1024,
                 on_failure: str = "deliver") -> None:
        self.url = url.rstrip("/")
        self.controller_url = controller_url.rstrip("/")
        self._password = password
        self.max_size = max_size
        self.on_failure = on_failure
        self.timeout = timeout
        self._http: httpx.AsyncClient | None = None  # made on first use, on the loop

    @property
    def _client(self) -> httpx.AsyncClient:
        # one pool for the scans: a keep-alive connection per concurrent
        # session instead of a TCP handshake per message
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout, limits=httpx.Limits(
                max_connections=64, max_keepalive_connections=16))
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _post(self, url: str, body: bytes, headers: list[tuple[str, str]]
                    ) -> tuple[int, bytes]:
        try:
            async with self._client.stream("POST", url, content=body, headers=headers) as r:
                answer = bytearray()
                async for chunk in r.aiter_bytes():
                    answer += chunk
                    if len(answer) > MAX_ANSWER:
                        raise RspamdError(f"rspamd's answer is over {MAX_ANSWER} bytes")
                return r.status_code, bytes(answer)
        except httpx.TimeoutException:
            raise RspamdError("rspamd did not answer in time") from None
        except httpx.HTTPError as exc:
            raise RspamdError(f"cannot reach rspamd: {type(exc).__name__}: {exc}") from None

    def _unscanned(self, reason: str) -> Verdict:
        action = "defer" if self.on_failure == "defer" else "deliver"
        return Verdict(action, 0.0, reason, "rspamd", scanned=False)

    async def check(self, message: bytes, tx: Transaction) -> Verdict:
        """Ask rspamd; when it cannot answer, ``on_failure`` decides (deliver or defer)."""
        if len(message) > self.max_size:
            return self._unscanned(f"message over spam.max_size ({self.max_size} bytes)")
        headers = [("IP", tx.ip), ("Helo", tx.helo[:255] or "unknown"),
                   ("From", tx.mail_from), ("Queue-Id", tx.queue_id)]
        headers += [("Rcpt", r) for r in tx.rcpts]
        if tx.hostname:
            headers.append(("MTA-Name", tx.hostname))
        headers = [(k, _clean(v, 1000)) for k, v in headers if v]
        try:
            status, answer = await self._post(f"{self.url}/checkv2", message, headers)
            if status != 200:
                raise RspamdError(f"rspamd answered HTTP {status}")
            return parse(answer)
        except RspamdError as exc:
            log.warning("spam: rspamd scan failed (queue id %s), %s: %s", tx.queue_id or "-",
                        "deferring" if self.on_failure == "defer" else "delivering unscanned",
                        exc)
            return self._unscanned(str(exc))

    async def learn(self, message: bytes, spam: bool) -> str:
        """Teach rspamd's Bayes classifier; returns its answer in a few words.

        "already learned" is success: the same message moved twice is one lesson."""
        if not self.controller_url:
            raise RspamdError("spam.rspamd_controller_url is not set")
        if len(message) > self.max_size:
            raise RspamdError(f"message over spam.max_size ({self.max_size} bytes)")
        path = "learnspam" if spam else "learnham"
        status, answer = await self._post(f"{self.controller_url}/{path}", message,
                                          [("Password", self._password)])
        try:
            data = json.loads(answer)
        except ValueError:
            data = {}
        error = data.get("error") if isinstance(data, dict) else None
        if status == 200 and isinstance(data, dict) and data.get("success"):
            return "learned"
        if isinstance(error, str) and "already learned" in error:
            return "already learned"
        raise RspamdError(f"rspamd /{path}: HTTP {status} "
                          f"{_clean(str(error or answer[:100]), MAX_REASON)}")
