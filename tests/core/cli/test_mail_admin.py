"""``twin mail users|passwords|aliases``: what the owner of a server run for years needs."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from tests.e2e.test_mail_quarantine import imap_subjects
from tests.twins import TwinProcess, twin_cli

DATE = r"\d{4}-\d\d-\d\d \d\d:\d\d UTC"


def test_users_passwords_and_aliases_are_listed_added_and_removed(tmp_path: Path) -> None:
    data = tmp_path / "alice"
    twin_cli(data, "init", "--name", "alice", "--json")
    owner = "alice@alice.localhost"

    typo = twin_cli(data, "mail", "users", "add", "bob@alice.locahost", check=False)
    assert typo.returncode == 2 and "not alice.locahost" in typo.stderr and "--new-domain" \
        in typo.stderr
    assert "bob@alice.locahost" not in twin_cli(data, "mail", "users").stdout
    twin_cli(data, "mail", "users", "add", "bob@alice.localhost")
    twin_cli(data, "mail", "users", "add", "carol@example.org", "--new-domain")
    twin_cli(data, "mail", "users", "add", "dave@example.org")  # served now: no flag

    twin_cli(data, "mail", "passwd", "--label", "phone")
    replaced = twin_cli(data, "mail", "passwd", "--label", "phone").stdout
    assert re.search(rf"new app password 'phone' for {owner} \(replaces the one made {DATE}\)",
                     replaced), replaced
    listed = twin_cli(data, "mail", "passwords", "list", owner).stdout
    assert re.search(rf"{owner}\s+default\s+made {DATE}", listed), listed
    assert re.search(rf"{owner}\s+phone\s+made {DATE}", listed) and "bob@" not in listed
    everyone = json.loads(twin_cli(data, "mail", "passwords", "--json").stdout)
    assert {(p["login"], p["label"]) for p in everyone} >= {
        (owner, "default"), (owner, "phone"), ("bob@alice.localhost", "default")}
    assert "$argon2" not in json.dumps(everyone)
    twin_cli(data, "mail", "passwords", "rm", "phone")
    assert "phone" not in twin_cli(data, "mail", "passwords", "list", owner).stdout

    twin_cli(data, "mail", "aliases", "add", "info@alice.localhost", "bob@alice.localhost")
    assert "info@alice.localhost" in twin_cli(data, "mail", "aliases", "list").stdout
    gone = twin_cli(data, "mail", "aliases", "rm", "info@alice.localhost").stdout
    assert "-> bob@alice.localhost" in gone
    assert twin_cli(data, "mail", "aliases").stdout.strip() == "no aliases"
    again = twin_cli(data, "mail", "aliases", "rm", "info@alice.localhost", check=False)
    assert again.returncode != 0 and "no alias" in again.stderr

    refused = twin_cli(data, "mail", "users", "rm", owner, check=False)
    assert refused.returncode != 0 and "owner" in refused.stderr
    twin_cli(data, "mail", "send", "--to", "bob@alice.localhost", input="hello bob\n")
    holds = twin_cli(data, "mail", "users", "rm", "bob@alice.localhost", check=False)
    assert holds.returncode != 0 and "still holds" in holds.stderr  # nothing lost
    twin_cli(data, "mail", "aliases", "add", "sales@example.org", "carol@example.org")
    twin_cli(data, "mail", "users", "rm", "carol@example.org")
    users = twin_cli(data, "mail", "users").stdout
    assert "carol@" not in users and "bob@alice.localhost" in users
    assert "sales@" not in twin_cli(data, "mail", "aliases").stdout
    assert "carol@" not in twin_cli(data, "mail", "passwords").stdout


def test_mail_send_goes_through_the_running_twin(twins: Callable[..., TwinProcess]) -> None:
    # the running twin holds the store's lock: the command hands it the message
    alice = twins("alice")
    sent = twin_cli(alice.data, "mail", "send", "--to", alice.login, "--subject", "from cron",
                    input="nightly report\n")
    assert "sent: 1 local" in sent.stdout, sent.stderr
    assert imap_subjects(alice, 1) == [b"Subject: from cron"]
    spoof = twin_cli(alice.data, "mail", "send", "--from", "mallory@example.org", "--to",
                     alice.login, input="x", check=False)
    assert spoof.returncode == 2 and "not an address of" in spoof.stderr
