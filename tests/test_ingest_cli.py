"""The ``postmaster-bridge`` commands end to end: ``connector.cli.main`` against a real Dovecot,
with Zendesk faked by `responses` (tests/zendesk_responses.py validates every request and answer
against the OAS)."""

from __future__ import annotations

import io
import json
import mailbox
import re
import sys
import time
from pathlib import Path

import pytest
import requests
from bridge_cli import cli_streams, run_report
from bridge_cli import run_cli as run
from dovecot import DovecotServer, MailUser
from zendesk_responses import (
    FakeZendesk,
    account,
    customer_mail,
    write_config,
    zendesk_host,
)

from connector.cli import EX_CONFIG, EX_OK, EX_TEMPFAIL
from connector.exitcodes import EX_UNAVAILABLE

TICKETS = r"^/api/v2/tickets$"


def stdin_with(monkeypatch: pytest.MonkeyPatch, raw: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))


def raws(dovecot: DovecotServer, user: MailUser, folder: str = "INBOX") -> list[bytes]:
    return [m.raw for m in dovecot.list_folder(user, folder)]


def logins(dovecot: DovecotServer, user: MailUser) -> int:
    return dovecot.log_text().count(f"Login: user=<{user.name}>")


def log_barrier(dovecot: DovecotServer) -> None:
    """Wait until Dovecot has logged everything that happened before this call: a fresh user
    logs in and its login line must show up in the log."""
    sentinel = dovecot.add_user()
    with dovecot.session(sentinel):
        pass
    deadline = time.monotonic() + 10
    while logins(dovecot, sentinel) == 0:
        assert time.monotonic() < deadline, "Dovecot never logged the sentinel login"
        time.sleep(0.02)


def not_the_password_anywhere(lines: list[str]) -> bool:
    return all("not-the-password" not in line for line in lines)


# -- run --once ---------------------------------------------------------------------------------


def test_run_once_prints_one_summary_line_per_account_and_exit_codes(
    dovecot: DovecotServer, tmp_path: Path, zendesk: FakeZendesk,
) -> None:
    imap_user, pop_user = dovecot.add_user(), dovecot.add_user()
    dovecot.append(imap_user, customer_mail("Dal CLI", "cli1@example.org"))
    broken = account(dovecot, pop_user, "legacy-pop", protocol="pop3")
    broken["password"] = "not-the-password"
    config = write_config(tmp_path, [account(dovecot, imap_user, "support"), broken])

    code, lines = run_report("-c", str(config), "run", "--once")

    assert code == EX_UNAVAILABLE
    assert lines[0] == ("support: fetched=1 ticketed=1 followed-up=0 noted=0 ignored=0 "
                        "held=0 failed=0 retry=0")
    assert re.fullmatch(r"legacy-pop: fetched=0 ticketed=0 followed-up=0 noted=0 ignored=0 "
                        r"held=0 failed=0 retry=0 error=.*login refused.*", lines[1])
    assert not_the_password_anywhere(lines)
    assert len(lines) == 2
    assert len(zendesk.ticket_list()) == 1

    code, lines = run_report("-c", str(config), "run", "--once", "--account", "support")

    assert code == EX_OK
    assert lines == ["support: fetched=0 ticketed=0 followed-up=0 noted=0 ignored=0 held=0 "
                     "failed=0 retry=0"]
    assert raws(dovecot, imap_user) == []


# -- check --------------------------------------------------------------------------------------


