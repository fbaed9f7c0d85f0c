"""One schema: defaults, the TOML file, environment and --set, with errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import config as cfg
from core.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / cfg.CONFIG_FILE).write_text(text)
    return tmp_path / cfg.CONFIG_FILE


def test_every_key_has_a_default_of_its_type_and_help() -> None:
    for key in cfg.SCHEMA:
        assert key.help, key.name
        assert cfg.coerce(key, key.default, "schema") == key.default


def test_defaults_then_file_then_environment_then_command_line(tmp_path: Path) -> None:
    write(tmp_path, '[twin]\nname = "alice"\n[imap]\nport = 1143\nmax_line = 4096\n')
    conf = cfg.load(tmp_path, {"imap.max_line": "9000"}, environ={"TWIN_IMAP_PORT": "1144"})
    assert conf.int("imap.port") == 1144
    assert conf.int("imap.max_line") == 9000
    assert conf.int("smtp.port") == 2525
    assert conf.name == "alice" and conf.domain == "alice.localhost"
    assert conf.sources["imap.port"] == "env TWIN_IMAP_PORT"
    assert conf.sources["imap.max_line"] == "command line"


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[imap]\nprot = 1143\n")
    with pytest.raises(ConfigError) as err:
        cfg.load(tmp_path, environ={})
    assert "'imap.prot'" in str(err.value) and str(path) in str(err.value)


def test_wrong_type_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[imap]\nport = "high"\n')
    with pytest.raises(ConfigError) as err:
        cfg.load(tmp_path, environ={})
    assert "'imap.port'" in str(err.value) and str(path) in str(err.value)


def test_wrong_environment_value_names_the_variable(tmp_path: Path) -> None:
    write(tmp_path, "")
    with pytest.raises(ConfigError, match="TWIN_LISTEN_PLAINTEXT_AUTH"):
        cfg.load(tmp_path, environ={"TWIN_LISTEN_PLAINTEXT_AUTH": "maybe"})


def test_choices_and_minimums_are_enforced(tmp_path: Path) -> None:
    write(tmp_path, '[phonebook]\nbackend = "dns"\n')
    with pytest.raises(ConfigError, match=r"'phonebook\.backend'.*one of local, tfchain"):
        cfg.load(tmp_path, environ={})
    write(tmp_path, "[smtp]\nmax_message_size = 10\n")
    with pytest.raises(ConfigError, match="below the minimum"):
        cfg.load(tmp_path, environ={})


def test_rules_across_keys(tmp_path: Path) -> None:
    write(tmp_path, "[storage]\nk = 5\nn = 4\n")
    with pytest.raises(ConfigError, match=r"'storage\.k'"):
        cfg.load(tmp_path, environ={})
    write(tmp_path, "[storage]\nn = 8\n")
    with pytest.raises(ConfigError, match="lists 6 backends"):
        cfg.load(tmp_path, environ={})
    # a content.put chunk travels inside one envelope: it must fit with room to spare
    write(tmp_path, "[peer]\nmax_envelope = 1048576\nmax_put = 1048576\n")
    with pytest.raises(ConfigError, match=r"'peer\.max_put'.*below 'peer\.max_envelope'"):
        cfg.load(tmp_path, environ={})
    write(tmp_path, "[peer]\nmax_envelope = 1048576\nmax_put = 983040\n")
    assert cfg.load(tmp_path, environ={}).int("peer.max_put") == 983040


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[imap\n")
    with pytest.raises(ConfigError, match=str(path)):
        cfg.load(tmp_path, environ={})


def test_missing_file_says_run_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="twin init"):
        cfg.load(tmp_path, environ={})


def test_written_file_loads_back_and_is_private(tmp_path: Path) -> None:
    path = cfg.write(tmp_path, {"twin.name": "bob", "http.port": 9443,
                                "storage.backends": cfg.BY_NAME["storage.backends"].default})
    assert path.stat().st_mode & 0o077 == 0
    conf = cfg.load(tmp_path, environ={})
    assert conf.int("http.port") == 9443 and conf.name == "bob"
    assert len(conf.list("storage.backends")) == 6


def test_show_masks_secrets_and_doc_lists_every_key(tmp_path: Path) -> None:
    write(tmp_path, '[smtp]\nsmarthost_password = "hunter2"\n')
    shown = cfg.render_show(cfg.load(tmp_path, environ={}))
    assert "hunter2" not in shown and "********" in shown
    doc = cfg.render_doc()
    assert all(key.name in doc and key.env in doc for key in cfg.SCHEMA)


def test_own_envelope_ttl_must_fit_the_peers_limit(tmp_path: Path) -> None:
    write(tmp_path, "[peer]\nttl = 90000\n")
    with pytest.raises(ConfigError, match=r"'peer\.ttl'.*'peer\.max_ttl'"):
        cfg.load(tmp_path, environ={})
    write(tmp_path, "[peer]\nttl = 90000\nmax_ttl = 90000\n")
    assert cfg.load(tmp_path, environ={}).int("peer.ttl") == 90000


@pytest.mark.parametrize("value", ["99999", "65536", "-1"])
def test_a_port_out_of_range_is_named_not_left_to_bind(tmp_path: Path, value: str) -> None:
    write(tmp_path, '[twin]\nname = "alice"\n')
    expected = r"'imap.port' in command-line --set: .* (maximum 65535|minimum 0)"
    with pytest.raises(ConfigError, match=expected):
        cfg.load(tmp_path, {"imap.port": value}, environ={})


def test_every_port_key_is_bounded_to_a_tcp_port() -> None:
    ports = [k for k in cfg.SCHEMA if k.name.endswith("port")]
    assert len(ports) >= 6 and all(k.maximum == 65535 for k in ports)


def test_a_string_where_the_file_needs_a_number_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[twin]\nname = "alice"\n[imap]\ntls_port = "0x1F39"\n')
    with pytest.raises(ConfigError) as err:
        cfg.load(tmp_path, environ={})
    assert "'imap.tls_port'" in str(err.value) and str(path) in str(err.value)
    assert "expected int, got str" in str(err.value)


def test_text_sources_read_decimal_numbers_only(tmp_path: Path) -> None:
    write(tmp_path, '[twin]\nname = "alice"\n')
    assert cfg.load(tmp_path, environ={"TWIN_IMAP_PORT": " 1_143 "}).int("imap.port") == 1143
    with pytest.raises(ConfigError, match="TWIN_IMAP_PORT: cannot read '0x1F39' as int"):
        cfg.load(tmp_path, environ={"TWIN_IMAP_PORT": "0x1F39"})


def test_a_rule_broken_by_the_environment_blames_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[twin]\nname = "alice"\n')
    with pytest.raises(ConfigError) as err:
        cfg.load(tmp_path, environ={"TWIN_STORAGE_K": "7"})
    message = str(err.value)
    assert "env TWIN_STORAGE_K" in message and str(path) not in message


def test_strings_with_control_characters_render_as_valid_toml(tmp_path: Path) -> None:
    import tomllib

    text = cfg.render_toml({"twin.name": "alice", "smtp.smarthost": 'a"b\\c\nd\te\x7f😀'})
    assert tomllib.loads(text)["smtp"]["smarthost"] == 'a"b\\c\nd\te\x7f😀'
