"""Thunderbird autoconfig: the account is set up from the address and password alone.

Serves ``config-v1.1.xml`` (the Mozilla ISPDB format) at both places
Thunderbird looks on the mail domain's web server. The host name in it is
the one the client used to reach us (the request's Host), so whatever name
resolved to this twin for autoconfig also works for IMAP and SMTP; the ports
are the listeners' real ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from core.service import Service

PATHS = ("/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml")
FALLBACK_KEYS = {"imaps": "imap.tls_port", "imap": "imap.port",
                 "submissions": "smtp.submissions_port", "submission": "smtp.submission_port"}
LISTENER_NAMES = {"imaps": ("imaps", "imap-tls", "imap_tls"), "imap": ("imap",),
                  "submissions": ("submissions",), "submission": ("submission",)}


def _ports(service: Service) -> dict[str, int]:
    live = {i.name: i.port for i in service.listener_info()}
    out = {}
    for role, key in FALLBACK_KEYS.items():
        port = next((live[n] for n in LISTENER_NAMES[role] if n in live), None)
        out[role] = port if port is not None else service.config.int(key)
    return out


def _server(kind: str, host: str, port: int, socket_type: str) -> str:
    tag = "incomingServer" if kind == "imap" else "outgoingServer"
    return (f'    <{tag} type="{kind}">\n'
            f"      <hostname>{escape(host)}</hostname>\n"
            f"      <port>{port}</port>\n"
            f"      <socketType>{socket_type}</socketType>\n"
            f"      <authentication>password-cleartext</authentication>\n"
            f"      <username>%EMAILADDRESS%</username>\n"
            f"    </{tag}>\n")


def render(service: Service, host: str) -> str:
    domain = service.config.domain
    ports = _ports(service)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<clientConfig version="1.1">\n'
        f'  <emailProvider id="{escape(domain)}">\n'
        f"    <domain>{escape(domain)}</domain>\n"
        f"    <displayName>{escape(service.config.name)} (twin)</displayName>\n"
        f"    <displayShortName>{escape(service.config.name)}</displayShortName>\n"
        + _server("imap", host, ports["imaps"], "SSL")
        + _server("imap", host, ports["imap"], "STARTTLS")
        + _server("smtp", host, ports["submissions"], "SSL")
        + _server("smtp", host, ports["submission"], "STARTTLS")
        + "  </emailProvider>\n</clientConfig>\n")


def routes(service: Service) -> list[BaseRoute]:
    async def config_xml(request: Request) -> Response:
        host = (request.url.hostname or service.config.domain)[:253]
        return Response(render(service, host), media_type="application/xml",
                        headers={"Cache-Control": "no-cache"})

    return [Route(path, config_xml, methods=["GET"]) for path in PATHS]
