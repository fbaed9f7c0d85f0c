"""Adapters that let existing clients talk to a twin: SMTP, IMAP, WebDAV.

Each adapter translates its wire protocol to core calls and maps core's
neutral errors to its own replies in one table keyed by the error's code
(``core.errors.ErrorCode``, which lists the tables). Listeners are registered with
the ``twin.listeners`` entry point group and HTTP routes with ``twin.http``
(see pyproject.toml), so core finds them without importing them.
"""
