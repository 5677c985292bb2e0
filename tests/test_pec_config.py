"""PEC account configuration (issue 4): provider presets, PEC defaults and refusals, and the
app-password hint `postmaster-bridge check` gives when a PEC login is refused (real Dovecot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from bridge_cli import cli_output as run_cli
from dovecot import DovecotServer, MailUser

from connector.config import AccountConfig, config_from_mapping
from connector.errors import ConfigError

WHERE = "pec.yaml"


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "pec-password"
    path.write_text("app-password-1234\n")
    return path


def account_of(password_file: Path, **settings: Any) -> AccountConfig:
    """The one account of a config whose account has ``settings`` (None drops a key)."""
    account: dict[str, Any] = {"name": "pec-inbox", "username": "helpdesk@pec.example.it",
                               "password_file": str(password_file)}
    account.update(settings)
    data = {"accounts": [{k: v for k, v in account.items() if v is not None}],
            "host": {"type": "dry-run"}}
    return config_from_mapping(data, WHERE, password_file.parent).accounts[0]


def error_of(password_file: Path, **settings: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        account_of(password_file, **settings)
    assert info.value.path == WHERE
    return info.value


# -- presets --------------------------------------------------------------------------------------


def test_aruba_preset_fills_imap_host_port_and_tls(password_file: Path) -> None:
    acc = account_of(password_file, provider="aruba")
    assert (acc.host, acc.port, acc.security) == ("imaps.pec.aruba.it", 993, "tls")
    assert acc.protocol == "imap"
    assert acc.verify_tls is True
    assert acc.provider == "aruba"


@pytest.mark.parametrize(("key", "host", "stored"), [
    ("legalmail", "mbox.cert.legalmail.it", "legalmail"),
    ("infocert", "mbox.cert.legalmail.it", "legalmail"),  # InfoCert runs Legalmail
    ("namirial", "imaps.sicurezzapostale.it", "namirial"),
    ("Aruba", "imaps.pec.aruba.it", "aruba"),  # keys are not case-sensitive
])
def test_other_presets(password_file: Path, key: str, host: str, stored: str) -> None:
    acc = account_of(password_file, provider=key)
    assert (acc.host, acc.port, acc.security, acc.provider) == (host, 993, "tls", stored)


def test_values_in_the_account_win_over_the_preset(password_file: Path) -> None:
    acc = account_of(password_file, provider="aruba", host="imap.pec.example.net", port=1993)
    assert (acc.host, acc.port, acc.security) == ("imap.pec.example.net", 1993, "tls")
    # The preset's port is its implicit-TLS port; STARTTLS goes to the standard 143.
    acc = account_of(password_file, provider="aruba", security="starttls")
    assert (acc.host, acc.port, acc.security) == ("imaps.pec.aruba.it", 143, "starttls")


def test_provider_implies_pec_and_its_defaults(password_file: Path) -> None:
    acc = account_of(password_file, provider="aruba")
    assert acc.pec is True
    assert acc.initial_sync == "skip_existing"
    assert acc.poll_interval == 4.0
    assert acc.pec_unmatched_receipts == "new_ticket"


def test_unknown_provider_names_the_known_ones(password_file: Path) -> None:
    err = error_of(password_file, provider="yahoo")
    assert err.key == "accounts[0].provider"
    assert "yahoo" in err.reason
    for known in ("aruba", "infocert", "legalmail", "namirial", "poste", "register", "gmail",
                  "microsoft365"):
        assert known in err.reason


# -- PEC defaults and refusals --------------------------------------------------------------------


def test_pec_account_defaults(password_file: Path) -> None:
    acc = account_of(password_file, pec=True, host="imap.pec.example.it")
    assert acc.pec is True and acc.provider is None
    assert acc.protocol == "imap"  # protocol may be left out: PEC is IMAP
    assert (acc.port, acc.security) == (993, "tls")
    # Mail already in the box on first activation is not ingested; 4-minute polls.
    assert acc.initial_sync == "skip_existing"
    assert acc.poll_interval == 4.0


def test_pec_defaults_can_be_overridden(password_file: Path) -> None:
    acc = account_of(password_file, pec=True, host="imap.pec.example.it", initial_sync="all",
                     poll_interval=1)
    assert (acc.initial_sync, acc.poll_interval) == ("all", 1.0)


def test_ordinary_account_keeps_the_ordinary_defaults(password_file: Path) -> None:
    acc = account_of(password_file, protocol="imap", host="imap.example.it")
    assert acc.pec is False
    assert (acc.initial_sync, acc.poll_interval) == ("all", 5.0)


@pytest.mark.parametrize("settings", [
    {"pec": True, "host": "pop.pec.example.it"},
    {"provider": "aruba"},
], ids=["pec", "provider"])
def test_pec_over_pop3_is_refused_with_the_key_path(password_file: Path,
                                                    settings: dict[str, Any]) -> None:
    err = error_of(password_file, protocol="pop3", **settings)
    assert err.key == "accounts[0].protocol"
    assert "IMAP only" in err.reason
    assert "accounts[0].protocol" in str(err) and WHERE in str(err)


def test_catch_all_policy_requires_the_catch_all_ticket(password_file: Path) -> None:
    err = error_of(password_file, provider="aruba", pec_unmatched_receipts="catch_all")
    assert err.key == "accounts[0].pec_catch_all_ticket"
    assert "catch_all" in err.reason
    acc = account_of(password_file, provider="aruba", pec_unmatched_receipts="catch_all",
                     pec_catch_all_ticket=4711)
    assert (acc.pec_unmatched_receipts, acc.pec_catch_all_ticket) == ("catch_all", "4711")


def test_unknown_unmatched_receipts_policy_is_refused(password_file: Path) -> None:
    err = error_of(password_file, provider="aruba", pec_unmatched_receipts="public_ticket")
    assert err.key == "accounts[0].pec_unmatched_receipts"
    for policy in ("new_ticket", "catch_all", "ignore"):
        assert policy in err.reason


# -- `check` on a refused PEC login ---------------------------------------------------------------


def check_config(tmp_path: Path, dovecot: DovecotServer,
                 accounts: list[tuple[MailUser, str, dict[str, Any]]]) -> Path:
    """A config of (user, password, extra settings) accounts on the test Dovecot; the host is
    a dry run, so `check` contacts nothing but Dovecot."""
    entries = []
    for index, (user, password, extra) in enumerate(accounts):
        secret = tmp_path / f"password-{index}"
        secret.write_text(password)
        entry = {"username": user.name, "password_file": str(secret), "host": "127.0.0.1",
                 "port": dovecot.imap_port, "security": "none", **extra}
        entries.append(entry)
    path = tmp_path / "check.yaml"
    path.write_text(yaml.safe_dump({"store": {"path": str(tmp_path / "ledger.sqlite3")},
                                    "host": {"type": "dry-run"}, "accounts": entries}))
    return path


def account_lines(output: str, name: str) -> list[str]:
    """The lines `check` prints for one account: its ok/FAIL line and what follows it."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if f"account {name}:" in line)
    block = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith("      "):
            break
        block.append(line)
    return block


