"""A config file's problems all at once (file, key path, problem), secrets-free filter
commands, host.type switches, and the config <-> outbound settings import direction."""

from __future__ import annotations

import ast
import json
import shutil
import textwrap
from pathlib import Path

import pytest
from bridge_cli import cli_streams

from connector.config import load_config
from connector.errors import ConfigError, ConfigErrors
from connector.exitcodes import EX_CONFIG, EX_NOINPUT, EX_OK, EX_UNAVAILABLE

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_SECRETS = ("SUPPORT_IMAP_PASSWORD", "ARUBA_PEC_APP_PASSWORD", "ZENDESK_CLIENT_SECRET",
                   "PMB_WEBHOOK_SECRET")


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """config.example.yaml copied as a new user does, next to the shipped filters, with none
    of its secrets set."""
    for name in EXAMPLE_SECRETS:
        monkeypatch.delenv(name, raising=False)
    shutil.copytree(REPO / "filters", tmp_path / "filters")
    shutil.copy(REPO / "config.example.yaml", tmp_path / "config.yaml")
    return tmp_path / "config.yaml"


def test_a_copied_example_reports_every_missing_secret_in_one_run(example: Path) -> None:
    code, out, err = cli_streams("-q", "-c", str(example), "check")

    assert (code, out) == (EX_CONFIG, "")
    lines = err.splitlines()
    assert lines[0] == "postmaster-bridge: 5 configuration errors:"
    assert lines[1:] == [
        f"  {example}: accounts[0].password: environment variable SUPPORT_IMAP_PASSWORD is "
        "not set",
        f"  {example}: accounts[1].password_file: cannot read /run/secrets/pop-password: No "
        "such file or directory",
        f"  {example}: accounts[2].password: environment variable ARUBA_PEC_APP_PASSWORD is "
        "not set",
        f"  {example}: host.auth.client_secret: environment variable ZENDESK_CLIENT_SECRET "
        "is not set",
        f"  {example}: service.signing_secret: environment variable PMB_WEBHOOK_SECRET is not "
        "set"]


def test_json_commands_put_the_problems_in_their_document(example: Path) -> None:
    code, out, err = cli_streams("-q", "-c", str(example), "check", "--json")

    assert code == EX_CONFIG
    document = json.loads(out)
    assert (document["command"], document["exit_code"]) == ("check", EX_CONFIG)
    assert [(p["file"], p["key"]) for p in document["config_errors"]] == [
        (str(example), "accounts[0].password"), (str(example), "accounts[1].password_file"),
        (str(example), "accounts[2].password"), (str(example), "host.auth.client_secret"),
        (str(example), "service.signing_secret")]
    assert document["config_errors"][0]["problem"] == ("environment variable "
                                                       "SUPPORT_IMAP_PASSWORD is not set")
    assert err.startswith("postmaster-bridge: 5 configuration errors:")


def test_every_kind_of_problem_in_every_section_comes_in_one_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent("""
        accounts:
          - name: Support Desk
            protocol: imap4
            host: imap.example.com
            port: 99999
            username: support@example.com
            pasword: ${NOT_USED}
            poll_interval: soon
            filters: {own_adresses: [a@example.com]}
          - name: sales
            protocol: pop3
            host: pop.example.com
            username: sales@example.com
            password: hunter2
            outbound: {smtp: {host: smtp.example.com, port: x}}
        host:
          type: zendesk
          url: acme.zendesk.com
          auth: {type: oauth, client_id: x, client_secret_file: missing.txt}
          timout: 3
        store: {log_retention_days: -1}
        colour: blue
    """), encoding="utf-8")

    with pytest.raises(ConfigErrors) as raised:
        load_config(path)

    found = {(p.key, p.reason) for p in raised.value.problems}
    assert all(p.path == str(path) for p in raised.value.problems)
    assert found == {
        ("accounts[0].name", "must be lower-case letters, digits, '.', '_' or '-' (it becomes "
                             "a tag), got 'Support Desk'"),
        ("accounts[0].protocol", "must be one of imap, pop3, graph; got 'imap4'"),
        ("accounts[0].port", "must be a TCP port, got 99999"),
        ("accounts[0].password", "is required (as password: ${ENV_NAME} or password_file: "
                                 "PATH)"),
        ("accounts[0].poll_interval", "must be float, got str 'soon'"),
        ("accounts[0].pasword", "unknown key (did you mean 'password'?)"),
        ("accounts[0].filters.own_adresses", "unknown key (did you mean 'own_addresses'?)"),
        ("accounts[1].password", "secrets are not written in the config file: use "
                                 "'password: ${ENV_NAME}' or 'password_file: PATH'"),
        ("accounts[1].outbound.smtp.port", "must be int, got str 'x'"),
        ("host.url", "must be the instance's base URL such as https://acme.zendesk.com, got "
                     "'acme.zendesk.com'"),
        ("host.auth.client_secret_file", f"cannot read {tmp_path / 'missing.txt'}: No such "
                                         "file or directory"),
        ("host.timout", "unknown key (did you mean 'timeout'?)"),
        ("store.log_retention_days", "must be greater than 0, got -1.0"),
        ("colour", "unknown key"),
    }
    assert str(raised.value).count(f"{path}: ") == len(found)  # one line each


