"""The per-sender cap never loses mail: it counts by the mail's Date (a backlog is many days,
not one storm), and a mail over the cap is held (the held folder, ``held`` in summaries and
metrics) until ``held list|release`` brings it back through the same path."""

from __future__ import annotations

import mailbox
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import yaml
from bridge_cli import run_cli, run_report
from conftest import StoreTarget
from dovecot import DovecotServer, MailUser
from zendesk_responses import Bridge, FakeZendesk, account, customer_mail

from connector.cli import EX_NOINPUT, EX_OK
from connector.store.base import MessageState

SENDERS = [f"Cliente {i} <cliente{i}@example{i % 5}.org>" for i in range(19)]


def backlog(count: int, days: int, seed: int = 11) -> list[bytes]:
    """``count`` mails from the 19 senders, dated over the last ``days`` days."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 10, 8, 0, tzinfo=UTC)
    mails = []
    for n in range(count):
        sender = SENDERS[n % len(SENDERS)]
        when = start + timedelta(days=rng.randrange(days), minutes=rng.randrange(600))
        mails.append((f"From: {sender}\r\nTo: support@example.com\r\nSubject: richiesta {n}\r\n"
                      f"Date: {format_datetime(when)}\r\nMessage-ID: <backlog{n}@example.org>"
                      f"\r\n\r\nBuongiorno, richiesta numero {n}.\r\n").encode())
    return mails


def test_importing_a_backlog_of_2000_mails_from_19_senders_silences_nobody(
        tmp_path: Path) -> None:
    box = mailbox.mbox(tmp_path / "backlog.mbox")
    for raw in backlog(2000, days=60):
        box.add(raw)
    box.close()
    (tmp_path / "pw").write_text("x\n")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "store": {"path": str(tmp_path / "ledger.sqlite3")},
        "host": {"type": "dry-run"},
        "filters": {"sender_cap_per_day": 40},
        "accounts": [{"name": "support", "protocol": "imap", "host": "127.0.0.1",
                      "security": "none", "username": "support@example.com",
                      "password_file": str(tmp_path / "pw")}]}))

    code, lines = run_report("-c", str(config), "import", str(tmp_path / "backlog.mbox"))

    assert code == EX_OK
    assert lines[-2] == ("support: fetched=2000 ticketed=2000 followed-up=0 noted=0 ignored=0 "
                         "held=0 failed=0 retry=0")


def storm(count: int, *, same_day: bool) -> list[bytes]:
    mails = []
    for n in range(count):
        day = 2 if same_day else 2 + n
        mails.append(customer_mail(f"Segnalazione {n}", f"storm{n}@example.org", headers=()).
                     replace(b"Mon, 02 Mar 2026", f"Mon, {day:02d} Mar 2026".encode()))
    return mails


def raws(dovecot: DovecotServer, user: MailUser, folder: str = "INBOX") -> list[bytes]:
    return [m.raw for m in dovecot.list_folder(user, folder)]


def test_mail_over_the_cap_is_held_listed_and_released(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    mails = storm(5, same_day=True)
    dovecot.append(mailbox_user, mails)
    bridge = make_bridge([account(dovecot, mailbox_user, "support")],
                         filters={"sender_cap_per_day": 3})

    summary = bridge.poll()

    assert (summary.counts["ticketed"], summary.counts["held"]) == (3, 2)
    assert "held=2 failed=0" in summary.line()
    assert len(zendesk.ticket_list()) == 3
    assert raws(dovecot, mailbox_user, "Held") == mails[3:]
    held = bridge.store.messages_in(MessageState.HELD)
    assert [r.message_id for r in held] == ["storm3@example.org", "storm4@example.org"]
    assert "(cap 3): held" in (held[0].error or "")
    assert held[0].trace is not None and held[0].trace["decision"]["action"] == "hold"
    figures = bridge.store.account_figures()["support"]
    assert (figures["processed"], figures["held"]) == (3, 2)

    config = str(bridge.config.path)
    code, lines = run_cli("-c", config, "held", "list")
    assert code == EX_OK and len(lines) == 4
    assert lines[0].split()[0] == str(held[0].id) and "'Segnalazione 3'" in lines[0]

    code, lines = run_cli("-c", config, "held", "release", str(held[0].id), str(held[1].id))

    assert code == EX_OK
    tickets = zendesk.ticket_list()
    assert len(tickets) == 5
    assert lines == [f"{held[0].id}: ticketed (ticket #{tickets[3]['id']})",
                     f"{held[0].id}: moved from Held to Processed",
                     f"{held[1].id}: ticketed (ticket #{tickets[4]['id']})",
                     f"{held[1].id}: moved from Held to Processed"]
    assert raws(dovecot, mailbox_user, "Held") == []
    assert raws(dovecot, mailbox_user, "Processed") == mails
    assert bridge.store.messages_in(MessageState.HELD) == []
    released = bridge.store.get_message_by_id(held[0].id)
    assert released is not None and released.trace is not None
    assert "released" in released.trace
    assert run_cli("-c", config, "held", "list") == (EX_OK, ["no held messages"])
    # Released once: releasing again is refused.
    assert run_cli("-c", config, "held", "release", str(held[0].id))[0] == EX_NOINPUT


def test_the_cap_counts_by_the_mails_date_not_by_when_they_are_read(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    dovecot.append(mailbox_user, storm(5, same_day=False))  # five days' mail, read at once
    bridge = make_bridge([account(dovecot, mailbox_user, "support")],
                         filters={"sender_cap_per_day": 3})

    summary = bridge.poll()

    assert (summary.counts["ticketed"], summary.counts["held"]) == (5, 0)


def test_held_mail_is_a_metric_until_released(target: StoreTarget) -> None:
    from connector.service.metrics import Metrics
    store = target.store()
    record = store.begin_message("support", "r1", sha256=None)
    store.finish_message(record.id, MessageState.HELD, action="hold", error="over the cap")
    metrics = Metrics()
    metrics.watch_store(store, ["support"])
    metrics.observe_message("support", "held", 0.01)
    text = metrics.exposition().decode()
    assert 'pmb_messages_held{account="support"} 1.0' in text
    assert 'pmb_messages_total{account="support",outcome="held"} 1.0' in text
    store.close()


def test_retention_keeps_what_a_held_mail_needs_for_its_release(target: StoreTarget) -> None:
    store = target.store()
    record = store.begin_message("support", "r1", sha256=None)
    store.describe_message(record.id, dedupe_key="k1", message_id="m1@example.org",
                           sender="bot@example.org", subject="x", trace={"decision": "hold"})
    store.quarantine(record.id, b"raw")
    store.finish_message(record.id, MessageState.HELD, action="hold", error="over the cap")

    assert store.apply_retention(datetime.now(UTC) + timedelta(days=1)) == 0

    kept = store.get_message_by_id(record.id)
    assert kept is not None and kept.trace == {"decision": "hold"}
    assert store.quarantined_raw(record.id) == b"raw"
    store.close()


def test_a_ledger_from_before_the_date_count_is_migrated_or_read_as_it_is(
        tmp_path: Path) -> None:
    import sqlite3

    from connector.store.sqlite import SQLiteStore

    path = tmp_path / "old.sqlite3"
    SQLiteStore(path).close()
    db = sqlite3.connect(path)  # as an older bridge left it: no mail_day column
    db.execute("DROP TABLE schema_migrations")  # nor migrations recorded
    db.execute("DROP INDEX messages_sender_day")
    db.execute("ALTER TABLE messages DROP COLUMN mail_day")
    db.execute("ALTER TABLE messages DROP COLUMN sender_proven")
    db.execute("INSERT INTO messages (account, ref, state, sender, attempts, created_at, "
               "updated_at) VALUES ('support', 'r1', 'done', 'bot@example.org', 1, ?, ?)",
               (datetime.now(UTC).isoformat(), datetime.now(UTC).isoformat()))
    db.commit()
    db.close()
    today = datetime.now(UTC).date()

    readonly = SQLiteStore(f"file:{path}?mode=ro", uri=True)  # filters test: not migrated
    assert readonly.sender_count_on("bot@example.org", today) == 1
    readonly.close()
    store = SQLiteStore(path)  # run: migrated; an old record counts on the day it was recorded
    assert store.sender_count_on("bot@example.org", today) == 1
    record = store.begin_message("support", "r2", sha256=None)
    store.describe_message(record.id, dedupe_key=None, message_id=None,
                           sender="bot@example.org", subject="x", trace=None, mail_day=today)
    assert store.sender_count_on("bot@example.org", today) == 2
    # Old records count as unproven mail: the proven count starts from nothing.
    assert store.sender_count_on("bot@example.org", today, proven=False) == 2
    assert store.sender_count_on("bot@example.org", today, proven=True) == 0
    store.close()


def test_forged_mail_in_a_customers_name_cannot_hold_their_authenticated_mail(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    """Issue 12: the cap counts proven and unproven mail in a sender's name apart. Forged
    mail fills only the unproven count; the customer's mail that our MTA authenticated
    (DMARC pass in its Authentication-Results) is still ticketed."""
    mta = "mx.helpdesk.example"
    forged = storm(4, same_day=True)
    proven = [customer_mail(f"Davvero io {n}", f"real{n}@example.org", headers=(
        ("Authentication-Results", f"{mta}; dkim=pass header.d=example.org; "
                                   f"dmarc=pass header.from=example.org"),))
        for n in range(2)]
    dovecot.append(mailbox_user, forged + proven)
    bridge = make_bridge([account(dovecot, mailbox_user, "support", authserv_id=mta)],
                         filters={"sender_cap_per_day": 3})

    summary = bridge.poll()

    assert (summary.counts["ticketed"], summary.counts["held"]) == (5, 1)
    held = bridge.store.messages_in(MessageState.HELD)
    assert [r.message_id for r in held] == ["storm3@example.org"]
    subjects = {t["subject"] for t in zendesk.ticket_list()}
    assert {"Davvero io 0", "Davvero io 1"} <= subjects
