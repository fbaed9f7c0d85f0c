"""Certificates from an ACME CA (RFC 8555) for the twin's names, renewed in time.

Why the ``acme`` library: it is certbot's protocol layer, kept by the people
who run Let's Encrypt's client; writing JWS, nonces and order polling by hand
is how clients break when the CA changes something. The library is
synchronous (requests), so each issuance runs in a thread.

How it works, with ``tls.acme = true``:

- ``Http01Responder`` listens for plain HTTP on ``http.acme_port`` (80 in
  production: RFC 8555 §8.3 has the CA connect to port 80) and answers only
  ``GET /.well-known/acme-challenge/TOKEN``; anything else gets a redirect to
  HTTPS. It is a few lines over asyncio streams rather than a second uvicorn,
  because what it parses is one request line, bounded to 4 KiB and 10 s.
- ``CertManager.run`` checks ``tls/cert.pem``: a self-signed certificate,
  one that does not name every ``tls.acme_names`` or one that is due (within
  ``tls.acme_renew_days`` of expiry, or with a third of its life left,
  whichever comes first: short-lived certificates renew in time too) is
  replaced. A new key and CSR, an order, the
  HTTP-01 challenges answered, the order finalized; the chain and key are
  written next to each other and loaded into every TLS listener in place
  (``core.tls.reload``): open connections keep theirs, nothing is dropped.
- When the CA cannot be reached or refuses, the certificate in use stays (the
  self-signed one on a new twin) and ``state`` says why and when the next try
  is; tries back off from a minute to six hours.

The ACME account key is ``tls/acme-account.pem``, made on the first run.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from core import net, tls

log = logging.getLogger("twin.acme")

ACCOUNT_KEY = "tls/acme-account.pem"
CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
MAX_REQUEST_HEAD = 4096
REQUEST_TIMEOUT = 10.0
RETRY_STEPS = (60, 300, 1800, 3600, 6 * 3600)


@dataclass
class AcmeState:
    """What ``twin status`` shows of ACME."""

    status: str = "starting"  # starting | valid | renewing | failing
    detail: str = ""
    not_after: float | None = None
    next_check: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CertInfo:
    """The certificate a data dir serves: its names, expiry and who issued it."""

    names: tuple[str, ...]
    not_before: float
    not_after: float
    issuer: str
    self_signed: bool

    def renew_at(self, renew_days: int) -> float:
        """When to replace it: ``renew_days`` before expiry, or with a third of
        its life left for short-lived certificates (Let's Encrypt offers 6-day
        ones), whichever comes first."""
        lifetime = self.not_after - self.not_before
        return self.not_after - max(min(renew_days * 86400.0, lifetime / 3), 0.0)

    def to_json(self) -> dict[str, Any]:
        return {"names": list(self.names), "not_after": self.not_after,
                "expires": dt.datetime.fromtimestamp(self.not_after, dt.UTC).isoformat(),
                "issuer": self.issuer, "self_signed": self.self_signed}


def cert_info(data_dir: Path) -> CertInfo | None:
    """The first certificate of ``tls/cert.pem``, or None when there is none to read."""
    try:
        cert = x509.load_pem_x509_certificate((Path(data_dir) / tls.CERT).read_bytes())
    except (OSError, ValueError):
        return None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = tuple(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return CertInfo(names, cert.not_valid_before_utc.timestamp(),
                    cert.not_valid_after_utc.timestamp(), cert.issuer.rfc4514_string(),
                    cert.issuer == cert.subject)


class Http01Responder:
    """The plain-HTTP listener that answers the CA's HTTP-01 challenges (RFC 8555 §8.3)."""

    def __init__(self, host: str, port: int, https_port: int) -> None:
        self._sock = net.bind(host, port, "the ACME HTTP-01 listener", "http.acme_port")
        self.port = self._sock.getsockname()[1]
        self.https_port = https_port
        self.tokens: dict[str, str] = {}  # token -> key authorization
        self.info = [net.ListenerInfo("acme-http", host, self.port, "none")]
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, sock=self._sock,
                                                  limit=MAX_REQUEST_HEAD)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._sock.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ConnectionError):
            writer.close()
            return
        if len(head) > MAX_REQUEST_HEAD:
            writer.close()
            return
        writer.write(self.answer(head))
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        writer.close()

    def answer(self, head: bytes) -> bytes:
        """The whole response to one request head."""
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
            return _response(400, b"bad request\n")
        path = parts[1].decode("ascii", "replace")
        if path.startswith(CHALLENGE_PREFIX):
            authorization = self.tokens.get(path[len(CHALLENGE_PREFIX):])
            if authorization is None:
                return _response(404, b"no such challenge\n")
            body = authorization.encode()
            return _response(200, b"" if parts[0] == b"HEAD" else body, len(body))
        host = _host_header(head) or "localhost"
        return _response(301, b"", 0, f"Location: https://{host}:{self.https_port}{path}\r\n")


def _host_header(head: bytes) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"host":
            host = value.strip().decode("ascii", "replace").rsplit(":", 1)[0]
            return host if host.replace(".", "").replace("-", "").isalnum() else None
    return None


def _response(status: int, body: bytes, length: int | None = None, extra: str = "") -> bytes:
    reason = {200: "OK", 301: "Moved Permanently", 400: "Bad Request", 404: "Not Found"}[status]
    size = len(body) if length is None else length
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {size}\r\nConnection: close\r\n{extra}\r\n").encode() + body