def test_check_hints_at_an_app_password_when_a_pec_login_is_refused(
        tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser) -> None:
    other_user = dovecot.add_user()
    config = check_config(tmp_path, dovecot, [
        (mailbox_user, "the-web-password", {"name": "aruba-pec", "provider": "aruba"}),
        (other_user, other_user.password, {"name": "plain-pec", "pec": True}),
        (other_user, "wrong-too", {"name": "ordinary", "protocol": "imap"}),
    ])

    code, out = run_cli("--config", str(config), "check")

    assert code == 69, out  # EX_UNAVAILABLE
    refused = account_lines(out, "aruba-pec")
    assert refused[0].startswith("FAIL  account aruba-pec:"), out
    hint = " ".join(refused[1:])
    assert "hint:" in hint
    assert "app password" in hint and "two-step verification" in hint
    assert "password per programmi di posta" in hint  # Aruba's own name for it
    assert "the-web-password" not in out  # the refused secret is never echoed
    accepted = account_lines(out, "plain-pec")
    assert accepted == [accepted[0]] and accepted[0].startswith("ok    account plain-pec:")
    ordinary = account_lines(out, "ordinary")
    assert ordinary[0].startswith("FAIL  account ordinary:")
    assert len(ordinary) == 1, "an ordinary mailbox gets no PEC hint"
    assert "ok    host dry-run" in out
