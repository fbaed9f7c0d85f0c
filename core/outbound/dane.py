"""DANE for SMTP (RFC 7672): matching an MX host's certificate against its TLSA records.

Pure functions over DER certificates, so the rules can be tested against real
certificates without a signed zone. Whether the records may be used at all
(a DNSSEC-authenticated answer from a trusted resolver) is decided in
``core.outbound.dnsq``; how a delivery uses the verdict, in
``core.outbound.transport``.

Only DANE-TA(2) and DANE-EE(3) are usable for SMTP (RFC 7672 §3.1.3: PKIX-TA(0)
and PKIX-EE(1) records are treated as unusable, since MTAs have no common set
of trusted CAs). Selector 0 (whole certificate) or 1 (SubjectPublicKeyInfo),
matching type 0 (exact), 1 (SHA-256) or 2 (SHA-512); anything else is unusable
(RFC 6698 §2.1, RFC 7672 §2.2). At most ``MAX_RECORDS`` records and ``MAX_CHAIN``
certificates are looked at.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ssl
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from core.outbound.dnsq import Tlsa

DANE_TA, DANE_EE = 2, 3
MAX_RECORDS = 16
MAX_CHAIN = 10


def usable(records: Sequence[Tlsa]) -> list[Tlsa]:
    """The records a sender can use (RFC 7672 §3.1.3); when none are, the host is
    treated as having no TLSA records at all (RFC 7672 §2.2)."""
    return [r for r in records[:MAX_RECORDS]
            if r.usage in (DANE_TA, DANE_EE) and r.selector in (0, 1) and r.mtype in (0, 1, 2)]


def _selected(cert_der: bytes, selector: int) -> bytes:
    if selector == 0:
        return cert_der
    cert = x509.load_der_x509_certificate(cert_der)
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def matches(record: Tlsa, cert_der: bytes) -> bool:
    """Whether ``record``'s association data is this certificate (RFC 6698 §2.1.2-2.1.3)."""
    data = _selected(cert_der, record.selector)
    if record.mtype == 1:
        data = hashlib.sha256(data).digest()
    elif record.mtype == 2:
        data = hashlib.sha512(data).digest()
    return data == record.data


def check(records: Sequence[Tlsa], chain: Sequence[bytes], hostname: str,
          now: dt.datetime | None = None) -> str | None:
    """None when the server's ``chain`` (DER, leaf first) satisfies ``records``;
    otherwise why not.

    DANE-EE(3), RFC 7672 §3.1.1: the leaf must match; its names and validity dates
    are not checked (the DNS, signed, says this key is the server's).
    DANE-TA(2), RFC 7672 §3.1.2: some certificate the server sent must match, and the
    leaf must chain up to it and carry ``hostname`` (the MX host name, §3.2.2), with
    the usual validity checks; the server must send that trust anchor (§3.1.2), so
    one not in the chain is not looked for elsewhere."""
    records = usable(records)
    if not records:
        return "no usable TLSA records"
    if not chain:
        return "the server sent no certificate"
    chain = list(chain[:MAX_CHAIN])
    leaf = chain[0]
    try:
        if any(r.usage == DANE_EE and matches(r, leaf) for r in records):
            return None
        anchors = [c for c in chain
                   if any(r.usage == DANE_TA and matches(r, c) for r in records)]
    except ValueError as exc:
        return f"unreadable certificate: {exc}"
    if not anchors:
        return "no certificate of the server matches its TLSA records"
    try:
        leaf_cert = x509.load_der_x509_certificate(leaf)
        others = [x509.load_der_x509_certificate(c) for c in chain[1:]]
    except ValueError as exc:
        return f"unreadable certificate: {exc}"
    problem = "no certificate of the server matches its TLSA records"
    for anchor in anchors:
        anchor_cert = x509.load_der_x509_certificate(anchor)
        builder = PolicyBuilder().store(Store([anchor_cert]))
        if now is not None:
            builder = builder.time(now)
        try:
            verifier = builder.build_server_verifier(x509.DNSName(hostname))
            verifier.verify(leaf_cert, others)
            return None
        except (VerificationError, ValueError) as exc:
            problem = f"DANE-TA: the certificate does not chain to the TLSA trust anchor " \
                      f"for {hostname}: {exc}"
    return problem


def peer_chain(tls: ssl.SSLObject | ssl.SSLSocket | None) -> list[bytes]:
    """The certificates the server sent, leaf first, as DER.

    Python 3.13 has ``get_unverified_chain``; 3.11 and 3.12 have it only on the
    private ``_sslobj``. Without either, only the leaf (enough for DANE-EE)."""
    if tls is None:
        return []
    getter = getattr(tls, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(tls, "_sslobj", None), "get_unverified_chain", None)
    if getter is not None:
        try:
            chain = getter() or []
        except (ssl.SSLError, ValueError):
            chain = []
        out = []
        for cert in chain[:MAX_CHAIN]:
            if isinstance(cert, bytes):
                out.append(cert)
            else:  # _ssl.Certificate
                out.append(cert.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
        if out:
            return out
    leaf = tls.getpeercert(binary_form=True)
    return [leaf] if leaf else []
