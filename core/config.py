"""One configuration schema for the whole twin.

Every key has a name, a type, a default and a help line, here and nowhere else.
The same table loads and validates ``twin.toml`` in the data dir, applies
environment (``TWIN_IMAP_PORT``) and CLI (``--set imap.port=1143``) overrides,
and renders ``twin config show`` / ``twin config doc``. A wrong key or a wrong
type is an error that names the key and where it came from, because a typo in a
mail server's config should never be silently ignored.

Precedence, lowest first: schema default < twin.toml < environment < CLI.
"""

from __future__ import annotations

import builtins
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from phonebook.tfchain_relay import DEFAULT_TERMS_HASH, DEFAULT_TERMS_LINK

CONFIG_FILE = "twin.toml"
ENV_PREFIX = "TWIN_"


@dataclass(frozen=True)
class Key:
    """One configuration key. ``type`` is one of str, int, float, bool, list."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None

    def __post_init__(self) -> None:
        # Every ``*port`` key is a TCP port: one rule here instead of a
        # maximum on each, so ``--set imap.port=99999`` is a clear error, not
        # an OverflowError from bind() at start.
        if self.maximum is None and self.name.endswith("port"):
            object.__setattr__(self, "maximum", 65535)

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.replace(".", "_").upper()

    @property
    def section(self) -> str:
        return self.name.split(".", 1)[0]


def _default_backends() -> list[dict[str, str]]:
    return [{"name": f"local{i}", "kind": "local", "location": f"shards/{i}"} for i in range(6)]


MiB = 1024 * 1024
PUT_OVERHEAD = 64 * 1024  # an envelope's bytes around a content.put body (keys, path, CBOR)

SCHEMA: tuple[Key, ...] = (
    # -- the twin itself
    Key("twin.name", str, "", "Short name of this twin, unique in its phonebook (a-z, 0-9, -)."),
    Key("twin.domain", str, "", "Mail domain and TLS name of this twin; default NAME.localhost."),
    Key("log.level", str, "info", "Log level.", choices=("debug", "info", "warning", "error")),
    Key("log.format", str, "text", "Log lines as text, or one JSON object each for machines.",
        choices=("text", "json")),
    Key("log.http_requests", bool, True,
        "One line per HTTPS request (method, path without its query, status, bytes, ms, "
        "client); never bodies or queries."),
    Key("log.file", str, "",
        "File `twin serve` logs to (relative to the data dir) instead of stderr; "
        "rotated by log.max_bytes and log.backups."),
    Key("log.max_bytes", int, 16 * MiB,
        "Size at which log.file is rotated (0 = not by the twin: it reopens the file "
        "when logrotate moves it).", minimum=0),
    Key("log.backups", int, 5, "Rotated log files kept besides log.file.", minimum=0),
    Key("serve.event_loop", str, "uvloop",
        "Event loop of twin serve: uvloop (libuv, the fast default) or asyncio (the standard "
        "library's, for asyncio debug mode or to rule uvloop out).",
        choices=("uvloop", "asyncio")),
    # -- listeners
    Key("listen.host", str, "127.0.0.1", "Address every listener binds to."),
    Key("listen.plaintext_auth", bool, False,
        "Allow LOGIN/AUTH without TLS on non-loopback addresses (never do this on the internet)."),
    Key("http.port", int, 8443, "HTTPS port: WebDAV /dav/, autoconfig, peer API /twin/v1/.",
        minimum=0),
    Key("http.max_connections", int, 1000, "HTTPS connections and requests in progress at "
        "once; past it new requests get 503.", minimum=1),
    Key("http.max_per_ip", int, 100, "HTTPS requests in progress at once from one client "
        "address; past it 503.", minimum=1),
    Key("http.max_connections_per_ip", int, 128, "HTTPS connections open at once from one client "
        "address, idle ones included; more are closed at once.", minimum=1),
    Key("http.header_timeout", float, 20.0, "Seconds a client has to send a request's "
        "headers, from connecting or from the request's first byte.", minimum=1),
    Key("http.acme_port", int, 80, "Plain-HTTP port answering ACME HTTP-01 challenges (with "
        "tls.acme; the CA connects to 80), redirecting everything else to HTTPS."),
    Key("http.trusted_proxies", list, [], "Reverse proxies (addresses or networks) whose "
        "X-Forwarded-For/-Proto are believed; their connections are not capped per address."),
    Key("http.public_url", str, "",
        "URL other twins use to reach the peer API; default https://HOST:PORT."),
    Key("smtp.port", int, 2525, "SMTP inbound port (the port-25 role); 0 picks a free port.",
        minimum=0),
    Key("smtp.submission_port", int, 2587, "SMTP submission port (STARTTLS required before AUTH).",
        minimum=0),
    Key("smtp.submissions_port", int, 2465, "SMTP submission port with implicit TLS.", minimum=0),
    Key("smtp.max_message_size", int, 50 * MiB, "Largest message accepted (SIZE).", minimum=1024),
    Key("smtp.smarthost", str, "",
        "host:port of a relay for mail to non-twins; empty sends directly to MX hosts."),
    Key("smtp.smarthost_user", str, "", "Login at the smarthost."),
    Key("smtp.smarthost_password", str, "", "Password at the smarthost (kept out of logs)."),
    Key("smtp.smarthost_tls", str, "starttls", "TLS towards the smarthost.",
        choices=("starttls", "tls", "none")),
    Key("smtp.retry_schedule", list, [60, 300, 900, 3600, 7200, 14400, 28800, 86400],
        "Seconds between delivery attempts of the legacy queue; the last repeats."),
    Key("smtp.give_up_after", int, 5 * 86400,
        "Seconds after which undeliverable mail is bounced.", minimum=1),
    Key("smtp.hostname", str, "", "Name in the SMTP greeting and Received headers; default "
        "the twin's domain."),
    Key("smtp.max_recipients", int, 100, "Recipients accepted per message.", minimum=1),
    Key("smtp.max_sessions", int, 200, "SMTP sessions open at once on the inbound port, and "
        "again over both submission ports (more get 421); each may hold up to "
        "smtp.max_message_size in memory.", minimum=1),
    Key("smtp.max_unauthenticated", int, 50, "Submission sessions not yet logged in; when "
        "full, the oldest of them is closed for a new connection.", minimum=1),
    Key("smtp.max_per_ip", int, 50, "SMTP sessions from one client address (on submission: "
        "those not yet logged in); more get 421.", minimum=1),
    Key("smtp.login_timeout", float, 60.0,
        "Seconds a submission session may stay idle before AUTH."),
    Key("smtp.timeout", float, 300.0, "Seconds an idle SMTP session is kept open."),
    Key("smtp.verify_dns", bool, True,
        "Check SPF, DKIM, ARC and DMARC of inbound mail against DNS and apply DMARC policies "
        "(off: results are 'none' and nothing is refused for them)."),
    Key("smtp.dns_timeout", float, 5.0, "Seconds to wait for one DNS answer."),
    Key("smtp.dns_budget", float, 20.0, "Seconds all DNS lookups for one inbound message "
        "may take together (SPF, DKIM, ARC, DMARC); checks left when it is spent are "
        "'temperror'.", minimum=1),
    Key("smtp.nameserver", str, "", "DNS server (HOST[:PORT]) for the inbound mail checks "
        "and outbound delivery (MX, MTA-STS, TLSA); empty: the system's resolver. DANE "
        "needs a DNSSEC-validating resolver on loopback."),
    Key("smtp.check_loopback", bool, False, "Check SPF and apply DMARC to inbound mail from "
        "loopback clients too (off: a local fetcher or MTA handing mail on is not judged by "
        "its 127.0.0.1)."),
    Key("smtp.dkim_selector", str, "twin", "DKIM selector of the twin's signing key."),
    Key("smtp.smarthost_verify", bool, True,
        "Verify the smarthost's TLS certificate (off only for a relay you run yourself)."),
    Key("smtp.mta_sts", bool, True, "Apply recipient domains' MTA-STS policies (RFC 8461) "
        "when delivering to MX hosts."),
    Key("smtp.mta_sts_mode", str, "testing", "Mode of the MTA-STS policy this twin publishes "
        "for its own domain (RFC 8461 §3.2) at https://mta-sts.DOMAIN/.well-known/mta-sts.txt: "
        "enforce once its certificate is a CA's (tls.acme), testing until then.",
        choices=("enforce", "testing", "none")),
    Key("smtp.dane", bool, True, "Apply DANE TLSA records (RFC 7672) when delivering to MX "
        "hosts; used only with DNSSEC-authenticated answers from a loopback resolver."),
    Key("smtp.outbound_ca_file", str, "", "PEM file of the CAs MX certificates are checked "
        "against under MTA-STS (and MTA-STS policy servers); empty: certifi's, else the "
        "system's."),
    Key("smtp.mx_port", int, 25, "Port of MX hosts when sending directly (no smarthost).",
        minimum=1),
    Key("smtp.queue_concurrency", int, 8, "Deliveries the legacy queue runs at once.",
        minimum=1),
    # -- spam filtering (core/spam, protocols/smtp/spam.py)
    Key("spam.rspamd_url", str, "", "URL of rspamd's normal worker (e.g. http://127.0.0.1:11333)"
        " that scans inbound mail before the 250; empty: rspamd is not used."),
    Key("spam.rspamd_controller_url", str, "", "URL of rspamd's controller worker (e.g. "
        "http://127.0.0.1:11334) taught spam/ham when the owner moves mail into or out of "
        "Junk; empty: rspamd does not learn."),
    Key("spam.rspamd_password", str, "", "Password of rspamd's controller (kept out of logs)."),
    Key("spam.timeout", float, 5.0, "Seconds rspamd has to answer one scan or lesson."),
    Key("spam.max_size", int, 10 * MiB, "Largest message sent to rspamd; larger mail is "
        "delivered unscanned (with a note in X-Spam-Status).", minimum=1024),
    Key("spam.on_failure", str, "deliver", "When rspamd cannot answer: deliver unscanned "
        "(noted in X-Spam-Status and the log) or defer (451, the sender retries).",
        choices=("deliver", "defer")),
    Key("spam.builtin", bool, True, "Without rspamd, scan with the small built-in filter "
        "(GTUBE, SPF/DMARC-based points, per-sender reputation from the owner's moves)."),
    Key("spam.reputation_size", int, 10_000, "Senders the built-in reputation remembers "
        "(the least recently judged are forgotten first).", minimum=1),
    Key("spam.learn_concurrency", int, 2, "Lessons (moves into or out of Junk) sent to "
        "rspamd at once.", minimum=1),
    Key("imap.port", int, 2143, "IMAP port (STARTTLS).", minimum=0),
    Key("imap.tls_port", int, 2993, "IMAP port with implicit TLS.", minimum=0),
    Key("imap.max_line", int, 64 * 1024, "Longest IMAP command line in bytes.", minimum=1024),
    Key("imap.max_literal", int, 64 * MiB, "Largest IMAP literal (APPEND) in bytes.",
        minimum=1024),
    Key("imap.max_command", int, 1 * MiB,
        "Bytes of one IMAP command after login, literals included (APPEND's message "
        "excepted: it is streamed).", minimum=8 * 1024),
    Key("imap.max_command_unauthenticated", int, 64 * 1024,
        "Bytes of one IMAP command before login, literals included (larger: BAD, or BYE "
        "for a non-synchronising literal). As long as imap.max_line, so a client's ID "
        "(RFC 2971) before login fits; imap.max_unauthenticated bounds the sum.",
        minimum=1024),
    Key("imap.max_sessions_per_user", int, 50, "Concurrent IMAP sessions per user.", minimum=1),
    Key("imap.max_connections", int, 1000, "IMAP connections open at once, logged in or not; "
        "more get BYE.", minimum=1),
    Key("imap.max_unauthenticated", int, 100, "IMAP connections not yet logged in; when "
        "full, the oldest of them is closed for a new connection.", minimum=1),
    Key("imap.max_per_ip", int, 50, "IMAP connections not yet logged in from one client "
        "address; more get BYE.", minimum=1),
    Key("imap.login_timeout", int, 60,
        "Seconds a connection may stay silent before it logs in.", minimum=1),
    Key("imap.idle_timeout", int, 30 * 60,
        "Seconds an IDLE command may last before the server ends it (small values: tests).",
        minimum=1),
    Key("imap.autologout", int, 30 * 60,
        "Seconds of client silence after which a session is closed (RFC 3501 minimum 30 min; "
        "small values: tests).", minimum=1),
    Key("imap.max_pending_changes", int, 10_000,
        "Mailbox changes queued for a session that is not reading; beyond, it resyncs.",
        minimum=1),
    Key("mail.quota", int, 0, "Bytes of mail each user may keep (0 = unlimited).", minimum=0),
    Key("mail.vanished_keep", int, 1000,
        "Expunge records kept per mailbox for QRESYNC; a client that last synced before "
        "the oldest gets every missing uid below UIDNEXT instead (RFC 7162 §3.2.5.2).",
        minimum=1),
    Key("mail.warm_indexes", bool, True,
        "Right after a start, load the large mailboxes' indexes kept at the last stop, so "
        "their first SELECT does not wait (at most 200,000 messages, ~16 MiB; dropped after "
        "10 minutes unused)."),
    Key("mail.journal_backlog", int, 64 * MiB,
        "Bytes of accepted mail that may wait to be filed; beyond, SMTP waits, then 451.",
        minimum=1 * MiB),
    # -- certificates (core/acme.py)
    Key("tls.acme", bool, False, "Get and renew the TLS certificate from an ACME CA (Let's "
        "Encrypt by default) over HTTP-01 on http.acme_port; the current one stays until then."),
    Key("tls.acme_directory", str, "https://acme-v02.api.letsencrypt.org/directory",
        "The ACME CA's directory URL."),
    Key("tls.acme_email", str, "", "Contact address given to the CA (expiry warnings)."),
    Key("tls.acme_names", list, [], "Names the certificate covers; default [twin.domain]."),
    Key("tls.acme_ca_bundle", str, "", "PEM file of CAs trusted for the ACME server's own "
        "HTTPS (a private CA); default: the system's."),
    Key("tls.acme_renew_days", int, 30, "Renew when the certificate expires within this many "
        "days.", minimum=1),
    # -- phonebook
    Key("phonebook.backend", str, "local", "Where twins are found.",
        choices=("local", "tfchain")),
    Key("phonebook.path", str, "phonebook.db",
        "Local phonebook SQLite file (relative to the data dir); may be shared by several twins."),
    Key("phonebook.url", str, "",
        "TFChain node websocket URL (ws:// or wss://), e.g. wss://tfchain.grid.tf/ws (mainnet), "
        "wss://tfchain.test.grid.tf/ws (testnet), wss://tfchain.dev.grid.tf/ws (devnet)."),
    Key("phonebook.tfchain_port", int, 443,
        "HTTPS port of the peer API of twins found on TFChain (a relay holds no port); "
        "change only for a private or test network.", minimum=1),
    Key("phonebook.tfchain_timeout", float, 5.0,
        "Seconds to wait for each answer of a TFChain node (a hung node costs no more)."),
    Key("phonebook.tfchain_connect_timeout", float, 3.0,
        "Seconds to wait for a TFChain node to accept a websocket connection."),
    Key("phonebook.tfchain_submit_timeout", float, 30.0,
        "Seconds to wait for a submitted extrinsic to be included in a block."),
    Key("phonebook.tfchain_retry_after", float, 3.0,
        "Seconds a TFChain node that failed is not asked again (the cache answers meanwhile)."),
    Key("phonebook.mail_wait", float, 2.0,
        "Seconds mail routing waits for the phonebook before it uses the cache, or answers "
        "451 (an SMTP reply never waits on the chain longer)."),
    Key("phonebook.publish_retry", float, 30.0,
        "Seconds between attempts of `twin serve` to publish the twin on TFChain "
        "(doubling up to ten times that while it keeps failing)."),
    Key("phonebook.terms_link", str, DEFAULT_TERMS_LINK,
        "Terms and conditions document the twin's TFChain account accepts before create_twin."),
    Key("phonebook.terms_hash", str, DEFAULT_TERMS_HASH,
        "Hash recorded on chain with the acceptance (1-50 bytes; the runtime refuses an empty "
        "one). Default: the MD5 (hex) of the default terms_link's text."),
    Key("phonebook.cache_ttl", int, 600, "Seconds a resolved twin is trusted before refresh.",
        minimum=0),
    Key("phonebook.record_ttl", int, 30 * 86400,
        "Seconds a published local phonebook record stays valid.", minimum=60),
    # -- dispersed storage
    Key("storage.k", int, 4, "Shares needed to rebuild a segment.", minimum=1),
    Key("storage.n", int, 6, "Shares written per segment.", minimum=1),
    Key("storage.segment_size", int, 4 * MiB, "Bytes per segment before encoding.",
        minimum=4096),
    Key("storage.backends", list, _default_backends(),
        "Shard backends: a list of tables {name, kind = local|resp, location}."),
    Key("storage.scrub_interval", int, 86400,
        "Seconds between scrubs: every share of every object read and checked, and what "
        "is missing or corrupt rebuilt (0 = never; objects stored while a backend was "
        "down are repaired as soon as it is back, scrub or not).", minimum=0),
    Key("storage.compact_slack", float, 0.1,
        "Dead bytes a quiet local shard file may keep, as a share of its live bytes; "
        "beyond it the file is compacted (the disk overhead bound).",),
    Key("storage.compact_age", int, 600,
        "Seconds a local shard file's dead bytes must stay unchanged before the slack "
        "rule compacts it (a file half dead is compacted once deletes pause).", minimum=0),
    Key("storage.backup_interval", int, 3600,
        "Seconds between backups of twin.db and the catalogue into the dispersed store "
        "(0 = never; a clean stop always backs up).",
        minimum=0),
    # -- twin-to-twin
    Key("peer.max_skew", int, 300, "Seconds of clock difference tolerated on envelopes.",
        minimum=1),
    Key("peer.ttl", int, 3600, "Seconds an envelope we send stays valid.", minimum=10),
    Key("peer.max_envelope", int, 16 * MiB, "Largest envelope body accepted.", minimum=1024),
    Key("peer.max_put", int, 8 * MiB, "Largest file written into another twin's read-write "
        "share (one content.put envelope) and taken from one; keep 64 KiB below "
        "peer.max_envelope.", minimum=0),
    Key("peer.max_upload", int, 1024 * MiB, "Largest whole file written into another twin's "
        "read-write share, in peer.max_put chunks, and taken from one (parts are staged "
        "on disk under uploads/ in the data dir).", minimum=0),
    Key("peer.max_buffered", int, 64 * MiB, "Bytes of peer request bodies held in memory at "
        "once, before their signatures are checked (more: 503, retry).", minimum=1024),
    Key("peer.max_buffered_per_ip", int, 32 * MiB,
        "Bytes of peer request bodies held at once for one client address.", minimum=1024),
    Key("peer.rate_per_minute", int, 6000, "Envelopes accepted per sender per minute.",
        minimum=1),
    Key("peer.hosts", list, [],
        "Addresses used for twins' domains instead of DNS, as \"domain=host:port\" strings "
        "(a private or test network; the TLS name stays the domain)."),
    Key("peer.retry_schedule", list, [5, 30, 120, 600, 1800, 3600, 7200, 14400],
        "Seconds between outbox delivery attempts; the last repeats."),
    Key("peer.give_up_after", int, 4 * 86400,
        "Seconds after which an undelivered envelope bounces.", minimum=1),
    Key("peer.timeout", float, 30.0, "Seconds to wait for a peer's HTTP answer."),
    Key("peer.dedup_keep", int, 5 * 86400,
        "Seconds a received envelope's uid is remembered (longer than peers retry).",
        minimum=60),
    Key("peer.max_ttl", int, 86400,
        "Largest ttl accepted on a received envelope (seconds); bounds how long it is "
        "remembered. Keep peer.ttl of every twin below it.", minimum=60),
    Key("peer.max_stored_ack", int, 4096,
        "Largest ack kept in the replay store for a duplicate (bytes); a larger one is "
        "not kept (the duplicate is still refused).", minimum=512),
    Key("peer.replay_ack_budget", int, 16 * MiB,
        "Bytes of acks kept in the replay store per sender.", minimum=0),
    Key("peer.replay_per_sender", int, 200_000,
        "Envelope uids remembered per sender; beyond, the oldest that no longer guard "
        "against a replay are forgotten, or the sender is refused (rate_limited).",
        minimum=100),
    Key("peer.outbox_poll", float, 1.0,
        "Seconds between outbox checks for messages queued by other processes (the CLI)."),
    # -- WebDAV
    Key("webdav.quota", int, 0, "Bytes the file tree may hold (0 = free space of the backends).",
        minimum=0),
    Key("webdav.block_size", int, 256 * 1024, "Bytes per block when streaming files.",
        minimum=4096),
    Key("webdav.max_xml_body", int, 1 * MiB,
        "Largest PROPFIND/PROPPATCH/LOCK request body in bytes (413 above).", minimum=4096),
)

BY_NAME: dict[str, Key] = {k.name: k for k in SCHEMA}


@dataclass
class Config:
    """Validated settings of one twin, plus where each value came from."""

    data_dir: Path
    values: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: builtins.str) -> Any:
        if name not in BY_NAME:
            raise KeyError(name)
        return self.values[name]

    def str(self, name: builtins.str) -> builtins.str:
        value = self[name]
        assert isinstance(value, str)
        return value

    def int(self, name: builtins.str) -> builtins.int:
        value = self[name]
        assert isinstance(value, int)
        return value

    def float(self, name: builtins.str) -> builtins.float:
        return float(self[name])

    def bool(self, name: builtins.str) -> builtins.bool:
        return bool(self[name])

    def list(self, name: builtins.str) -> builtins.list[Any]:
        value = self[name]
        assert isinstance(value, list)
        return value

    def path(self, name: builtins.str) -> Path:
        """A path-valued key, relative paths taken from the data dir."""
        p = Path(self.str(name)).expanduser()
        return p if p.is_absolute() else self.data_dir / p

    @property
    def name(self) -> builtins.str:
        return self.str("twin.name")

    @property
    def domain(self) -> builtins.str:
        return self.str("twin.domain") or f"{self.name}.localhost"


def coerce(key: Key, value: Any, origin: str, *, text: bool = True) -> Any:
    """Check one value against its key's type, range and choices.

    ``text`` sources (the environment, ``--set``) only have strings, so they are
    parsed; a typed source (twin.toml) must already have the right type: a
    port written as ``"0x1F39"`` there is a mistake to report, not to guess at.
    """
    where = f"{key.name!r} in {origin}"
    if text and isinstance(value, str) and key.type is not str:
        value = _parse_text(key, value, where)
    if key.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if key.type is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got a boolean")
    if not isinstance(value, key.type):
        raise ConfigError(
            f"{where}: expected {key.type.__name__}, got {type(value).__name__} ({value!r})"
        )
    if key.choices and value not in key.choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(key.choices)}")
    if key.minimum is not None and isinstance(value, int | float) and value < key.minimum:
        raise ConfigError(f"{where}: {value} is below the minimum {key.minimum}")
    if key.maximum is not None and isinstance(value, int | float) and value > key.maximum:
        raise ConfigError(f"{where}: {value} is above the maximum {key.maximum}")
    return value


def _parse_text(key: Key, text: str, where: str) -> Any:
    try:
        if key.type is int:
            return int(text.strip().replace("_", ""), 10)
        if key.type is float:
            return float(text)
        if key.type is bool:
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if key.type is list:
            parsed = tomllib.loads(f"v = {text}")["v"]
            if not isinstance(parsed, list):
                raise ValueError(text)
            return parsed
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read {text!r} as {key.type.__name__}") from exc
    return text


def _flatten(table: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for name, value in table.items():
        dotted = f"{prefix}{name}"
        if isinstance(value, dict) and dotted not in BY_NAME:
            yield from _flatten(value, dotted + ".")
        else:
            yield dotted, value


def load_file_values(file: Path) -> dict[str, Any]:
    """The keys a TOML file sets, validated (for templates such as `twin restore --config`)."""
    try:
        table = tomllib.loads(Path(file).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read: {exc}") from exc
    values = {}
    for name, value in _flatten(table):
        key = BY_NAME.get(name)
        if key is None:
            raise ConfigError(f"unknown key {name!r} in {file} (see `twin config doc`)")
        values[name] = coerce(key, value, str(file), text=False)
    return values


def load(
    data_dir: Path,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    require_file: bool = True,
) -> Config:
    """Load ``data_dir/twin.toml`` and apply environment and CLI overrides."""
    data_dir = Path(data_dir).expanduser().resolve()
    values = {k.name: k.default for k in SCHEMA}
    sources = {k.name: "default" for k in SCHEMA}
    file = data_dir / CONFIG_FILE
    if file.exists():
        for name, value in load_file_values(file).items():
            values[name] = value
            sources[name] = str(file)
    elif require_file:
        raise ConfigError(
            f"no {CONFIG_FILE} in {data_dir}: is this a twin's data dir? (run `twin init` first)"
        )
    env = os.environ if environ is None else environ
    for key in SCHEMA:
        if key.env in env:
            values[key.name] = coerce(key, env[key.env], f"environment variable {key.env}")
            sources[key.name] = f"env {key.env}"
    for name, value in (overrides or {}).items():
        if name not in BY_NAME:
            raise ConfigError(f"unknown key {name!r} in command-line --set")
        values[name] = coerce(BY_NAME[name], value, "command-line --set")
        sources[name] = "command line"
    config = Config(data_dir, values, sources)
    _check_whole(config)
    return config


def _origin(config: Config, *names: str) -> str:
    """Where the keys of a rule came from, so the error blames the right place
    (an environment variable, the command line or twin.toml), not always the file."""
    found = dict.fromkeys(config.sources.get(n, "default") for n in names)
    return " and ".join(found)


def _check_whole(config: Config) -> None:
    """Rules that involve more than one key."""
    k, n = config.int("storage.k"), config.int("storage.n")
    if k > n:
        raise ConfigError(f"'storage.k' ({k}) exceeds 'storage.n' ({n}) "
                          f"(from {_origin(config, 'storage.k', 'storage.n')})")
    backends = config.list("storage.backends")
    where = _origin(config, "storage.backends")
    for i, backend in enumerate(backends):
        if not isinstance(backend, dict) or not {"name", "kind", "location"} <= backend.keys():
            raise ConfigError(
                f"'storage.backends' entry {i} in {where} needs name, kind and location"
            )
    if len(backends) < n:
        raise ConfigError(
            f"'storage.backends' lists {len(backends)} backends; 'storage.n' = {n} needs "
            f"at least that many (from {_origin(config, 'storage.backends', 'storage.n')})"
        )
    if config.int("peer.ttl") > config.int("peer.max_ttl"):
        where = _origin(config, "peer.ttl", "peer.max_ttl")
        raise ConfigError(f"'peer.ttl' exceeds 'peer.max_ttl' (from {where}): peers with "
                          "the default limit would refuse this twin's envelopes")
    if config.int("peer.max_put") + PUT_OVERHEAD > config.int("peer.max_envelope"):
        where = _origin(config, "peer.max_put", "peer.max_envelope")
        raise ConfigError(f"'peer.max_put' must stay {PUT_OVERHEAD} bytes below "
                          f"'peer.max_envelope' (from {where}): the file travels inside one "
                          "envelope")
    for name in ("smtp.retry_schedule", "peer.retry_schedule"):
        schedule = config.list(name)
        if not schedule or not all(isinstance(s, int | float) and s > 0 for s in schedule):
            raise ConfigError(f"{name!r} in {_origin(config, name)}: needs positive numbers "
                              "of seconds")


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """``["imap.port=1143"]`` -> ``{"imap.port": "1143"}`` for ``--set``."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[name.strip()] = value.strip()
    return out


