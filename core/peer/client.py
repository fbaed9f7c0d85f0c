"""HTTP transport to other twins: one pooled httpx.AsyncClient.

Peers' certificates are self-signed, so this client does not verify them
(``verify=False``). That is acceptable here and ONLY here: TLS between twins
gives transport privacy (it hides who asks for what from the network), while
authenticity and confidentiality come from the envelopes themselves: every
envelope and ack is signed with the twin's phonebook key and its payload and
streams are encrypted to the recipient. A man in the middle can drop traffic,
never read or forge it. Do not copy this setting to any other client.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from core.errors import Unavailable
from core.peer.errors import rejected

log = logging.getLogger("twin.peer")
ENVELOPE_PATH = "/twin/v1/envelope"
MEDIA_TYPE = "application/x-twin-envelope"
MAX_REFUSAL = 256 * 1024


class Refused(Exception):
    """The peer answered with a refusal (parsed); ``ack`` set for a replay."""

    def __init__(self, code: str, message: str, ack: bytes | None) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.ack = code, message, ack

    def error(self) -> Exception:
        return rejected(self.code, self.message)


class PeerClient:
    def __init__(self, timeout: float) -> None:
        self.http = httpx.AsyncClient(
            verify=False,  # noqa: S501 - see the module docstring: envelopes carry the security
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            headers={"content-type": MEDIA_TYPE},
        )

    @asynccontextmanager
    async def exchange(self, endpoint: str, raw: bytes) -> AsyncIterator[httpx.Response]:
        """POST one envelope; yields the 200 response still streaming, or raises.

        ``Refused`` for a refusal, ``Unavailable`` when the peer cannot be reached.
        """
        url = endpoint.rstrip("/") + ENVELOPE_PATH
        try:
            async with self.http.stream("POST", url, content=raw) as resp:
                if resp.status_code != 200:
                    raise _refused(resp.status_code, await _read_capped(resp))
                yield resp
        except httpx.TransportError as exc:
            raise Unavailable(f"peer at {endpoint} unreachable: {type(exc).__name__}") from exc

    async def close(self) -> None:
        await self.http.aclose()


async def _read_capped(resp: httpx.Response) -> bytes:
    out = bytearray()
    async for chunk in resp.aiter_bytes():
        out += chunk
        if len(out) > MAX_REFUSAL:
            break
    return bytes(out)


def _refused(status: int, body: bytes) -> Refused:
    try:
        data = json.loads(body)
        code, message = str(data["code"]), str(data.get("message", ""))[:500]
        ack = base64.b64decode(data["ack"]) if data.get("ack") else None
    except (ValueError, KeyError, TypeError):
        return Refused("unavailable", f"peer answered HTTP {status} without a refusal", None)
    return Refused(code, message, ack)
