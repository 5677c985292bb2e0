"""History import (``import --history``, ``initial_sync: import_existing``): old mail becomes
tickets through Zendesk's Ticket Import API, with the mails' own dates, a conversation's replies
as comments of its ticket, in batches of up to 100, resumable without duplicates. Zendesk is the
OAS-validated fake of tests/zendesk_responses.py."""

from __future__ import annotations

import io
import json
import mailbox
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from email.utils import format_datetime
from pathlib import Path

import pytest
import responses
from bridge_cli import run_cli as run
from bridge_cli import run_report
from dovecot import DovecotServer, MailUser
from zendesk_responses import FakeZendesk, account, customer_mail, write_config

from connector.cli import EX_OK
from connector.config import config_from_mapping
from connector.errors import ConfigError
from connector.service.progress import BarProgress, PlainProgress, progress_for
from connector.store.sqlite import SQLiteStore

IMPORTS = r"^/api/v2/imports/tickets"
T0 = datetime(2024, 3, 4, 9, 30, tzinfo=UTC)


def dated(raw: bytes, when: datetime) -> bytes:
    """``raw`` with its Date header set to ``when``."""
    return re.sub(rb"(?m)^Date: [^\r\n]*", b"Date: " + format_datetime(when).encode(), raw,
                  count=1)


def mbox_of(path: Path, mails: list[bytes]) -> Path:
    box = mailbox.mbox(path)
    for raw in mails:
        box.add(raw)
    box.close()
    return path


def epoch(when: datetime) -> float:
    return when.timestamp()


def test_history_import_keeps_dates_and_makes_replies_comments(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, zendesk: FakeZendesk,
) -> None:
    first = T0
    reply = T0 + timedelta(days=2, hours=3)
    other = T0 + timedelta(days=1)
    # The reply comes first in the file: the import orders by date and conversation.
    path = mbox_of(tmp_path / "old.mbox", [
        dated(customer_mail("Re: Fattura", "h2@example.org", in_reply_to="h1@example.org",
                            text="Grazie, ricevuto.\n"), reply),
        dated(customer_mail("Fattura", "h1@example.org"), first),
        dated(customer_mail("Contratto", "h3@example.org",
                            sender="Anna Bianchi <anna@example.net>"), other),
    ])
    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support")])

    code, lines = run_report("-c", str(config), "import", "--history", str(path))

    assert code == EX_OK, lines
    assert lines[-1:] == ["support: fetched=3 ticketed=2 followed-up=1 noted=0 ignored=0 held=0 "
                     "failed=0 retry=0"]
    invoice, contract = zendesk.ticket_list()
    assert invoice["subject"] == "Fattura" and contract["subject"] == "Contratto"
    assert invoice["imported"] and contract["imported"]
    assert invoice["created_at"] == epoch(first)
    assert invoice["updated_at"] == epoch(reply)
    assert [c["created_at"] for c in invoice["comments"]] == [epoch(first), epoch(reply)]
    assert invoice["comments"][1]["plain"] == "Grazie, ricevuto."
    requester = zendesk.user(invoice["requester_id"])
    assert requester["email"] == "mario.rossi@example.org"
    assert {c["author_id"] for c in invoice["comments"]} == {invoice["requester_id"]}
    assert zendesk.user(contract["requester_id"])["email"] == "anna@example.net"
    # Old correspondents are created without Zendesk's verification mail.
    assert not any(u.get("verification_mail_sent") for u in zendesk.users.values())
    assert contract["comments"][0]["created_at"] == epoch(other)
    # Two conversations: one create_many, polled to completion; nothing live.
    assert [c.path for c in zendesk.calls_to("POST", IMPORTS)] == [
        "/api/v2/imports/tickets/create_many"]
    assert zendesk.calls_to("GET", r"^/api/v2/job_statuses/")
    assert not zendesk.calls_to("POST", r"^/api/v2/tickets$")
    assert not zendesk.calls_to("PUT", r"^/api/v2/tickets/")


