"""``twin dns`` and ``twin doctor`` against a real DNS server (dnsmasq on
loopback) and a real running twin: a zone made from what ``twin dns`` prints
passes every check, and each record missing or wrong is named (#21 item 2)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.servers import DnsServer
from tests.twins import TwinProcess, twin_cli

DOMAIN = "alice.test"


def _dnsmasq_args(records: list[dict[str, Any]], skip: frozenset[str] = frozenset(),
                  replace: dict[str, list[str]] | None = None) -> list[str]:
    """dnsmasq options serving ``records`` (minus the names in ``skip``; TXT
    strings from ``replace`` where given) plus the domain's address."""
    args = [f"--host-record={DOMAIN},127.0.0.1", f"--local=/{DOMAIN}/"]
    for r in records:
        name = r["name"].rstrip(".")
        if name + r["type"] in skip:
            continue
        if r["type"] == "TXT":
            strings = (replace or {}).get(name, r["strings"])
            args.append("--txt-record=" + ",".join([name, *strings]))
        elif r["type"] == "MX":
            pref, host = r["value"].split()
            args.append(f"--mx-host={name},{host.rstrip('.')},{pref}")
        elif r["type"] == "SRV":
            prio, weight, port, host = r["value"].split()
            args.append(f"--srv-host={name},{host.rstrip('.')},{port},{prio},{weight}")
        elif r["type"] == "CNAME":
            args.append(f"--cname={name},{r['value'].rstrip('.')}")
    return args


def _doctor(twin: TwinProcess, nameserver: str) -> tuple[int, dict[str, dict[str, Any]]]:
    done = twin_cli(twin.data, "--set", f"twin.domain={DOMAIN}", "doctor", "--nameserver",
                    nameserver, "--json", check=False)
    findings = json.loads(done.stdout)
    return done.returncode, {f["what"]: f for f in findings}


def test_doctor_passes_the_zone_twin_dns_prints_and_names_what_is_wrong(
        twins: Callable[..., TwinProcess], dns_server: DnsServer) -> None:
    alice = twins("alice", sets=[f"twin.domain={DOMAIN}"])
    printed = twin_cli(alice.data, "--set", f"twin.domain={DOMAIN}", "dns").stdout
    assert f"_dmarc.{DOMAIN}. IN TXT" in printed and f"{DOMAIN}. IN MX 10 {DOMAIN}." in printed
    records = json.loads(twin_cli(alice.data, "--set", f"twin.domain={DOMAIN}", "dns",
                                  "--json").stdout)
    dkim = next(r for r in records if "_domainkey" in r["name"])
    assert len(dkim["strings"]) >= 2 and all(len(s) <= 255 for s in dkim["strings"])

    code, found = _doctor(alice, dns_server.serve(_dnsmasq_args(records)))
    bad = {w: f for w, f in found.items() if f["status"] != "ok"}
    assert code == 0 and not bad, bad
    assert found[f"SMTP at 127.0.0.1:{alice.port('smtp')}"]["detail"].startswith("220")
    assert found[f"IMAP over TLS at 127.0.0.1:{alice.port('imaps')}"]["status"] == "ok"
    assert found[f"HTTPS at 127.0.0.1:{alice.port('https')}"]["status"] == "ok"

    # DMARC missing, a DKIM key that is not alice's, an SPF record that lets anyone send
    other_key = "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwrong"
    code, found = _doctor(alice, dns_server.serve(_dnsmasq_args(
        records, skip=frozenset({f"_dmarc.{DOMAIN}TXT", f"_imaps._tcp.{DOMAIN}SRV"}),
        replace={dkim["name"].rstrip("."): [other_key], DOMAIN: ["v=spf1 mx +all"]})))
    assert code == 1
    assert found[f"TXT _dmarc.{DOMAIN}."]["status"] == "missing"
    assert found[f"TXT {dkim['name']}"]["status"] == "wrong"
    assert "not end in -all" in found[f"TXT {DOMAIN}."]["detail"]
    srv = found[f"SRV _imaps._tcp.{DOMAIN}."]
    assert srv["status"] == "missing" and srv["required"] is False
    assert found[f"MX {DOMAIN}."]["status"] == "ok"

    # the twin stopped: doctor tries the configured ports, and names them unreachable
    alice.stop()
    code, found = _doctor(alice, dns_server.serve(_dnsmasq_args(records)))
    assert code == 1
    [smtp] = [f for w, f in found.items() if w.startswith("SMTP at 127.0.0.1:")]
    assert smtp["status"] == "unreachable", smtp


def test_the_mta_sts_record_announces_the_policy_the_twin_serves(
        twins: Callable[..., TwinProcess]) -> None:
    """RFC 8461 for mail coming in: ``twin dns`` prints ``_mta-sts`` with the id of
    the policy the twin serves at /.well-known/mta-sts.txt, and that policy is one
    the twin's own outbound side (``core.outbound.mtasts``) takes as valid."""
    import time

    import httpx

    from core.outbound.mtasts import parse_policy, parse_txt

    sets = [f"twin.domain={DOMAIN}", "smtp.mta_sts_mode=enforce"]
    alice = twins("alice", sets=sets)

    def announced(mode: str) -> str:
        records = json.loads(twin_cli(alice.data, "--set", f"twin.domain={DOMAIN}", "--set",
                                      f"smtp.mta_sts_mode={mode}", "dns", "--json").stdout)
        [txt] = [r for r in records if r["name"] == f"_mta-sts.{DOMAIN}." and r["type"] == "TXT"]
        assert any(r["name"] == f"mta-sts.{DOMAIN}." for r in records)
        ident = parse_txt(txt["strings"])
        assert ident is not None, txt
        return ident

    ident = announced("enforce")
    got = httpx.get(f"{alice.url}/.well-known/mta-sts.txt", verify=False, timeout=30)
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/plain")
    policy = parse_policy(DOMAIN, ident, got.text, time.time())
    assert policy.mode == "enforce" and policy.allows(DOMAIN) and policy.max_age >= 86400
    assert announced("testing") != ident  # another policy, another id: senders refetch