def _toml_char(c: str) -> str:
    """One character of a TOML basic string: quote, backslash and control
    characters (DEL included, which TOML forbids raw) escaped."""
    if c in '"\\':
        return "\\" + c
    if ord(c) < 0x20 or ord(c) == 0x7F:
        return f"\\u{ord(c):04X}"
    return c


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + "".join(_toml_char(c) for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return str(value)


def render_toml(values: Mapping[str, Any]) -> str:
    """A twin.toml with the given values set and every other key as a comment."""
    lines = ["# twin configuration. Every key, its type and help: `twin config doc`.", ""]
    section = ""
    for key in SCHEMA:
        if key.section != section:
            section = key.section
            lines += ["", f"[{section}]"]
        short = key.name.split(".", 1)[1]
        lines.append(f"# {key.help}")
        if key.name in values:
            lines.append(f"{short} = {_toml_value(values[key.name])}")
        else:
            lines.append(f"# {short} = {_toml_value(key.default)}")
    return "\n".join(lines).lstrip() + "\n"


def write(data_dir: Path, values: Mapping[str, Any]) -> Path:
    """Validate and write ``twin.toml`` (0600: it may hold a smarthost password)."""
    for name, value in values.items():
        key = BY_NAME.get(name)
        if key is None:
            raise ConfigError(f"unknown key {name!r}")
        coerce(key, value, "twin init")
    path = Path(data_dir) / CONFIG_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(render_toml(values))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def set_file_value(data_dir: Path, name: str, value: Any) -> Path:
    """Set one key in ``twin.toml`` and keep the rest of the file as it was.

    Why tomlkit: a command that changes the twin's config (``twin storage
    backends add|rm``) must not turn the owner's file, comments and layout into
    a freshly rendered one; the standard library's ``tomllib`` only reads. The
    new file is checked as ``load`` would read it before it replaces the old one.
    """
    import tomlkit
    from tomlkit.items import AoT, Table

    key = BY_NAME.get(name)
    if key is None:
        raise ConfigError(f"unknown key {name!r}")
    coerce(key, value, "the new value")
    path = Path(data_dir) / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        doc = tomlkit.parse(text)
    except (OSError, ValueError) as exc:  # tomlkit's parse errors are ValueErrors
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    section, short = name.split(".", 1)
    table = doc.get(section)
    if table is None:
        table = tomlkit.table()
        doc[section] = table
    if not isinstance(table, Table):
        raise ConfigError(f"{path}: [{section}] is not a table; edit {name} by hand")
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value) \
            and not isinstance(table.get(short), AoT):
        items = tomlkit.array()
        for v in value:
            inline = tomlkit.inline_table()
            inline.update(v)
            items.append(inline)
        table[short] = items.multiline(True)  # one backend a line: readable, diffable
    else:
        table[short] = value
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(tomlkit.dumps(doc))
            f.flush()
            os.fsync(f.fileno())
        load_file_values(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


def file_value(data_dir: Path, name: str) -> Any:
    """What ``twin.toml`` itself sets for ``name`` (its default if the file does not)."""
    path = Path(data_dir) / CONFIG_FILE
    values = load_file_values(path) if path.exists() else {}
    return values.get(name, BY_NAME[name].default)


SECRET_KEYS = frozenset({"smtp.smarthost_password", "spam.rspamd_password"})


def render_doc() -> str:
    """Every key with type, default, environment variable and help."""
    out = []
    for key in SCHEMA:
        choices = f" (one of: {', '.join(key.choices)})" if key.choices else ""
        out.append(
            f"{key.name}  [{key.type.__name__}, default {_toml_value(key.default)}, "
            f"env {key.env}]\n    {key.help}{choices}"
        )
    return "\n".join(out) + "\n"


def render_show(config: Config) -> str:
    """Effective values and their origin; secrets masked."""
    out = [f"# data dir: {config.data_dir}"]
    for key in SCHEMA:
        value = config.values[key.name]
        shown = "********" if key.name in SECRET_KEYS and value else _toml_value(value)
        if key.name == "storage.backends" and isinstance(value, list):  # a resp password
            shown = _toml_value([{k: "********" if k == "password" else v for k, v in b.items()}
                                 if isinstance(b, dict) else b for b in value])
        out.append(f"{key.name} = {shown}    # {config.sources[key.name]}")
    return "\n".join(out) + "\n"