def test_switching_host_type_keeps_the_other_types_keys_quiet(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              ) -> None:
    monkeypatch.delenv("ZENDESK_CLIENT_SECRET", raising=False)
    path = tmp_path / "config.yaml"
    zendesk = """
        host:
          type: {type}
          url: https://acme.zendesk.com
          auth: {{type: oauth, client_id: x, client_secret: "${{ZENDESK_CLIENT_SECRET}}"}}
          timeout: 20
          max_attempts: 3
          groups: {{Billing: 1}}
    """
    accounts = """
        accounts:
          - {name: support, protocol: imap, host: 127.0.0.1, security: none, username: u,
             password_file: pw}
    """
    (tmp_path / "pw").write_text("pw\n")
    # A dry run with a url still reads that Zendesk, so it needs the secret...
    path.write_text(textwrap.dedent(accounts + zendesk.format(type="dry-run")))
    with pytest.raises(ConfigError, match=r"host\.auth\.client_secret: environment variable"):
        load_config(path)
    # ...without one, the zendesk keys left in place are neither read nor "unknown".
    text = textwrap.dedent(accounts + zendesk.format(type="dry-run"))
    path.write_text(text.replace("  url: https://acme.zendesk.com\n", ""))
    config = load_config(path)
    assert (config.host.type, dict(config.host.groups)) == ("dry-run", {"Billing": 1})
    # An auth section of the other auth type is reported by key, not as a whole.
    path.write_text(textwrap.dedent(accounts + """
        host:
          type: zendesk
          url: https://acme.zendesk.com
          auth: {type: api_token, email: a@example.com, api_token_file: pw, client_id: x}
    """))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert (raised.value.key, raised.value.reason) == ("host.auth.client_id", "unknown key")


def test_filters_check_and_test_need_no_secret(example: Path, tmp_path: Path) -> None:
    code, out, err = cli_streams("-q", "-c", str(example), "filters", "check")
    assert (code, err) == (EX_OK, "")
    assert out.startswith("OK: ")

    mail = tmp_path / "reply.eml"
    mail.write_bytes(b"From: Mario Rossi <mario@example.it>\r\nTo: assistenza@example.com\r\n"
                     b"Subject: Re: [#4711] fattura\r\nMessage-ID: <r1@example.it>\r\n\r\n"
                     b"Grazie.\r\n")
    code, out, err = cli_streams("-q", "-c", str(example), "filters", "test", str(mail),
                                 "--json")
    # The subject names ticket #4711: asking the helpdesk about it needs the secret, so the
    # command says so instead of guessing (and nothing is sent anywhere).
    assert code == EX_UNAVAILABLE
    assert err == ("the helpdesk could not be asked: not asked: host.auth.client_secret: "
                   "environment variable ZENDESK_CLIENT_SECRET is not set\n")

    mail.write_bytes(mail.read_bytes().replace(b"Re: [#4711] fattura", b"Una domanda"))
    code, out, err = cli_streams("-q", "-c", str(example), "filters", "test", str(mail),
                                 "--json")
    assert code == EX_OK, err
    assert json.loads(out)["decision"]["action"] == "new_ticket"  # nothing to ask: decided


def test_commands_that_only_read_the_ledger_or_queue_need_no_secret(example: Path) -> None:
    for command in (["accounts", "--json"], ["log"], ["errors", "list"],
                    ["outbound", "list", "--json"]):
        code, out, err = cli_streams("-q", "-c", str(example), *command)
        assert (code, err) == (EX_OK, ""), command
    assert json.loads(cli_streams("-q", "-c", str(example), "accounts", "--json")[1])[0][
        "account"] == "support"
    code, _, err = cli_streams("-q", "-c", str(example), "messages", "show", "1")
    assert code == EX_NOINPUT and "no message with id" in err
    # What logs in still needs them.
    assert cli_streams("-q", "-c", str(example), "errors", "replay", "1")[0] == EX_CONFIG


def test_outbound_settings_do_not_import_the_config_module() -> None:
    """connector.config validates the outbound sections, so the import goes that way only."""
    tree = ast.parse((REPO / "connector/outbound/settings.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):  # imports for type checking only are no import at run time
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert "connector.config" not in imported
    assert "connector.config_reader" in imported
