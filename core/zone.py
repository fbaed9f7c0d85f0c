"""The DNS records a twin's mail domain needs, as a list a person can paste.

Why a list of typed records rather than a printed zone: ``twin dns`` prints
them, ``twin doctor`` queries each one and compares, and both must agree on
what "right" is. Each record says why it exists, and whether mail works
without it (``required``) or it only improves delivery and set-up.

What the records are (mox's quickstart publishes the same set):

- MX (RFC 5321 §5.1): where other servers deliver mail for the domain; here
  the domain itself, whose A/AAAA record must point at the twin.
- SPF (RFC 7208): which hosts may send as the domain: its MX hosts only.
- DKIM (RFC 6376 §3.6.1): the public key of the twin's signatures, split into
  character-strings of at most 255 bytes (RFC 1035 §3.3).
- DMARC (RFC 7489 §6.1): receivers reject mail in the domain's name that
  neither SPF nor DKIM vouches for, and send aggregate reports to postmaster.
- TLSRPT (RFC 8460): where other servers report TLS failures delivering here.
- MTA-STS (RFC 8461): ``_mta-sts.DOMAIN`` announces the policy the twin
  serves at ``https://mta-sts.DOMAIN/.well-known/mta-sts.txt`` (``policy``):
  senders that know it deliver only over verified TLS to the MX host. Its id
  is a hash of the policy, so a changed mode or MX changes the id and senders
  fetch it again (§3.1).
- Autoconfig: ``autoconfig.DOMAIN`` (Thunderbird's lookup, served at
  ``/mail/config-v1.1.xml``) and the RFC 6186 SRV records that other clients
  use to find IMAP and submission, with the ports the twin listens on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.config import Config
    from core.outbound.dkim import DkimKey


@dataclass(frozen=True)
class Record:
    """One DNS record: ``name`` absolute (trailing dot), ``value`` in zone-file
    form (for TXT the joined text; ``strings`` holds its character-strings)."""

    name: str
    type: str
    value: str
    why: str
    required: bool = True
    strings: tuple[str, ...] = ()

    def zone_line(self) -> str:
        """The record as one line of a zone file."""
        if self.type == "TXT":
            parts = self.strings or (self.value,)
            quoted = " ".join(f'"{p}"' for p in parts)
            return f"{self.name} IN TXT {'( ' + quoted + ' )' if len(parts) > 1 else quoted}"
        return f"{self.name} IN {self.type} {self.value}"

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "type": self.type, "value": self.value, "why": self.why,
                "required": self.required, "strings": list(self.strings or (self.value,))}


def split_txt(value: str) -> tuple[str, ...]:
    """A TXT value as character-strings of at most 255 bytes (ASCII here)."""
    return tuple(value[i:i + 255] for i in range(0, len(value), 255)) or ("",)


# RFC 6186 §3: the service names, and the config key of the port each runs on
SRV_SERVICES = (("_imaps._tcp", "imap.tls_port"), ("_imap._tcp", "imap.port"),
                ("_submissions._tcp", "smtp.submissions_port"),
                ("_submission._tcp", "smtp.submission_port"))


POLICY_PATH = "/.well-known/mta-sts.txt"
POLICY_MAX_AGE = 604800  # a week (RFC 8461 §3.2 suggests weeks; at most a year)


def policy(config: Config) -> str:
    """The MTA-STS policy of the twin's domain (RFC 8461 §3.2): its MX host, the
    mode ``smtp.mta_sts_mode``; CRLF lines, as the RFC's ABNF has them."""
    domain = config.domain.rstrip(".").lower()
    lines = ["version: STSv1", f"mode: {config.str('smtp.mta_sts_mode')}", f"mx: {domain}",
             f"max_age: {POLICY_MAX_AGE}"]
    return "\r\n".join(lines) + "\r\n"


def policy_id(config: Config) -> str:
    """The TXT record's id (§3.1: 1-32 alphanumerics): changes when the policy does."""
    return hashlib.sha256(policy(config).encode()).hexdigest()[:20]


def plan(config: Config, dkim: DkimKey) -> list[Record]:
    """Every record the twin's domain should publish, required ones first."""
    domain = config.domain.rstrip(".").lower()
    host = f"{domain}."
    dkim_value = dkim.txt_record()
    records = [
        Record(host, "MX", f"10 {host}",
               "other mail servers deliver the domain's mail to the twin"),
        Record(host, "TXT", "v=spf1 mx -all",
               "only the domain's MX host may send its mail (SPF)"),
        Record(f"{dkim.record_name}.", "TXT", dkim_value,
               "the key receivers check the twin's DKIM signatures with",
               strings=split_txt(dkim_value)),
        Record(f"_dmarc.{domain}.", "TXT",
               f"v=DMARC1; p=reject; rua=mailto:postmaster@{domain}",
               "receivers reject forgeries of the domain (DMARC)"),
        Record(f"_smtp._tls.{domain}.", "TXT", f"v=TLSRPTv1; rua=mailto:postmaster@{domain}",
               "servers report failed TLS towards the twin (TLSRPT)", required=False),
        Record(f"_mta-sts.{domain}.", "TXT", f"v=STSv1; id={policy_id(config)}",
               "senders deliver only over verified TLS (MTA-STS policy at "
               f"https://mta-sts.{domain}{POLICY_PATH})", required=False),
        Record(f"mta-sts.{domain}.", "CNAME", host,
               "where senders fetch the MTA-STS policy (add the name to tls.acme_names)",
               required=False),
        Record(f"autoconfig.{domain}.", "CNAME", host,
               "Thunderbird finds the account's settings", required=False),
    ]
    for service, key in SRV_SERVICES:
        records.append(Record(f"{service}.{domain}.", "SRV", f"0 1 {config.int(key)} {host}",
                              "mail clients find IMAP and submission (RFC 6186)",
                              required=False))
    return records
