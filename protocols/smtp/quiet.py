"""Two aiosmtpd warnings that say nothing about our sessions, counted instead of logged.

aiosmtpd logs, on its ``mail.log`` logger at WARNING:

- "auth_required == True but auth_require_tls == False" for every connection
  to the implicit-TLS submission port: the connection *is* TLS, but aiosmtpd
  only knows of STARTTLS, and requiring TLS there would refuse every AUTH;
- "Session.login_data is deprecated ..." for every successful AUTH: aiosmtpd's
  own AUTH code sets that attribute; the twin never reads it.

In a 20-minute soak they were 4,085 lines of the twin's log (issue 23). The
filter drops exactly these two messages (by their format string, so any other
warning of aiosmtpd still shows) and counts them in ``dropped``.
"""

from __future__ import annotations

import logging
from collections import Counter

NOISE = (
    "auth_required == True but auth_require_tls == False",
    "Session.login_data is deprecated and will be removed in version 2.0",
)


class AiosmtpdNoise(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.dropped: Counter[str] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in NOISE:
            self.dropped[str(record.msg)] += 1
            return False
        return True


def install() -> AiosmtpdNoise:
    """Put the filter on aiosmtpd's logger once; returns it."""
    logger = logging.getLogger("mail.log")
    for f in logger.filters:
        if isinstance(f, AiosmtpdNoise):
            return f
    noise = AiosmtpdNoise()
    logger.addFilter(noise)
    return noise