def test_initial_sync_import_existing_imports_the_mailbox_then_runs_live(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk, make_bridge,  # noqa: ANN001
) -> None:
    dovecot.append(mailbox_user, [
        dated(customer_mail("Ordine 7", "o7@example.org"), T0),
        dated(customer_mail("Re: Ordine 7", "o7b@example.org", in_reply_to="o7@example.org",
                            text="Ancora una domanda.\n"), T0 + timedelta(hours=5)),
        dated(customer_mail("Reso", "r1@example.org"), T0 + timedelta(days=3)),
    ])
    bridge = make_bridge([account(dovecot, mailbox_user, "support",
                                  initial_sync="import_existing")])

    summary = bridge.poll()

    assert (summary.counts["ticketed"], summary.counts["followed_up"]) == (2, 1)
    order, refund = zendesk.ticket_list()
    assert order["imported"] and refund["imported"]
    assert [c["created_at"] for c in order["comments"]] == [epoch(T0),
                                                           epoch(T0 + timedelta(hours=5))]
    assert refund["created_at"] == epoch(T0 + timedelta(days=3))
    assert not zendesk.calls_to("POST", r"^/api/v2/tickets$")
    assert dovecot.list_folder(mailbox_user, "INBOX") == []
    assert len(dovecot.list_folder(mailbox_user, "Processed")) == 3

    # From now on, live: a reply to the imported conversation is a comment on its ticket, a
    # new mail a new ticket, both through the ordinary API.
    dovecot.append(mailbox_user, [
        customer_mail("Re: Ordine 7", "o7c@example.org", in_reply_to="o7b@example.org",
                      text="Risolto, grazie.\n"),
        customer_mail("Nuova richiesta", "n1@example.org"),
    ])

    summary = bridge.poll()

    assert (summary.counts["ticketed"], summary.counts["followed_up"]) == (1, 1)
    assert len(zendesk.calls_to("POST", IMPORTS)) == 1
    assert len(zendesk.calls_to("POST", r"^/api/v2/tickets$")) == 1
    assert zendesk.tickets[order["id"]]["comments"][-1]["plain"] == "Risolto, grazie."
    assert len(zendesk.ticket_list()) == 3


def test_history_import_sends_batches_of_at_most_100_tickets(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, zendesk: FakeZendesk,
) -> None:
    mails = [dated(customer_mail(f"Pratica {i}", f"p{i}@example.org"), T0 + timedelta(hours=i))
             for i in range(130)]
    # One reply, for a conversation of the first batch, dated after every other mail.
    mails.append(dated(customer_mail("Re: Pratica 3", "p3b@example.org",
                                     in_reply_to="p3@example.org", text="Seguito.\n"),
                       T0 + timedelta(days=30)))
    path = mbox_of(tmp_path / "old.mbox", mails)
    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support")])

    code, lines = run_report("-c", str(config), "import", "--history", str(path))

    assert code == EX_OK, lines
    assert lines[-1:] == ["support: fetched=131 ticketed=130 followed-up=1 noted=0 ignored=0 "
                          "held=0 failed=0 retry=0"]
    batches = [len(c.json["tickets"]) for c in zendesk.calls_to("POST", IMPORTS)]
    assert batches == [100, 30]
    tickets = zendesk.ticket_list()
    assert [t["subject"] for t in tickets] == [f"Pratica {i}" for i in range(130)]
    assert [c["plain"] for c in tickets[3]["comments"]][1] == "Seguito."
    assert len({t["external_id"] for t in tickets}) == 130


def test_history_import_as_closed_archived_tickets(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, zendesk: FakeZendesk,
) -> None:
    path = mbox_of(tmp_path / "old.mbox", [dated(customer_mail("Vecchio", "v1@example.org"), T0)])
    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support")])

    code, lines = run("-c", str(config), "import", "--history", "--status", "closed",
                      "--archive", str(path))

    assert code == EX_OK, lines
    [call] = zendesk.calls_to("POST", IMPORTS)
    assert call.path == "/api/v2/imports/tickets" and call.query == {
        "archive_immediately": "true"}
    [ticket] = zendesk.ticket_list()
    assert ticket["status"] == "closed" and ticket["archived"]
    assert call.json["ticket"]["solved_at"] == "2024-03-04T09:30:00Z"


# -- progress -----------------------------------------------------------------------------------


def test_progress_lines_when_not_on_a_terminal() -> None:
    lines: list[str] = []
    now = [0.0]
    progress = PlainProgress(200, lines.append, label="history support", interval=10.0,
                             clock=lambda: now[0])
    progress.describe("importing")
    for _ in range(50):
        now[0] += 0.125  # 50 mails in 6.25 s: no line yet
        progress.advance()
    assert lines == []
    now[0] += 3.75
    progress.advance(50)  # 100 mails in 10 s: a line
    progress.close()
    assert lines == [
        "history support [importing]: 100/200 mails (50%), 10.0 mails/s, ETA 0:00:10",
        "history support [importing]: 100/200 mails (50%), 10.0 mails/s, ETA 0:00:10",
    ]