def test_check_prints_one_line_per_check(
    dovecot: DovecotServer, tmp_path: Path, zendesk: FakeZendesk,
) -> None:
    imap_user, pop_user = dovecot.add_user(), dovecot.add_user()
    broken = account(dovecot, pop_user, "legacy-pop", protocol="pop3")
    broken["password"] = "not-the-password"
    config = write_config(tmp_path, [account(dovecot, imap_user, "support"), broken])

    code, lines = run("-c", str(config), "check")

    assert code == EX_UNAVAILABLE
    assert len(lines) == 5
    assert lines[0] == f"ok    config {config}: 2 account(s)"
    assert lines[1] == "ok    filters: 0 filter(s) in 0 file(s)"
    assert re.fullmatch(rf"ok    account support: IMAP support \({imap_user.name}@127\.0\.0\.1:"
                        rf"{dovecot.imap_port}\): OK, INBOX has 0 messages, UIDVALIDITY \d+",
                        lines[2])
    assert lines[3].startswith(f"FAIL  account legacy-pop: legacy-pop ({pop_user.name}@")
    assert "login refused" in lines[3]
    assert lines[4] == "ok    host zendesk: Bridge Integration <integration@acme.example> (admin)"
    assert not_the_password_anywhere(lines)
    assert [c.path for c in zendesk.calls] == ["/oauth/tokens", "/api/v2/users/me"]


def test_check_reports_refused_helpdesk_credentials(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, zendesk: FakeZendesk,
) -> None:
    host = zendesk_host(auth={"type": "oauth", "client_id": "postmaster-bridge",
                              "client_secret": "a-revoked-secret"})
    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support")], host=host)

    code, lines = run("-c", str(config), "check")

    assert code == EX_UNAVAILABLE
    assert [line[:6] for line in lines] == ["ok    ", "ok    ", "ok    ", "FAIL  "]
    assert lines[3].startswith("FAIL  host zendesk: OAuth token request refused: HTTP 401")
    assert "invalid_client" in lines[3]
    assert "a-revoked-secret" not in "\n".join(lines)


