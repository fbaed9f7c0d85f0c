"""Account set-up from the address and password alone, for each client family.

- Thunderbird (and K-9, FairEmail): ``config-v1.1.xml`` (the Mozilla ISPDB
  format) at both places Thunderbird looks on the mail domain's web server.
- Outlook and other Exchange-minded clients: Autodiscover "POX" (the plain
  XML protocol, MS-OXDISCO): a POST of the address to
  ``/autodiscover/autodiscover.xml`` answered with IMAP and SMTP settings.
- Apple Mail (macOS, iOS): a configuration profile (``.mobileconfig``, a
  property list) from ``/apple/twin.mobileconfig?email=ADDRESS`` that the
  user opens to add the account.
- Everything else: the RFC 6186 SRV records that ``twin dns`` lists.

Also here, as it is served to other mail servers on the same listener: the
domain's MTA-STS policy (RFC 8461, ``core.zone.policy``).

The host name in each is the one the client used to reach us (the request's
Host), so whatever name resolved to this twin also works for IMAP and SMTP;
the ports are the listeners' real ones. The Autodiscover body is read within
``MAX_AUTODISCOVER`` bytes and parsed with defusedxml (no entities, no DTDs)
before anything else: it is the one input here that comes unauthenticated.
"""

from __future__ import annotations

import plistlib
import uuid
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from defusedxml import ElementTree as SafeXML
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from core import zone

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


AUTODISCOVER_PATHS = ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml")
MOBILECONFIG_PATH = "/apple/twin.mobileconfig"
MAX_AUTODISCOVER = 16 * 1024
POX_REQUEST = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
POX_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"


def autodiscover_address(body: bytes) -> str | None:
    """The ``EMailAddress`` of an Autodiscover POX request, or None when the
    body is not one (malformed, entities, oversized: all the same here)."""
    if len(body) > MAX_AUTODISCOVER:
        return None
    try:
        root = SafeXML.fromstring(body)
    except Exception:  # defusedxml's refusals and expat's errors alike
        return None
    found = root.find(f".//{{{POX_REQUEST}}}EMailAddress")
    text = (found.text or "").strip() if found is not None else ""
    return text if "@" in text and len(text) <= 254 and "<" not in text else None


def _pox_protocol(kind: str, host: str, port: int, ssl: bool, login: str) -> str:
    return (f"      <Protocol>\n        <Type>{kind}</Type>\n"
            f"        <Server>{escape(host)}</Server>\n        <Port>{port}</Port>\n"
            f"        <LoginName>{escape(login)}</LoginName>\n"
            f"        <SPA>off</SPA>\n        <SSL>{'on' if ssl else 'off'}</SSL>\n"
            f"        <AuthRequired>on</AuthRequired>\n      </Protocol>\n")


def render_autodiscover(service: Service, host: str, address: str) -> str:
    """MS-OXDISCO's POX answer: IMAP and SMTP over implicit TLS."""
    ports = _ports(service)
    return ('<?xml version="1.0" encoding="utf-8"?>\n'
            '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/'
            'responseschema/2006">\n'
            f'  <Response xmlns="{POX_RESPONSE}">\n    <Account>\n'
            "      <AccountType>email</AccountType>\n      <Action>settings</Action>\n"
            + _pox_protocol("IMAP", host, ports["imaps"], True, address)
            + _pox_protocol("SMTP", host, ports["submissions"], True, address)
            + "    </Account>\n  </Response>\n</Autodiscover>\n")


def render_mobileconfig(service: Service, host: str, address: str) -> bytes:
    """An Apple configuration profile with one mail account (no password in it:
    the device asks for the app password when the profile is installed)."""
    ports = _ports(service)
    domain = service.config.domain
    account = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"twin.{domain}.mail",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"mail.{address}")).upper(),
        "PayloadDisplayName": f"{address} (twin)",
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAccountDescription": f"{address} (twin)",
        "EmailAddress": address,
        "IncomingMailServerHostName": host,
        "IncomingMailServerPortNumber": ports["imaps"],
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerUsername": address,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": host,
        "OutgoingMailServerPortNumber": ports["submissions"],
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerUsername": address,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"twin.{domain}",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"profile.{address}")).upper(),
        "PayloadDisplayName": f"Mail on {domain} (twin)",
        "PayloadContent": [account],
    }
    return plistlib.dumps(profile)


def _address(service: Service, given: str | None) -> str:
    """The address a client asked about, if it is plausible; the owner's otherwise."""
    if given and "@" in given and len(given) <= 254 and not any(c in given for c in "<>&\"'"):
        return given.strip()
    return f"{service.config.name}@{service.config.domain}"


def routes(service: Service) -> list[BaseRoute]:
    def host_of(request: Request) -> str:
        return (request.url.hostname or service.config.domain)[:253]

    async def config_xml(request: Request) -> Response:
        return Response(render(service, host_of(request)), media_type="application/xml",
                        headers={"Cache-Control": "no-cache"})

    async def autodiscover(request: Request) -> Response:
        # RFC-less but MS-OXDISCO §3.1.5: the POX request names the address
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_AUTODISCOVER:
                return Response("request too large\n", 413, media_type="text/plain")
        address = autodiscover_address(body)
        if address is None:
            return Response("not an Autodiscover request\n", 400, media_type="text/plain")
        return Response(render_autodiscover(service, host_of(request), address),
                        media_type="application/xml", headers={"Cache-Control": "no-cache"})

    async def mobileconfig(request: Request) -> Response:
        address = _address(service, request.query_params.get("email"))
        return Response(render_mobileconfig(service, host_of(request), address),
                        media_type="application/x-apple-aspen-config",
                        headers={"Content-Disposition": 'attachment; filename="twin.mobileconfig"'})

    async def mta_sts(request: Request) -> Response:
        # RFC 8461 §3.3: text/plain, 200, no redirect; served on every name, the
        # certificate decides whether senders believe it (it must name mta-sts.DOMAIN)
        return Response(zone.policy(service.config), media_type="text/plain")

    routes: list[BaseRoute] = [Route(path, config_xml, methods=["GET"]) for path in PATHS]
    routes.append(Route(zone.POLICY_PATH, mta_sts, methods=["GET"]))
    routes += [Route(path, autodiscover, methods=["POST"]) for path in AUTODISCOVER_PATHS]
    routes.append(Route(MOBILECONFIG_PATH, mobileconfig, methods=["GET"]))
    return routes
