"""Config loading: every error names file, key path and problem; secrets never literal."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from connector.config import load_config
from connector.errors import ConfigError

BASE = """
accounts:
  - name: support
    protocol: imap
    host: imap.example.com
    username: support@example.com
    password: ${PMB_TEST_PW}
host:
  type: zendesk
  url: https://acme.zendesk.com
  auth:
    type: oauth
    client_id: postmaster-bridge
    client_secret_file: secret.txt
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    (tmp_path / "secret.txt").write_text("s3cret\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMB_TEST_PW", "hunter2")


def error_of(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


def test_minimal_config_with_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE))
    acc = cfg.accounts[0]
    assert acc.port == 993 and acc.security == "tls" and acc.verify_tls
    assert acc.password == "hunter2"
    assert acc.folder == "INBOX" and acc.processed_folder == "Processed"
    assert acc.initial_sync == "all"
    assert cfg.host.client_secret == "s3cret"
    assert cfg.store.path == tmp_path.resolve() / "postmaster-bridge.sqlite3"
    assert "hunter2" not in repr(cfg) and "s3cret" not in repr(cfg)


def test_literal_password_is_refused(tmp_path: Path) -> None:
    err = error_of(tmp_path, BASE.replace("${PMB_TEST_PW}", "plain-text"))
    assert err.key == "accounts[0].password"
    assert "${ENV_NAME}" in str(err) and str(tmp_path) in str(err)
    assert "plain-text" not in str(err)


def test_missing_env_var_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PMB_TEST_PW")
    err = error_of(tmp_path, BASE)
    assert "PMB_TEST_PW is not set" in str(err)


def test_security_none_only_on_loopback(tmp_path: Path) -> None:
    text = BASE.replace("host: imap.example.com", "host: imap.example.com\n    security: none")
    err = error_of(tmp_path, text)
    assert err.key == "accounts[0].security" and "loopback" in str(err)
    ok = BASE.replace("host: imap.example.com", "host: 127.0.0.1\n    security: none")
    assert load_config(write(tmp_path, ok)).accounts[0].port == 143


