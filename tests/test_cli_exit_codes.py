"""Exit codes an admin can script (connector/exitcodes.py), per command and per cause, against
a real Dovecot and the Zendesk fake (tests/zendesk_responses.py); ``--json`` documents parsed."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import requests
from bridge_cli import cli_streams
from dovecot import DovecotServer, MailUser
from zendesk_responses import FakeZendesk, account, customer_mail, write_config, zendesk_host

from connector.exitcodes import (
    EX_CONFIG,
    EX_DATAERR,
    EX_NOINPUT,
    EX_OK,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    EX_USAGE,
    markdown_table,
)

TICKETS = r"^/api/v2/tickets$"
REPO = Path(__file__).resolve().parent.parent


def unreachable_helpdesk(zendesk: FakeZendesk) -> None:
    zendesk.fail("POST", TICKETS, exception=requests.ConnectionError, count=-1)


def one_attempt_config(tmp_path: Path, dovecot: DovecotServer, user: MailUser) -> Path:
    # One attempt per call: the adapter would really sleep between attempts.
    return write_config(tmp_path, [account(dovecot, user, "support")],
                        host=zendesk_host(max_attempts=1))


def broken_mail(text: str = "not a mail") -> bytes:
    """What the bridge refuses for good: bytes that are not a mail at all (a mail with an
    unusable From is still ticketed, for the account's unknown_sender)."""
    return f"{text}, only a line of text\r\n".encode()


def test_run_once_exits_75_when_the_helpdesk_is_unreachable_and_0_once_it_is_back(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, zendesk: FakeZendesk,
) -> None:
    dovecot.append(mailbox_user, customer_mail("Zendesk giù", "down1@example.org"))
    config = one_attempt_config(tmp_path, dovecot, mailbox_user)
    unreachable_helpdesk(zendesk)

    code, out, err = cli_streams("-q", "-c", str(config), "run", "--once", "--json")

    assert code == EX_TEMPFAIL
    document = json.loads(out)
    assert document["exit_code"] == EX_TEMPFAIL and document["dry_run"] is False
    [summary] = document["accounts"]
    assert summary["account"] == "support" and summary["error"] is None
    assert summary["counts"]["retry"] == 1 and summary["counts"]["fetched"] == 1
    assert len(dovecot.list_folder(mailbox_user)) == 1  # still in the INBOX

    zendesk.clear_faults()
    code, out, err = cli_streams("-q", "-c", str(config), "run", "--once")

    assert code == EX_OK
    assert out == ""  # a person's summary goes to stderr
    assert err.startswith("support: fetched=1 ticketed=1 ")
    assert len(zendesk.ticket_list()) == 1


def test_run_once_exits_65_for_a_mail_that_failed_for_good(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, zendesk: FakeZendesk,
) -> None:
    dovecot.append(mailbox_user, customer_mail("Buona", "good@example.org"))
    dovecot.append(mailbox_user, broken_mail())
    config = one_attempt_config(tmp_path, dovecot, mailbox_user)

    code, _, err = cli_streams("-q", "-c", str(config), "run", "--once")

    assert code == EX_DATAERR
    assert "ticketed=1 " in err and "failed=1 " in err
    assert len(dovecot.list_folder(mailbox_user, "Error")) == 1


def test_run_once_exits_69_when_an_account_is_unreachable_even_if_mail_failed_elsewhere(
    dovecot: DovecotServer, tmp_path: Path, zendesk: FakeZendesk,
) -> None:
    good, locked = dovecot.add_user(), dovecot.add_user()
    dovecot.append(good, broken_mail())
    refused = account(dovecot, locked, "locked", password="not-the-password")
    config = write_config(tmp_path, [account(dovecot, good, "support"), refused])

    code, out, _ = cli_streams("-q", "-c", str(config), "run", "--once", "--json")

    assert code == EX_UNAVAILABLE
    by_name = {a["account"]: a for a in json.loads(out)["accounts"]}
    assert by_name["support"]["counts"]["failed"] == 1
    assert "login refused" in by_name["locked"]["error"]


def test_import_exit_codes_failed_held_back_and_missing_file(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, zendesk: FakeZendesk,
) -> None:
    config = one_attempt_config(tmp_path, dovecot, mailbox_user)
    good, broken = tmp_path / "good.eml", tmp_path / "broken.eml"
    good.write_bytes(customer_mail("Da importare", "imp1@example.org"))
    broken.write_bytes(broken_mail())

    unreachable_helpdesk(zendesk)
    code, out, err = cli_streams("-q", "-c", str(config), "import", str(good))
    assert code == EX_TEMPFAIL
    assert "good.eml: " in err and "-> held back, retried next time" in err

    zendesk.clear_faults()
    code, out, err = cli_streams("-q", "-c", str(config), "import", "--json", str(good),
                                 str(broken))
    assert code == EX_DATAERR
    document = json.loads(out)
    assert document["exit_code"] == EX_DATAERR and document["account"] == "support"
    assert document["counts"]["ticketed"] == 1 and document["counts"]["failed"] == 1
    assert [m["outcome"] for m in document["messages"]] == ["ticketed", "failed"]
    assert "not a mail message" in document["messages"][1]["reason"]
    assert "calls" not in document["messages"][0]  # only a dry run has calls to show

    code, out, err = cli_streams("-q", "-c", str(config), "import", str(good),
                                 str(tmp_path / "nowhere.mbox"))
    assert code == EX_NOINPUT
    assert "nowhere.mbox" in err
    assert "already recorded" not in err  # nothing was imported


def test_deliver_exits_65_for_a_mail_that_failed_for_good_unless_keep_failed(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, zendesk: FakeZendesk,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = one_attempt_config(tmp_path, dovecot, mailbox_user)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(broken_mail())))
    code, _, err = cli_streams("-q", "-c", str(config), "deliver")
    assert code == EX_DATAERR
    assert err.startswith("failed: ")

    other = broken_mail("nor is this")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(other)))
    code, _, err = cli_streams("-q", "-c", str(config), "deliver", "--keep-failed")
    assert code == EX_OK
    assert err.startswith("failed: ")


