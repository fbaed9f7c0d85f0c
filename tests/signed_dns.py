"""A DNSSEC-signed zone behind a real validating resolver, for DANE tests.

``SignedZone`` signs a small zone with dnspython (ECDSA P-256, NSEC) and
serves it authoritatively on a loopback UDP port from a thread: answers with
their RRSIGs, NODATA and NXDOMAIN with the SOA and the NSEC records that
prove them. dnsmasq is then started as a *validating* resolver in front of it
(``--dnssec`` with the zone's DS as trust anchor; dnsmasq insists on a
root anchor, so the zone is the root, ``.``, holding every test name): the AD bit the twin sees
comes from dnsmasq's own validation, not from this server.
"""

from __future__ import annotations

import socketserver
import threading

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
from cryptography.hazmat.primitives.asymmetric import ec

IN = dns.rdataclass.IN


class SignedZone:
    def __init__(self, origin: str, records: str) -> None:
        self.origin = dns.name.from_text(origin)
        text = (f"$ORIGIN {self.origin.to_text()}\n$TTL 60\n"
                f"@ SOA ns hostmaster 1 3600 600 86400 60\n@ NS ns\nns A 127.0.0.1\n{records}")
        self.zone = dns.zone.from_text(text, origin=self.origin, relativize=False)
        key = ec.generate_private_key(ec.SECP256R1())
        self.dnskey = dns.dnssec.make_dnskey(key.public_key(), "ECDSAP256SHA256", flags=257)
        dns.dnssec.sign_zone(self.zone, keys=[(key, self.dnskey)], lifetime=86400)
        self.server: socketserver.ThreadingUDPServer | None = None
        self.port = 0

    def trust_anchor(self) -> str:
        """The dnsmasq ``--trust-anchor=`` value: this zone's DS (SHA-256)."""
        ds = dns.dnssec.make_ds(self.origin, self.dnskey, "SHA256")
        return (f"{self.origin.to_text()},{ds.key_tag},{ds.algorithm},"
                f"{ds.digest_type},{ds.digest.hex()}")

    def _rrset(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType,
               covers: dns.rdatatype.RdataType = dns.rdatatype.NONE) -> dns.rrset.RRset | None:
        node = self.zone.get_node(name)
        if node is None:
            return None
        rdataset = node.get_rdataset(IN, rdtype, covers)
        if rdataset is None:
            return None
        rrset = dns.rrset.RRset(name, IN, rdtype, covers)
        rrset.update(rdataset)
        return rrset

    def _with_sigs(self, section: list[dns.rrset.RRset], name: dns.name.Name,
                   rdtype: dns.rdatatype.RdataType) -> None:
        for rrset in (self._rrset(name, rdtype),
                      self._rrset(name, dns.rdatatype.RRSIG, rdtype)):
            if rrset is not None:
                section.append(rrset)

    def _covering_nsec_owner(self, qname: dns.name.Name) -> dns.name.Name:
        owners = sorted(self.zone.nodes)
        return max(n for n in owners if n <= qname)

    def answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        if not qname.is_subdomain(self.origin):
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire()
        if self._rrset(qname, qtype) is not None:
            self._with_sigs(response.answer, qname, qtype)
        else:
            self._with_sigs(response.authority, self.origin, dns.rdatatype.SOA)
            if self.zone.get_node(qname) is not None:  # NODATA: the name's own NSEC
                self._with_sigs(response.authority, qname, dns.rdatatype.NSEC)
            else:
                owner = self._covering_nsec_owner(qname)
                self._with_sigs(response.authority, owner, dns.rdatatype.NSEC)
                empty_non_terminal = any(n.is_subdomain(qname) for n in self.zone.nodes)
                if not empty_non_terminal:
                    wildcard = dns.name.from_text("*", self.origin)
                    cover = self._covering_nsec_owner(wildcard)
                    if cover != owner:
                        self._with_sigs(response.authority, cover, dns.rdatatype.NSEC)
                    response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire(max_size=65535)

    def start(self) -> int:
        zone = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                try:
                    reply = zone.answer(data)
                except Exception:  # a query this tiny server does not understand
                    return
                sock.sendto(reply, self.client_address)

        self.server = socketserver.ThreadingUDPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.port

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def resolver_options(self) -> list[str]:
        """dnsmasq flags: validate, with this zone's DS as the only trust anchor."""
        return ["--dnssec", f"--trust-anchor={self.trust_anchor()}",
                f"--server=127.0.0.1#{self.port}"]