def test_progress_bar_on_a_terminal_shows_rate_and_eta() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    progress = progress_for(screen, 40, label="history support")
    assert isinstance(progress, BarProgress)
    progress.bar.start_t -= 4.0  # as if the bar had been running for 4 s: 20 mails in 4 s
    progress.describe("importing")
    progress.advance(20)
    progress.bar.refresh()
    text = screen.getvalue().split("\r")[-1]
    assert "history support [importing]" in text
    assert "20/40" in text and " 50%" in text
    rate = progress.bar.format_dict
    assert rate["n"] == 20 and rate["total"] == 40
    assert re.search(r"<00:0[3-5], +\d+(\.\d+)?mail/s", text), text
    progress.close()


def test_import_history_prints_progress_lines_on_stderr_when_piped(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, zendesk: FakeZendesk,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = mbox_of(tmp_path / "old.mbox", [
        dated(customer_mail(f"Pratica {i}", f"q{i}@example.org"), T0 + timedelta(hours=i))
        for i in range(3)])
    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support")])

    code, _ = run("-c", str(config), "import", "--history", "--progress-interval", "0",
                  str(path))

    assert code == EX_OK
    lines = capsys.readouterr().err.splitlines()
    progress_lines = [line for line in lines if line.startswith("history support")]
    assert len(progress_lines) >= 3, lines
    assert re.fullmatch(r"history support \[importing\]: 3/3 mails \(100%\), [\d.]+ mails/s, "
                        r"ETA 0:00:00", progress_lines[-1]), progress_lines[-1]


def test_history_mail_is_understood_as_live_mail(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, zendesk: FakeZendesk,
) -> None:
    """An auto-reply in a conversation is an internal note of its ticket, one that matches
    nothing is ignored, and a reply to a ticket already on the helpdesk is added to it live."""
    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support")])
    live = mbox_of(tmp_path / "live.mbox", [customer_mail("Già aperto", "live1@example.org")])
    assert run("-c", str(config), "import", str(live))[0] == EX_OK
    [existing] = zendesk.ticket_list()
    auto = [("Auto-Submitted", "auto-replied")]
    path = mbox_of(tmp_path / "old.mbox", [
        dated(customer_mail("Domanda", "d1@example.org"), T0),
        dated(customer_mail("Risposta automatica: Domanda", "d2@example.org",
                            in_reply_to="d1@example.org", headers=auto,
                            text="Sono fuori ufficio.\n"), T0 + timedelta(hours=1)),
        dated(customer_mail("Risposta automatica", "d3@example.org", headers=auto,
                            text="Sono fuori ufficio.\n"), T0 + timedelta(hours=2)),
        dated(customer_mail("Re: Già aperto", "live2@example.org",
                            in_reply_to="live1@example.org", text="Ecco il seguito.\n"),
              T0 + timedelta(hours=3)),
        dated(customer_mail(f"Ancora [#{existing['id']}]", "live3@example.org",
                            text="Per riferimento.\n"), T0 + timedelta(hours=4)),
    ])

    code, lines = run_report("-c", str(config), "import", "--history", str(path))

    assert code == EX_OK, lines
    assert lines[-1:] == ["support: fetched=5 ticketed=1 followed-up=2 noted=1 ignored=1 held=0 "
                     "failed=0 retry=0"]
    imported = next(t for t in zendesk.ticket_list() if t.get("imported"))
    assert [c["public"] for c in imported["comments"]] == [True, False]
    assert "Sono fuori ufficio." in imported["comments"][1]["plain"]
    # By In-Reply-To, and by the ticket reference in the subject.
    assert [c["plain"] for c in zendesk.tickets[existing["id"]]["comments"]][1:] == [
        "Ecco il seguito.", "Per riferimento."]
    assert len(zendesk.calls_to("PUT", rf"^/api/v2/tickets/{existing['id']}$")) == 2


def test_a_refused_batch_is_imported_one_by_one_and_the_bad_mail_goes_to_errors(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, zendesk: FakeZendesk,
) -> None:
    path = mbox_of(tmp_path / "old.mbox", [
        dated(customer_mail(f"Pratica {i}", f"b{i}@example.org"), T0 + timedelta(hours=i))
        for i in range(3)])
    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support")])
    zendesk.fail("POST", r"/imports/tickets/create_many$", status=422)
    zendesk.fail("POST", r"/imports/tickets$", status=422)  # the first ticket, alone

    code, lines = run_report("-c", str(config), "import", "--history", str(path))

    assert lines[-1:] == ["support: fetched=3 ticketed=2 followed-up=0 noted=0 ignored=0 held=0 "
                     "failed=1 retry=0"]
    assert [t["subject"] for t in zendesk.ticket_list()] == ["Pratica 1", "Pratica 2"]
    code, lines = run("-c", str(config), "errors", "list")
    assert any("history import refused" in line for line in lines), lines


def test_import_existing_stopped_by_a_shutdown_resumes_on_the_next_start(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk, make_bridge,  # noqa: ANN001
) -> None:
    dovecot.append(mailbox_user, [
        dated(customer_mail(f"Pratica {i}", f"s{i}@example.org"), T0 + timedelta(hours=i))
        for i in range(3)])
    bridge = make_bridge([account(dovecot, mailbox_user, "support",
                                  initial_sync="import_existing")])
    poller = bridge.poller()
    checks = iter([False, True])  # SIGTERM arrives after the first mail
    poller.stop.is_set = lambda: next(checks, True)  # type: ignore[method-assign]

    summary = poller.poll()

    assert summary.counts["retry"] == 3  # the first was understood, none was imported
    assert zendesk.ticket_list() == []
    assert len(dovecot.list_folder(mailbox_user, "INBOX")) == 3  # nothing moved
    poller.close()

    summary = bridge.poll()

    assert summary.counts["ticketed"] == 3
    assert len(zendesk.ticket_list()) == 3
    assert len(zendesk.calls_to("POST", IMPORTS)) == 1
    assert dovecot.list_folder(mailbox_user, "INBOX") == []


def test_history_dry_run_shows_the_import_calls_and_changes_nothing(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path,
) -> None:
    path = mbox_of(tmp_path / "old.mbox", [
        dated(customer_mail("Fattura", "y1@example.org"), T0),
        dated(customer_mail("Re: Fattura", "y2@example.org", in_reply_to="y1@example.org",
                            text="Grazie.\n"), T0 + timedelta(hours=2)),
        dated(customer_mail("Contratto", "y3@example.org"), T0 + timedelta(hours=1)),
    ])
    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support")],
                          host={"type": "dry-run"})

    code, lines = run("-c", str(config), "import", "--history", str(path))

    assert code == EX_OK, lines
    calls = [json.loads(line) for line in lines if line.startswith("{")]
    [many] = [c for c in calls if c["path"].startswith("/api/v2/imports/")]
    assert many["path"] == "/api/v2/imports/tickets/create_many" and many["dry_run"]
    first, second = many["tickets"]
    assert first["subject"] == "Fattura" and second["subject"] == "Contratto"
    assert [c["created_at"] for c in first["comments"]] == [
        T0.isoformat(), (T0 + timedelta(hours=2)).isoformat()]
    assert not (tmp_path / "ledger.sqlite3").exists()


