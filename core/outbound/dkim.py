"""The twin's DKIM key: generated at first use, kept 0600 in the data dir.

RSA-2048 rather than ed25519 (RFC 8463) because many receivers still verify
only rsa-sha256; a signature nobody checks protects nothing. The key is not
derived from the identity seed on purpose: a DKIM key is published in DNS and
rotated independently, and leaking it must not endanger the twin's identity.
"""

from __future__ import annotations

import base64
import os
import threading
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from core.errors import Invalid

KEY_FILE = "dkim/rsa.key"
SIGNED_HEADERS = (b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to",
                  b"in-reply-to", b"references", b"mime-version", b"content-type",
                  b"content-transfer-encoding")
_lock = threading.Lock()


class DkimKey:
    """Signs outgoing mail as ``selector._domainkey.domain``."""

    def __init__(self, data_dir: Path, domain: str, selector: str) -> None:
        self.path = Path(data_dir) / KEY_FILE
        self.domain = domain
        self.selector = selector
        self._pem: bytes | None = None

    def private_pem(self) -> bytes:
        """The PKCS#1 PEM key, created (0600, fsynced) the first time it is needed."""
        if self._pem is None:
            with _lock:
                if not self.path.exists():
                    self._generate()
                mode = self.path.stat().st_mode & 0o777
                if mode & 0o077:
                    raise Invalid(f"{self.path} is readable by others (mode {mode:o}); "
                                  f"run chmod 600 {self.path}")
                self._pem = self.path.read_bytes()
        return self._pem

    def _generate(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def public_b64(self) -> str:
        key = serialization.load_pem_private_key(self.private_pem(), password=None)
        der = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode()

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def txt_record(self) -> str:
        """The TXT value to publish at ``record_name``."""
        return f"v=DKIM1; k=rsa; p={self.public_b64()}"

    def txt_strings(self) -> list[str]:
        """``txt_record`` as the character-strings of one TXT record.

        A DNS character-string holds at most 255 bytes (RFC 1035 §3.3); a
        2048-bit key's record is ~410, so zone files and DNS panels need it
        split. Receivers join the strings without separators (RFC 6376 §3.6.2.2).
        """
        value = self.txt_record()
        return [value[i:i + 255] for i in range(0, len(value), 255)]

    def sign(self, message: bytes) -> bytes:
        """``message`` with a DKIM-Signature header prepended (CPU work: call off the loop)."""
        present = {line.split(b":", 1)[0].strip().lower()
                   for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
                   if b":" in line and not line[:1].isspace()}
        headers = [h for h in SIGNED_HEADERS if h in present] or [b"from"]
        signature = dkim.sign(message, self.selector.encode(), self.domain.encode(),
                              self.private_pem(), canonicalize=(b"relaxed", b"relaxed"),
                              include_headers=headers)
        return bytes(signature) + message