def test_config_error_exits_78_before_any_mailbox_is_touched(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, zendesk: FakeZendesk,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good = account(dovecot, mailbox_user, "support")
    bad = account(dovecot, dovecot.add_user(), "sales", batch_size=0)
    config = write_config(tmp_path, [good, bad])

    eml = tmp_path / "one.eml"
    eml.write_bytes(customer_mail("Mai importata", "never@example.org"))
    for command in (["run", "--once"], ["check"], ["import", str(eml)]):
        code, lines = run("-c", str(config), *command)
        assert (code, lines) == (EX_CONFIG, [])
        err = capsys.readouterr().err
        assert f"configuration error: {config}: accounts[1].batch_size: must be greater than 0" \
            in err

    log_barrier(dovecot)
    assert logins(dovecot, mailbox_user) == 0
    assert zendesk.calls == []
    assert not (tmp_path / "ledger.sqlite3").exists()


# -- dry run ------------------------------------------------------------------------------------


def test_dry_run_prints_calls_and_changes_nothing(
    dovecot: DovecotServer, tmp_path: Path, zendesk: FakeZendesk,
) -> None:
    imap_user, pop_user = dovecot.add_user(), dovecot.add_user()
    imap_mail = customer_mail("Solo una prova", "dry1@example.org", pdf=True)
    pop_mail = customer_mail("Prova POP3", "dry2@example.org")
    dovecot.append(imap_user, imap_mail)
    dovecot.append(pop_user, pop_mail)
    config = write_config(tmp_path, [
        account(dovecot, imap_user, "support", delete_after_processing=True),
        account(dovecot, pop_user, "legacy-pop", protocol="pop3", delete_after_processing=True),
    ], host={"type": "dry-run"})

    code, out, err = cli_streams("-q", "-c", str(config), "run", "--once")

    assert code == EX_OK
    calls = [json.loads(line) for line in out.splitlines()]
    summaries = err.splitlines()
    assert summaries == [
        "support: fetched=1 ticketed=1 followed-up=0 noted=0 ignored=0 held=0 failed=0 retry=0",
        "legacy-pop: fetched=1 ticketed=1 followed-up=0 noted=0 ignored=0 held=0 failed=0 retry=0"]
    assert all(call["dry_run"] is True for call in calls)
    assert [(c["method"], c["path"]) for c in calls] == [
        ("POST", "/api/v2/uploads"), ("POST", "/api/v2/tickets"), ("POST", "/api/v2/tickets")]
    assert [c["ticket"]["subject"] for c in calls[1:]] == ["Solo una prova", "Prova POP3"]
    # Nothing moved, deleted, created or flagged; no ledger; no HTTP at all.
    assert dovecot.folders(imap_user) == {"INBOX"}
    assert [(m.raw, m.flags) for m in dovecot.list_folder(imap_user)] == [
        (imap_mail, frozenset())]
    assert raws(dovecot, pop_user) == [pop_mail]
    assert not (tmp_path / "ledger.sqlite3").exists()
    assert zendesk.calls == []


# -- import -------------------------------------------------------------------------------------


def test_import_of_an_mbox_and_a_maildir(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, zendesk: FakeZendesk,
) -> None:
    box = mailbox.mbox(tmp_path / "old.mbox")
    box.add(customer_mail("Archivio 1", "arc1@example.org"))
    box.add(customer_mail("Archivio 2", "arc2@example.org", text="From the beginning\n"))
    box.close()
    maildir = mailbox.Maildir(tmp_path / "Maildir")
    maildir.add(customer_mail("Re: Archivio 1", "arc3@example.org", in_reply_to="arc1@example.org",
                              text="Seguito.\n"))
    maildir.close()
    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support")])

    code, lines = run_report("-c", str(config), "import", str(tmp_path / "old.mbox"),
                      str(tmp_path / "Maildir"))

    assert code == EX_OK
    assert lines[-1] == ("support: fetched=3 ticketed=2 followed-up=1 noted=0 ignored=0 "
                         "held=0 failed=0 retry=0")
    first, second = zendesk.ticket_list()
    assert [line.split(" -> ")[1] for line in lines[:-1]] == [
        f"new ticket #{first['id']} (no existing ticket)",
        f"new ticket #{second['id']} (no existing ticket)",
        f"follow-up on #{first['id']} (In-Reply-To/References point at ticket "
        f"#{first['id']})"]
    assert (first["subject"], second["subject"]) == ("Archivio 1", "Archivio 2")
    assert [c["plain"] for c in first["comments"]][1] == "Seguito."
    assert "From the beginning" in second["comments"][0]["plain"]

    code, lines = run_report("-c", str(config), "import", str(tmp_path / "old.mbox"),
                      str(tmp_path / "Maildir"))

    assert code == EX_OK
    assert len(zendesk.calls_to("POST", TICKETS)) == 2
    assert len(zendesk.calls_to("PUT", r"^/api/v2/tickets/\d+$")) == 1
    assert logins(dovecot, mailbox_user) == 0  # import never contacts the mailbox


# Importing the same files again sends nothing (every message is "already recorded"), and the
# summary must say so rather than count the earlier work again.
def test_import_again_reports_nothing_new(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, zendesk: FakeZendesk,
) -> None:
    mbox_path = tmp_path / "old.mbox"
    box = mailbox.mbox(mbox_path)
    box.add(customer_mail("Archivio 1", "arc1@example.org"))
    box.add(customer_mail("Re: Archivio 1", "arc2@example.org", in_reply_to="arc1@example.org"))
    box.close()
    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support")])
    code, lines = run_report("-c", str(config), "import", str(mbox_path))
    assert (code, lines[-1]) == (
        EX_OK, "support: fetched=2 ticketed=1 followed-up=1 noted=0 ignored=0 held=0 failed=0 "
        "retry=0")

    code, lines = run_report("-c", str(config), "import", str(mbox_path))

    assert code == EX_OK
    line = lines[-1]
    assert all("-> already recorded: " in line for line in lines[:-1]), lines
    assert len(zendesk.calls_to("POST", TICKETS)) == 1
    assert "ticketed=0 followed-up=0" in line, line


# -- deliver ------------------------------------------------------------------------------------


def test_deliver_records_once_and_the_same_mail_twice_is_one_ticket(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, zendesk: FakeZendesk,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = customer_mail("Via MTA", "mta1@example.org", pdf=True)
    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support")])

    stdin_with(monkeypatch, raw)
    code, lines = run_report("-c", str(config), "deliver")
    [ticket] = zendesk.ticket_list()
    assert (code, lines) == (EX_OK, [f"ticketed ticket #{ticket['id']}"])

    stdin_with(monkeypatch, raw)  # the MTA delivers it again
    code, lines = run_report("-c", str(config), "deliver")
    assert (code, lines) == (EX_OK, [f"ticketed ticket #{ticket['id']}: already recorded"])

    # The same mail through another relay: other bytes, same mail.
    stdin_with(monkeypatch, b"Received: from relay2.example.org by mx.example.com; "
                            b"Mon, 2 Mar 2026 10:05:00 +0100\r\n" + raw)
    code, lines = run_report("-c", str(config), "deliver")
    assert code == EX_OK
    assert lines[0].startswith(f"duplicate ticket #{ticket['id']}")

    assert len(zendesk.ticket_list()) == 1
    assert len(zendesk.calls_to("POST", TICKETS)) == 1


def test_deliver_exits_75_while_zendesk_keeps_failing(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, zendesk: FakeZendesk,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = customer_mail("Zendesk giù", "mta2@example.org")
    # One attempt per call: the adapter would really sleep between attempts here.
    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support")],
                          host=zendesk_host(max_attempts=1))
    zendesk.fail("POST", TICKETS, exception=requests.ReadTimeout, count=-1)

    for _ in range(2):
        stdin_with(monkeypatch, raw)
        code, lines = run_report("-c", str(config), "deliver")
        assert code == EX_TEMPFAIL
        assert lines[0].startswith("retry: ")
        assert "timed out" in lines[0]
    assert zendesk.ticket_list() == []

    zendesk.clear_faults()
    stdin_with(monkeypatch, raw)
    code, lines = run_report("-c", str(config), "deliver")

    [ticket] = zendesk.ticket_list()
    assert (code, lines) == (EX_OK, [f"ticketed ticket #{ticket['id']}"])
    sent = zendesk.calls_to("POST", TICKETS)
    assert len(sent) == 3
    assert len({(c.headers["Idempotency-Key"], c.body) for c in sent}) == 1


@pytest.mark.parametrize("service", [None, {"parse_workers": "auto"}, {"parse_workers": 0},
                                     {"parse_workers": 1}])
def test_run_parses_ahead_as_the_config_says(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, zendesk: FakeZendesk,
    monkeypatch: pytest.MonkeyPatch, service: dict[str, int] | None,
) -> None:
    from connector.service import parsing

    pools: list[parsing.ParsePool] = []

    class RecordedPool(parsing.ParsePool):
        def __init__(self, workers: int) -> None:
            super().__init__(workers)
            pools.append(self)

    monkeypatch.setattr(parsing, "ParsePool", RecordedPool)
    for n in range(parsing.MIN_MESSAGES):
        dovecot.append(mailbox_user, customer_mail(f"Richiesta {n}", f"c{n}@example.org"))
    top = {"service": service} if service is not None else {}
    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support")], **top)

    code, lines = run_report("-c", str(config), "run", "--once")

    assert code == EX_OK, lines
    assert lines == [f"support: fetched={parsing.MIN_MESSAGES} ticketed={parsing.MIN_MESSAGES} "
                     "followed-up=0 noted=0 ignored=0 held=0 failed=0 retry=0"]
    wanted = (service or {}).get("parse_workers", "auto")
    if wanted == "auto":
        wanted = parsing.default_workers()  # the cores less one: 1 on the 2-core machines
    assert [p.workers for p in pools] == ([wanted] if wanted else [])