class CertManager:
    """Gets and renews the twin's certificate from ``directory`` (see the module doc)."""

    def __init__(self, data_dir: Path, names: list[str], *, directory: str, email: str,
                 ca_bundle: str, renew_days: int, responder: Http01Responder) -> None:
        self.data_dir, self.names = Path(data_dir), [n.lower() for n in names]
        self.directory, self.email, self.ca_bundle = directory, email, ca_bundle
        self.renew_days, self.responder = renew_days, responder
        self.state = AcmeState()
        self.on_change: list[Any] = []  # callables, told when state changes

    def due(self, now: float | None = None) -> str | None:
        """Why the certificate in use must be replaced now, or None."""
        info = cert_info(self.data_dir)
        if info is None:
            return "no certificate"
        if info.self_signed:
            return "the certificate is self-signed"
        missing = set(self.names) - {n.lower() for n in info.names}
        if missing:
            return f"the certificate does not name {', '.join(sorted(missing))}"
        if (now or time.time()) >= info.renew_at(self.renew_days):
            return "the certificate is due for renewal"
        return None

    async def run(self) -> None:
        failures = 0
        while True:
            reason = self.due()
            if reason is None:
                info = cert_info(self.data_dir)
                assert info is not None
                wait = max(1.0, min(info.renew_at(self.renew_days) - time.time(), 12 * 3600.0))
                self._set("valid", f"issued by {info.issuer}", info.not_after,
                          time.time() + wait)
                failures = 0
                await asyncio.sleep(wait)
                continue
            self._set("renewing", reason, None, None)
            log.info("ACME: asking %s for a certificate for %s (%s)", self.directory,
                     ", ".join(self.names), reason)
            try:
                await asyncio.to_thread(self.obtain)
                tls.reload(self.data_dir)
                still = self.due()
                if still is not None:  # an expired or misnamed certificate: back off
                    raise RuntimeError(f"the CA's new certificate is no better: {still}")
                info = cert_info(self.data_dir)
                log.info("ACME: new certificate for %s, valid until %s", ", ".join(self.names),
                         info.to_json()["expires"] if info else "?")
            except Exception as exc:  # the CA's and the network's failures alike
                wait = RETRY_STEPS[min(failures, len(RETRY_STEPS) - 1)]
                failures += 1
                detail = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("ACME: no certificate (%s); the current one stays in use, next "
                            "try in %d s", detail, wait)
                self._set("failing", detail, None, time.time() + wait)
                await asyncio.sleep(wait)

    def _set(self, status: str, detail: str, not_after: float | None,
             next_check: float | None) -> None:
        self.state = AcmeState(status, detail, not_after, next_check)
        for listener in self.on_change:
            listener()

    # -- one issuance (a thread: the acme library blocks)

    def obtain(self) -> None:
        from acme import challenges, client, crypto_util, errors, messages
        from josepy.jwa import ES256
        from josepy.jwk import JWKEC

        account_key = JWKEC(key=self._account_key())
        # requests takes a CA bundle's path where the library's type says bool
        verify: Any = self.ca_bundle or True
        network = client.ClientNetwork(account_key, alg=ES256, user_agent="twin",
                                       verify_ssl=verify, timeout=30)
        acme = client.ClientV2(client.ClientV2.get_directory(self.directory, network),
                               net=network)
        registration = messages.NewRegistration.from_data(
            email=self.email or None, terms_of_service_agreed=True)
        try:
            acme.new_account(registration)
        except errors.ConflictError as existing:  # this key has an account already
            network.account = messages.RegistrationResource(
                uri=existing.location, body=messages.Registration())
        cert_key = ec.generate_private_key(ec.SECP256R1())
        key_pem = cert_key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
        order = acme.new_order(crypto_util.make_csr(key_pem, self.names))
        answered = []
        for authz in order.authorizations:
            chall = next((c for c in authz.body.challenges
                          if isinstance(c.chall, challenges.HTTP01)), None)
            if chall is None:
                raise RuntimeError(f"the CA offers no HTTP-01 challenge for "
                                   f"{authz.body.identifier.value}")
            response, validation = chall.response_and_validation(account_key)
            token = chall.chall.encode("token")
            self.responder.tokens[token] = validation
            answered.append(token)
            acme.answer_challenge(chall, response)
        try:
            deadline = dt.datetime.now() + dt.timedelta(seconds=90)
            done = acme.poll_and_finalize(order, deadline=deadline)
        finally:
            for token in answered:
                self.responder.tokens.pop(token, None)
        self._write(done.fullchain_pem.encode(), key_pem)

    def _account_key(self) -> ec.EllipticCurvePrivateKey:
        path = self.data_dir / ACCOUNT_KEY
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            return key
        key = ec.generate_private_key(ec.SECP256R1())
        _write_private(_new(path), key.private_bytes(serialization.Encoding.PEM,
                                                     serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
        os.replace(_new(path), path)
        return key

    def _write(self, chain: bytes, key: bytes) -> None:
        """Both files written in full as ``*.new``, then renamed key first;
        ``finish_write`` completes a pair a crash left half renamed."""
        cert, keyfile = self.data_dir / tls.CERT, self.data_dir / tls.KEY
        _write_private(_new(keyfile), key)
        _write_private(_new(cert), chain)
        os.replace(_new(keyfile), keyfile)
        os.replace(_new(cert), cert)


def finish_write(data_dir: Path) -> None:
    """At start: a certificate whose key was already renamed into place goes in
    too, so the pair the listeners load matches (a lone ``cert.pem.new`` means
    the key went first; a ``key.pem.new`` means neither did: dropped)."""
    cert, keyfile = Path(data_dir) / tls.CERT, Path(data_dir) / tls.KEY
    if _new(keyfile).exists():
        _new(keyfile).unlink()
        _new(cert).unlink(missing_ok=True)
    elif _new(cert).exists():
        os.replace(_new(cert), cert)


def _new(path: Path) -> Path:
    return path.with_name(path.name + ".new")


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())