@pytest.mark.parametrize(
    ("old", "new", "key", "words"),
    [
        ("protocol: imap", "protocol: smtp", "accounts[0].protocol", "one of imap, pop3"),
        ("protocol: imap", "protocol: imap\n    colour: red", "accounts[0].colour", "unknown key"),
        ("protocol: imap", "protocol: imap\n    max_size: huge", "accounts[0].max_size", "size"),
        ("protocol: imap", "protocol: imap\n    port: 70000", "accounts[0].port", "TCP port"),
        ("protocol: imap", "protocol: imap\n    poll_interval: 0", "accounts[0].poll_interval",
         "greater than 0"),
        ("protocol: imap", "protocol: imap\n    new_ticket: {priority: asap}",
         "accounts[0].new_ticket.priority", "low, normal, high, urgent"),
        ("protocol: imap", "protocol: imap\n    initial_sync: some",
         "accounts[0].initial_sync", "skip_existing"),
        ("name: support", "name: Support Desk", "accounts[0].name", "lower-case"),
        ("url: https://acme.zendesk.com", "url: http://acme.zendesk.com", "host.url", "https"),
        ("type: oauth", "type: magic", "host.auth.type", "oauth, api_token"),
        ("protocol: imap", "protocol: imap\n    subject_ticket_pattern: '[#'",
         "accounts[0].subject_ticket_pattern", "regex"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, old: str, new: str, key: str, words: str) -> None:
    err = error_of(tmp_path, BASE.replace(old, new, 1))
    assert err.key == key
    assert words in str(err)
    assert str(err).startswith(str(tmp_path / "config.yaml"))


def test_duplicate_account_names(tmp_path: Path) -> None:
    text = BASE.replace("host:\n", """  - name: support
    protocol: pop3
    host: pop.example.com
    username: x
    password: ${PMB_TEST_PW}
host:
""", 1)
    err = error_of(tmp_path, text)
    assert err.key == "accounts[1].name" and "duplicate" in str(err)


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    err = error_of(tmp_path, "accounts: [\n  - name: x\n")
    assert "line" in str(err)


def test_size_units_and_pop3(tmp_path: Path) -> None:
    text = BASE.replace("protocol: imap", "protocol: pop3\n    max_size: 10MB\n"
                        "    delete_after_processing: true")
    acc = load_config(write(tmp_path, text)).accounts[0]
    assert acc.max_size == 10 * 1024 * 1024 and acc.port == 995 and acc.delete_after_processing


def test_api_token_auth_and_dry_run(tmp_path: Path) -> None:
    text = BASE.replace("""    type: oauth
    client_id: postmaster-bridge
    client_secret_file: secret.txt""", """    type: api_token
    email: admin@example.com
    api_token: ${PMB_TEST_PW}""")
    cfg = load_config(write(tmp_path, text))
    assert cfg.host.auth_type == "api_token" and cfg.host.api_token == "hunter2"
    dry = BASE.split("\nhost:")[0] + "\nhost:\n  type: dry-run\n"
    assert load_config(write(tmp_path, dry)).host.type == "dry-run"


def test_connection_pacing_and_keepalive_settings(tmp_path: Path) -> None:
    text = BASE.replace("    password: ${PMB_TEST_PW}", "    password: ${PMB_TEST_PW}\n"
                        "    idle_renew_seconds: 120\n    tcp_keepalive_seconds: 0") + """
connections:
  login_rate: 25
  max_connections: 0
  servers:
    imap.gmail.com: {max_connections: 40}
    mail.example.com:993: {login_rate: 1, login_burst: 1}
"""
    cfg = load_config(write(tmp_path, text))
    acc = cfg.accounts[0]
    assert (acc.idle_renew_seconds, acc.tcp_keepalive_seconds) == (120.0, 0.0)
    default, servers = cfg.connections.default, cfg.connections.servers
    assert (default.login_rate, default.login_burst, default.max_connections) == (25.0, 10, 0)
    gmail = servers["imap.gmail.com"]  # over the preset, not over the defaults
    assert (gmail.login_rate, gmail.max_connections) == (2.0, 40)
    assert servers["mail.example.com:993"].login_rate == 1.0
    defaults = load_config(write(tmp_path, BASE))
    assert defaults.accounts[0].idle_renew_seconds == 290.0
    assert defaults.connections.default.login_rate == 10.0


@pytest.mark.parametrize(("extra", "key"), [
    ("connections:\n  login_rate: -1\n", "connections.login_rate"),
    ("connections:\n  max_logins: 3\n", "connections.max_logins"),
    ("connections:\n  servers:\n    a.example.com: {burst: 2}\n",
     "connections.servers.a.example.com.burst"),
])
def test_connection_settings_errors_name_the_key(tmp_path: Path, extra: str, key: str) -> None:
    err = error_of(tmp_path, BASE + extra)
    assert err.key == key


def test_shipped_example_config_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """config.example.yaml, with its secrets supplied, loads whole: accounts, outbound,
    service, filters (the shipped filter files, checked against the host mapping)."""
    import shutil

    from connector.outbound.settings import load_outbound
    from connector.service.filtering import load_rules

    repo = Path(__file__).resolve().parents[1]
    text = (repo / "config.example.yaml").read_text(encoding="utf-8")
    (tmp_path / "pop-password").write_text("x\n")
    path = tmp_path / "config.yaml"
    path.write_text(text.replace("/run/secrets/pop-password", str(tmp_path / "pop-password")))
    shutil.copytree(repo / "filters", tmp_path / "filters")
    for name in ("SUPPORT_IMAP_PASSWORD", "ZENDESK_CLIENT_SECRET", "ARUBA_PEC_APP_PASSWORD"):
        monkeypatch.setenv(name, "secret")
    monkeypatch.setenv("PMB_WEBHOOK_SECRET", "0123456789abcdef0123")

    config = load_config(path)

    assert [a.name for a in config.accounts] == ["support", "legacy-pop", "pec-aruba"]
    pec = config.account("pec-aruba")
    assert (pec.host, pec.port, pec.initial_sync, pec.poll_interval) == (
        "imaps.pec.aruba.it", 993, "skip_existing", 4.0)
    outbound = load_outbound(config)
    assert [a.account for a in outbound.enabled_accounts] == ["pec-aruba"]
    assert outbound.enabled_accounts[0].smtp.host == "smtps.pec.aruba.it"
    assert load_rules(config).chain.filters


def test_every_package_directory_is_a_package() -> None:
    """setup.cfg's `packages = find:` installs only directories with an __init__.py: one
    without it would be missing from `pip install .` although the tests (run from the
    checkout) pass."""
    repo = Path(__file__).resolve().parents[1]
    missing = [str(d.relative_to(repo)) for d in (repo / "connector").rglob("*")
               if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))
               and not (d / "__init__.py").exists()]
    assert missing == []


def test_host_rate_limits_are_read_as_rates(tmp_path: Path) -> None:
    from connector.hosts.ratelimit import Rate

    cfg = load_config(write(tmp_path, BASE + "  rate_limit: 700/min\n"
                                            "  ticket_update_rate_limit: 100\n"))
    assert cfg.host.rate_limit == Rate(700, 60)
    assert cfg.host.ticket_update_rate_limit == Rate(100, 60)
    assert load_config(write(tmp_path, BASE)).host.rate_limit is None


def test_a_rate_limit_that_is_not_a_rate_names_its_key(tmp_path: Path) -> None:
    err = error_of(tmp_path, BASE + "  rate_limit: as fast as it goes\n")
    assert err.key == "host.rate_limit" and "700/min" in str(err)