def mail_ids(path: Path, *names: str) -> list[str]:
    """The message ids in these headers of a sample mail."""
    headers = BytesHeaderParser().parsebytes(path.read_bytes())
    return re.findall(r"<([^<>\s]+)>", " ".join(str(headers.get(h) or "") for h in names))


def test_history_and_live_import_decide_every_sample_mail_alike(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path,
) -> None:
    """The same understanding: every .eml in tests/data (real-world mail, PEC samples) ends
    in the same state and action whether imported live or as history."""
    data = Path(__file__).parent / "data"
    paths = sorted(p for d in ("realworld", "mail", "pec-samples")
                   for p in (data / d).rglob("*.eml"))
    # Unrelated samples that share a Message-ID (<123@example.com> ...) would thread onto
    # whichever came first, which is file order live and date order in history: left out.
    ids = Counter(i for p in paths for i in mail_ids(p, "Message-ID"))
    files = [str(p) for p in paths
             if all(ids[i] <= 1 for i in mail_ids(p, "Message-ID", "In-Reply-To", "References"))]
    assert len(files) > 40
    outcomes = {}
    for name, extra in (("live", ()), ("history", ("--history",))):
        workdir = tmp_path / name
        workdir.mkdir()
        config = write_config(workdir, [account(dovecot, mailbox_user, "support")])
        fake = FakeZendesk()
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            fake.install(rsps)
            code, lines = run("-c", str(config), "import", *extra, *files)
        # An attachment that decodes to nothing is listed, never uploaded (Zendesk refuses
        # an empty upload).
        assert fake.violations == []
        store = SQLiteStore(workdir / "ledger.sqlite3")
        outcomes[name] = {r.ref: (r.state.value, r.action) for r in store.messages()}
        store.close()
    assert len(outcomes["live"]) >= len(files)  # an mbox among them holds several
    assert outcomes["live"].keys() == outcomes["history"].keys()
    differ = {ref: (live, outcomes["history"].get(ref))
              for ref, live in outcomes["live"].items() if outcomes["history"].get(ref) != live}
    assert differ == {}


