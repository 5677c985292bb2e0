"""The ``auth: oauth2`` account settings, the microsoft365/gmail presets and protocol graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from connector.config import load_config
from connector.errors import ConfigError
from connector.outbound.settings import load_outbound


def load(tmp: Path, account: dict[str, Any], **top: Any) -> Any:
    (tmp / "secret.txt").write_text("s3cret\n")
    (tmp / "secret16.txt").write_text("a-webhook-signing-secret\n")
    data = {"host": {"type": "dry-run"}, "store": {"path": str(tmp / "ledger.sqlite3")},
            "accounts": [{"name": "support", "username": "support@contoso.com", **account}],
            **top}
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


M365 = {"provider": "microsoft", "tenant": "contoso.onmicrosoft.com", "client_id": "app-1",
        "client_secret_file": "secret.txt"}


def test_microsoft365_preset_fills_hosts_ports_and_app_only_grant(tmp_path: Path) -> None:
    config = load(tmp_path, {"provider": "microsoft365", "protocol": "imap",
                             "oauth2": {k: v for k, v in M365.items() if k != "provider"}})
    (account,) = config.accounts
    assert (account.host, account.port, account.security) == ("outlook.office365.com", 993,
                                                              "tls")
    assert account.auth == "oauth2" and account.password == ""
    oauth2 = account.oauth2
    assert oauth2 is not None
    assert (oauth2.provider, oauth2.flow) == ("microsoft", "client_credentials")
    assert oauth2.scopes == ("https://outlook.office365.com/.default",)
    assert oauth2.client_secret == "s3cret"
    assert oauth2.token_file == tmp_path / "oauth2" / "support.json"
    assert "s3cret" not in repr(account)


def test_microsoft365_pop3_and_outbound_smtp_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, {
        "provider": "microsoft365", "protocol": "pop3", "oauth2": M365,
        "outbound": {"from_address": "support@contoso.com"}},
        service={"public_url": "https://bridge.example.com",
                 "signing_secret_file": "secret16.txt"})
    (account,) = config.accounts
    assert (account.host, account.port) == ("outlook.office365.com", 995)
    (outbound,) = load_outbound(config).accounts
    smtp = outbound.smtp
    assert (smtp.host, smtp.port, smtp.security) == ("smtp.office365.com", 587, "starttls")
    assert smtp.oauth2 == account.oauth2 and smtp.password == ""


def test_gmail_preset(tmp_path: Path) -> None:
    key = tmp_path / "sa.json"
    key.write_text('{"type": "service_account", "private_key": "x", "client_email": "a@b"}')
    config = load(tmp_path, {"provider": "gmail", "protocol": "imap",
                             "processed_folder": "[Gmail]/All Mail",
                             "oauth2": {"service_account_file": str(key)}})
    (account,) = config.accounts
    assert (account.host, account.port) == ("imap.gmail.com", 993)
    assert account.oauth2 is not None
    assert (account.oauth2.provider, account.oauth2.flow) == ("google", "service_account")
    assert account.oauth2.subject == "support@contoso.com"
    assert account.oauth2.scopes == ("https://mail.google.com/",)


def test_graph_account_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, {"protocol": "graph", "folder": "Inbox", "oauth2": M365})
    (account,) = config.accounts
    assert (account.host, account.port, account.security) == ("graph.microsoft.com", 443, "tls")
    assert account.oauth2 is not None
    assert account.oauth2.scopes == ("https://graph.microsoft.com/.default",)


def test_state_dir_holds_the_token_files(tmp_path: Path) -> None:
    config = load(tmp_path, {"protocol": "imap", "host": "mail.example.com", "auth": "oauth2",
                             "oauth2": {**M365, "flow": "device_code"}},
                  store={"path": str(tmp_path / "l.sqlite3"), "state_dir": "/var/lib/pmb"})
    assert config.accounts[0].oauth2.token_file == Path("/var/lib/pmb/oauth2/support.json")
    assert config.accounts[0].oauth2.scopes[0].endswith("IMAP.AccessAsUser.All")


@pytest.mark.parametrize(("account", "key", "words"), [
    ({"protocol": "imap", "host": "h", "auth": "oauth2"}, "accounts[0].oauth2", "is required"),
    ({"protocol": "graph", "auth": "password", "password_file": "secret.txt"},
     "accounts[0].auth", "only OAuth2"),
    ({"protocol": "imap", "host": "h", "auth": "oauth2",
      "oauth2": {"provider": "microsoft", "tenant": "t", "client_id": "a",
                 "client_secret": "literal"}},
     "accounts[0].oauth2.client_secret", "secrets are not written"),
    ({"protocol": "imap", "host": "h", "auth": "oauth2",
      "oauth2": {"provider": "generic", "client_id": "x", "client_secret_file": "secret.txt"}},
     "accounts[0].oauth2.token_url", "is required"),
    ({"protocol": "imap", "host": "h", "auth": "oauth2",
      "oauth2": {"provider": "generic", "token_url": "http://idp.example.com/token",
                 "client_id": "x", "client_secret_file": "secret.txt"}},
     "accounts[0].oauth2.token_url", "https"),
    ({"protocol": "imap", "host": "h", "auth": "oauth2",
      "oauth2": {**M365, "flow": "service_account"}}, "accounts[0].oauth2.flow",
     "supports client_credentials, device_code"),
    ({"protocol": "imap", "host": "h", "auth": "oauth2",
      "oauth2": {"provider": "google"}}, "accounts[0].oauth2.client_id", "is required"),
    ({"provider": "yahoo", "protocol": "imap"}, "accounts[0].provider", "microsoft365"),
    ({"protocol": "imap", "host": "h", "password_file": "secret.txt", "oauth2": M365},
     "accounts[0].oauth2", "only with auth: oauth2"),
])
def test_oauth2_errors_name_the_key(tmp_path: Path, account: dict[str, Any], key: str,
                                    words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, account)
    assert caught.value.key == key, caught.value
    assert words in caught.value.reason


def test_password_accounts_are_unchanged(tmp_path: Path) -> None:
    config = load(tmp_path, {"protocol": "imap", "host": "mail.example.com",
                             "password_file": "secret.txt"})
    assert config.accounts[0].auth == "password" and config.accounts[0].oauth2 is None
