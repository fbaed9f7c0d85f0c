"""TLS: a self-signed certificate at init, and the server contexts.

A twin is reachable before its owner has a public CA certificate, so
``twin init`` makes a self-signed ECDSA P-256 certificate for the twin's names
(its domain, NAME.localhost, localhost, 127.0.0.1, ::1). Replace
``tls/cert.pem`` and ``tls/key.pem`` with real ones (Let's Encrypt) for
internet use; nothing else changes. Twin-to-twin traffic does not depend on
the certificate: every envelope is signed and encrypted end to end.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import ssl
import weakref
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERT = "tls/cert.pem"
KEY = "tls/key.pem"

log = logging.getLogger("twin.tls")
# Every server context in use, so SIGHUP can load a new certificate into them.
_serving: weakref.WeakSet[ssl.SSLContext] = weakref.WeakSet()


def make_self_signed(data_dir: Path, names: list[str], days: int = 3650) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    unique = dict.fromkeys([*names, "localhost"])
    dns: list[x509.GeneralName] = [x509.DNSName(n) for n in unique]
    loopback = ("127.0.0.1", "::1")
    ips: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(a)) for a in loopback]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(dns + ips), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = Path(data_dir) / CERT, Path(data_dir) / KEY
    cert_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def server_context(data_dir: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(Path(data_dir) / CERT, Path(data_dir) / KEY)
    return serving(ctx)


def serving(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """Register a listener's server context (also uvicorn's) for ``reload``."""
    _serving.add(ctx)
    return ctx


def reload(data_dir: Path) -> int:
    """Load ``tls/cert.pem`` and ``tls/key.pem`` again into every server context.

    In place: a context hands its certificate to each new handshake, so new
    connections get the new certificate while open ones keep theirs and go
    on undisturbed (nothing is re-bound, nothing dropped). The pair is first
    loaded into a scratch context: a broken or mismatched pair raises
    ``ssl.SSLError``/``OSError`` there and the old certificate stays in use.
    Returns the number of contexts updated."""
    cert, key = Path(data_dir) / CERT, Path(data_dir) / KEY
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    contexts = list(_serving)
    for ctx in contexts:
        ctx.load_cert_chain(cert, key)
    log.info("TLS certificate reloaded from %s into %d listener context(s)", cert, len(contexts))
    return len(contexts)


def client_context(data_dir: Path | None = None) -> ssl.SSLContext:
    """A client context that trusts this twin's own certificate (for tests and status)."""
    ctx = ssl.create_default_context()
    if data_dir is not None:
        ctx.load_verify_locations(Path(data_dir) / CERT)
    return ctx


def local_context(data_dir: Path) -> ssl.SSLContext:
    """For the owner's CLI talking to its own running twin (the local API).

    The twin's own certificate is the only trust anchor, which already pins
    the server; the name is not checked because the listener may be bound to
    any address (``listen.host``) that the certificate does not name."""
    ctx = client_context(data_dir)
    ctx.check_hostname = False
    return ctx