def test_the_same_mail_twice_or_already_ticketed_is_one_ticket(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, zendesk: FakeZendesk,
) -> None:
    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support")])
    known = dated(customer_mail("Già importato", "k1@example.org"), T0)
    assert run("-c", str(config), "import", str(mbox_of(tmp_path / "a.mbox", [known])))[0] \
        == EX_OK
    twice = dated(customer_mail("Due volte", "k2@example.org"), T0 + timedelta(hours=1))
    path = mbox_of(tmp_path / "b.mbox", [known, twice, twice])

    code, lines = run_report("-c", str(config), "import", "--history", str(path))

    assert code == EX_OK, lines
    assert lines[-1:] == ["support: fetched=3 ticketed=1 followed-up=0 noted=0 "
                     "ignored=2(duplicate:2) held=0 failed=0 retry=0"]
    assert sorted(t["subject"] for t in zendesk.ticket_list()) == ["Due volte", "Già importato"]


def test_import_existing_in_a_dry_run_shows_the_import_and_moves_nothing(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path,
) -> None:
    dovecot.append(mailbox_user, [
        dated(customer_mail("Ordine 8", "o8@example.org"), T0),
        dated(customer_mail("Re: Ordine 8", "o8b@example.org", in_reply_to="o8@example.org"),
              T0 + timedelta(hours=1)),
    ])
    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support",
                                             initial_sync="import_existing")],
                          host={"type": "dry-run"})

    code, lines = run("-c", str(config), "run", "--once")

    assert code == EX_OK, lines
    calls = [json.loads(line) for line in lines if line.startswith("{")]
    assert [c["path"] for c in calls if c["method"] == "POST"] == ["/api/v2/imports/tickets"]
    [ticket] = next(c for c in calls if c["path"] == "/api/v2/imports/tickets")["tickets"]
    assert len(ticket["comments"]) == 2
    assert len(dovecot.list_folder(mailbox_user, "INBOX")) == 2


def test_import_existing_is_refused_for_a_host_without_an_import_api(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("secret\n")
    data = {
        "accounts": [{"name": "a", "protocol": "imap", "host": "127.0.0.1", "username": "u",
                      "password_file": str(tmp_path / "pw"), "security": "none",
                      "initial_sync": "import_existing"}],
        "host": {"type": "otobo",
                 "url": "https://helpdesk.example.org/otobo/nph-genericinterface.pl/"
                        "Webservice/PostmasterBridge",
                 "otobo": {"user": "pmb", "password_file": str(tmp_path / "pw"),
                           "queue": "PEC"}},
    }
    with pytest.raises(ConfigError, match="import_existing needs a helpdesk with an import"):
        config_from_mapping(data, "cfg.yaml", tmp_path)


def test_history_policy_archive_needs_closed(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("secret\n")
    account_entry = {"name": "a", "protocol": "imap", "host": "127.0.0.1", "username": "u",
                     "password_file": str(tmp_path / "pw"), "security": "none",
                     "history": {"archive": True}}
    with pytest.raises(ConfigError, match="set status: closed"):
        config_from_mapping({"accounts": [account_entry], "host": {"type": "dry-run"}},
                            "cfg.yaml", tmp_path)
    account_entry["history"] = {"status": "closed", "archive": True}
    config = config_from_mapping({"accounts": [account_entry], "host": {"type": "dry-run"}},
                                 "cfg.yaml", tmp_path)
    assert (config.accounts[0].history.status, config.accounts[0].history.archive) == (
        "closed", True)
