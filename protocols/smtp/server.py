"""The three SMTP listeners in the twin's own event loop.

aiosmtpd's ``Controller`` runs a second loop in a thread; the twin has one
loop, so each listener is a plain ``loop.create_server`` on a socket from
``core.net.bind`` with a ``TwinSMTP`` protocol per connection.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from core import net, tls
from core.limits import Budget, ConnectionLimits
from protocols.smtp import quiet
from protocols.smtp.dns import Resolver, system_resolver
from protocols.smtp.handler import InboundHandler, SubmissionHandler
from protocols.smtp.session import TwinSMTP
from protocols.smtp.verify import Verifier

if TYPE_CHECKING:
    from core.service import Service

log = logging.getLogger("twin.smtp")
LINE_LIMIT_AUTH = 5  # AUTH attempts per connection


class SmtpListener:
    def __init__(self, service: Service, *, resolver: Resolver | None = None) -> None:
        self.service = service
        conf = service.config
        if resolver is None and conf.bool("smtp.verify_dns"):
            resolver = system_resolver(conf.float("smtp.dns_timeout"),
                                       conf.str("smtp.nameserver"))
        self.verifier = Verifier(resolver, dns_timeout=conf.float("smtp.dns_timeout"),
                                 dns_budget=conf.float("smtp.dns_budget"),
                                 skip_loopback=not conf.bool("smtp.check_loopback"))
        self.info: list[net.ListenerInfo] = []
        # Two budgets (#15.9): strangers on the inbound port cannot take the
        # owner's submission slots, and on submission a session that has logged
        # in is never closed for a new one (core.limits).
        total, per_ip = conf.int("smtp.max_sessions"), conf.int("smtp.max_per_ip")
        self.inbound_limits = ConnectionLimits(Budget(
            "SMTP inbound", total=total, per_ip=per_ip, unauthenticated=total, evict=False))
        self.submission_limits = ConnectionLimits(Budget(
            "SMTP submission", total=total, per_ip=per_ip,
            unauthenticated=min(total, conf.int("smtp.max_unauthenticated"))))
        self._servers: list[asyncio.Server] = []

    def _factory(self, handler: Any, *, tls_context: ssl.SSLContext | None,
                 implicit_tls: bool, submission: bool) -> Callable[[], TwinSMTP]:
        """A protocol factory; the settings are read once here, not per connection."""
        conf = self.service.config
        plaintext_auth = conf.bool("listen.plaintext_auth")
        settings: dict[str, Any] = dict(
            service=self.service,
            gate=self.submission_limits if submission else self.inbound_limits,
            login_timeout=conf.float("smtp.login_timeout") if submission else 0.0,
            implicit_tls=implicit_tls,
            hostname=conf.str("smtp.hostname") or conf.domain,
            ident="twin ESMTP",
            data_size_limit=conf.int("smtp.max_message_size"),
            enable_SMTPUTF8=True,
            decode_data=False,
            tls_context=tls_context,
            require_starttls=submission and tls_context is not None and not plaintext_auth,
            timeout=conf.float("smtp.timeout"),
            auth_required=submission,
            auth_require_tls=not implicit_tls and not plaintext_auth,
            auth_exclude_mechanism=() if submission else ("PLAIN", "LOGIN"),
            command_call_limit={"AUTH": LINE_LIMIT_AUTH, "*": 10**9},
            # without it aiosmtpd looks the loop up per connection, under a
            # warnings.catch_warnings() (a few percent of a short session)
            loop=asyncio.get_running_loop(),
        )

        def make() -> TwinSMTP:
            if not implicit_tls:
                return TwinSMTP(handler, **settings)
            with warnings.catch_warnings():  # aiosmtpd cannot see implicit TLS and warns
                warnings.simplefilter("ignore", UserWarning)
                return TwinSMTP(handler, **settings)
        return make

    async def start(self) -> None:
        quiet.install()  # aiosmtpd's two per-session warnings
        conf = self.service.config
        loop = asyncio.get_running_loop()
        ctx = tls.server_context(self.service.data_dir)
        host = conf.str("listen.host")
        inbound = InboundHandler(self.service, self.verifier)
        submission = SubmissionHandler(self.service)
        plans = [
            ("smtp", "smtp.port", "SMTP inbound", inbound, "starttls", False),
            ("submission", "smtp.submission_port", "SMTP submission", submission, "starttls",
             True),
            ("submissions", "smtp.submissions_port", "SMTP submission (TLS)", submission,
             "implicit", True),
        ]
        try:
            for name, key, what, handler, mode, is_submission in plans:
                sock = net.bind(host, conf.int(key), f"the {what} listener", key)
                implicit = mode == "implicit"
                factory = self._factory(handler, tls_context=None if implicit else ctx,
                                        implicit_tls=implicit, submission=is_submission)
                server = await loop.create_server(factory, sock=sock,
                                                  ssl=ctx if implicit else None)
                self._servers.append(server)
                self.info.append(net.ListenerInfo(name, host, sock.getsockname()[1], mode))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), timeout=3)
            except TimeoutError:
                log.warning("an SMTP session did not end within 3 s of shutdown")
        self._servers.clear()
