"""The owner-only local API: the owner's own ``twin …`` commands, into the running twin.

Not twin-to-twin (that is ``core.peer``) and not for mail or file clients
(``protocols``): the owner's CLI on this host, authorised by the random token
the running twin writes to ``run/local.token`` (0600). What callers use:

    OwnerToken()                      # held by the service; ``issue(data_dir)`` at start
    token.admits(headers) -> bool     # constant-time check of ``Authorization: Bearer``
    TOKEN_FILE                        # where the CLI reads it (relative to the data dir)
    routes(service) -> list[BaseRoute]   # every owner route, each behind the token

Modules: ``token`` (the token and the ``OwnerOnly`` guard), ``api`` (the routes
mounted together, plus ``twin share`` and ``twin send``), ``storage`` (``twin
storage …``), ``transfer`` (``twin mail import|export``), ``mail`` (``twin mail
quarantine|send``). To add an owner command that must run inside the twin,
add a route to one of these (or a module mounted in ``api.routes``) behind
``OwnerOnly``.
"""

from __future__ import annotations

from core.owner.api import routes
from core.owner.token import TOKEN_FILE, OwnerToken

__all__ = ["TOKEN_FILE", "OwnerToken", "routes"]
