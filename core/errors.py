"""Core's neutral errors.

Core never speaks a wire protocol. It raises one of these, and each adapter
(SMTP, IMAP, WebDAV, the peer API) maps them to its own replies in exactly one
table, so a reader can see in one place what a client is told when, say, the
ACL says no.
"""

from __future__ import annotations


class TwinError(Exception):
    """Base of every error core raises on purpose.

    ``code`` is a short stable token for logs, JSON output and peer refusals;
    the message is for humans and never contains a secret.
    """

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class NotFound(TwinError):
    """The named thing does not exist (or the caller may not know that it does)."""

    code = "not_found"


class Forbidden(TwinError):
    """The caller is known, but the ACL or a policy refuses the request."""

    code = "forbidden"


class Conflict(TwinError):
    """The request contradicts current state: exists already, locked, key changed."""

    code = "conflict"


class Invalid(TwinError):
    """The input is malformed or over a limit; retrying it unchanged will not help."""

    code = "invalid"


class Unavailable(TwinError):
    """A dependency (backend, peer, phonebook) is down; retrying later may help."""

    code = "unavailable"


class PeerRejected(TwinError):
    """Another twin refused our envelope; ``code`` carries its refusal code."""

    code = "peer_rejected"


class ConfigError(Invalid):
    """The configuration is wrong; the message names the key and the file."""

    code = "config"
