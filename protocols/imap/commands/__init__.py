"""The command table: which handler runs each command, in which states.

Each command group module registers its handlers with ``@command(name,
states...)``; the session looks a command up here, refuses it with BAD in a
state that does not allow it, and otherwise awaits the handler. A handler
returns the text of the tagged OK (``None`` for "NAME completed") or raises
``ImapError`` / a core error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from protocols.imap.parser import Command
    from protocols.imap.session import Session

NOT_AUTH, AUTH, SELECTED = "not authenticated", "authenticated", "selected"
ANY = (NOT_AUTH, AUTH, SELECTED)
ANSWERED = "\0answered"  # a handler that sent its own tagged response returns this
Handler = Callable[["Session", "Command"], Awaitable[str | None]]


@dataclass(frozen=True)
class Spec:
    handler: Handler
    states: tuple[str, ...]
    uid: bool  # has a UID variant


COMMANDS: dict[str, Spec] = {}


def command(name: str, *states: str, uid: bool = False) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        COMMANDS[name] = Spec(fn, states, uid)
        return fn
    return register


def load() -> dict[str, Spec]:
    """Import every command group (each registers itself) and return the table."""
    from protocols.imap.commands import (  # noqa: F401
        any_state,
        auth,
        fetch,
        idle,
        mailbox,
        message,
        notify,
        search,
        sort,
        updates,
    )
    return COMMANDS