def test_deliver_exits_75_on_a_config_error_so_the_mta_keeps_the_mail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("accounts: []\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(broken_mail())))
    assert cli_streams("-q", "-c", str(config), "deliver")[0] == EX_TEMPFAIL
    assert cli_streams("-q", "-c", str(config), "check")[0] == EX_CONFIG


def test_a_wrong_command_line_exits_64(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli_streams("run", "--no-such-option")
    assert exit_.value.code == EX_USAGE
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


def test_check_json_lists_every_check_and_exits_69_for_a_refused_login(
    dovecot: DovecotServer, tmp_path: Path, zendesk: FakeZendesk,
) -> None:
    user, locked = dovecot.add_user(), dovecot.add_user()
    config = write_config(tmp_path, [
        account(dovecot, user, "support"),
        account(dovecot, locked, "locked", password="not-the-password")])

    code, out, _ = cli_streams("-q", "-c", str(config), "check", "--json")

    assert code == EX_UNAVAILABLE
    document = json.loads(out)
    assert document["exit_code"] == EX_UNAVAILABLE
    assert [(c["check"], c["name"], c["ok"]) for c in document["checks"]] == [
        ("config", str(config), True), ("filters", None, True), ("account", "support", True),
        ("account", "locked", False), ("host", "zendesk", True)]
    assert set(document["checks"][0]) == {"check", "name", "ok", "status", "detail", "hint",
                                          "lines"}
    assert [c["status"] for c in document["checks"]] == ["ok", "ok", "ok", "fail", "ok"]
    assert "not-the-password" not in out


def test_readme_exit_code_table_is_the_one_the_code_uses() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert markdown_table() in readme
