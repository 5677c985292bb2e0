"""Ledger integrity (issue 12, row "8 KB of random bytes written into the ledger"): a damaged
ledger stops processing with a clear error and moves no mail; ``store check`` and ``store
backup`` for admins. Real SQLite files, a real Dovecot, Zendesk faked by `responses`."""

from __future__ import annotations

import io
import random
import sqlite3
import sys
import threading
from pathlib import Path

import pytest
from bridge_cli import cli_output
from dovecot import DovecotServer, MailUser
from zendesk_responses import Bridge, FakeZendesk, account, customer_mail, write_config

from connector.cli import EX_OK, EX_TEMPFAIL
from connector.errors import StoreCorruptError
from connector.exitcodes import EX_IOERR
from connector.service.runner import Service
from connector.store.sqlite import SQLiteStore


def write_random(path: Path, offset: int, size: int = 8192, seed: int = 12) -> None:
    """The attack: ``size`` random bytes written into the file at ``offset``."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(random.Random(seed).randbytes(size))


def settle(path: Path) -> None:
    """Everything in the main file (no -wal left), so damage to it is damage to the data."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def damage_table(path: Path, table: str = "messages") -> None:
    """8 KB of random bytes over the first pages of ``table`` and of its indexes."""
    db = sqlite3.connect(path)
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    roots = [r[0] for r in db.execute("SELECT rootpage FROM sqlite_master WHERE tbl_name = ? "
                                      "AND rootpage > 1", (table,))]
    db.close()
    for root in roots:
        write_random(path, (root - 1) * page_size, size=min(8192, page_size), seed=root)


def ledger_with_mail(tmp_path: Path, dovecot: DovecotServer, user: MailUser,
                     zendesk: FakeZendesk) -> Path:
    """A config whose ledger has seen one mail (ticketed), with a second mail waiting."""
    dovecot.append(user, customer_mail("Prima", "first@example.org"))
    config = write_config(tmp_path, [account(dovecot, user, "support")])
    code, _ = cli_output("-q", "-c", str(config), "run", "--once")
    assert code == EX_OK and len(zendesk.ticket_list()) == 1
    dovecot.append(user, customer_mail("Seconda", "second@example.org"))
    settle(tmp_path / "ledger.sqlite3")
    return config


def test_random_bytes_in_the_ledger_stop_run_before_any_mail_moves(
        dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, zendesk: FakeZendesk,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = ledger_with_mail(tmp_path, dovecot, mailbox_user, zendesk)
    ledger = tmp_path / "ledger.sqlite3"
    write_random(ledger, 8192)
    calls = len(zendesk.calls)

    code, _ = cli_output("-q", "-c", str(config), "run", "--once")

    assert code == EX_IOERR
    assert f"the ledger {ledger} is damaged" in capsys.readouterr().err
    assert len(dovecot.list_folder(mailbox_user, "INBOX")) == 1
    assert len(zendesk.calls) == calls  # not even a login to the helpdesk


def test_a_ledger_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    SQLiteStore(ledger).close()
    write_random(ledger, 0)
    with pytest.raises(StoreCorruptError, match="file is not a database"):
        SQLiteStore(ledger)


def test_damage_under_an_open_store_is_noticed_at_the_first_error(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    store = SQLiteStore(ledger)
    for i in range(300):
        store.begin_message("support", f"ref{i}", sha256=None, durable=False)
    store.close()
    settle(ledger)
    store = SQLiteStore(ledger)  # sound when opened
    damage_table(ledger)
    with pytest.raises(StoreCorruptError, match="is damaged"):
        store.get_message("support", "ref7")
    store.close()


def test_runner_moves_no_mail_when_the_ledger_breaks_during_a_pass(
        dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path,
        zendesk: FakeZendesk) -> None:
    config = ledger_with_mail(tmp_path, dovecot, mailbox_user, zendesk)
    bridge = Bridge(config)
    try:
        damage_table(tmp_path / "ledger.sqlite3")
        with pytest.raises(StoreCorruptError):
            bridge.poll()
    finally:
        bridge.close()
    assert len(dovecot.list_folder(mailbox_user, "INBOX")) == 1
    assert len(zendesk.ticket_list()) == 1


def test_service_check_stops_every_worker_on_damage_its_cache_hides(
        dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path,
        zendesk: FakeZendesk) -> None:
    """Pages the running store already holds in its cache would hide the damage from it:
    the service's periodic quick_check reads the file through its own connection."""
    config = ledger_with_mail(tmp_path, dovecot, mailbox_user, zendesk)
    bridge = Bridge(config)
    try:
        service = Service([bridge.poller()], stop=threading.Event())
        assert service.check_ledger()
        bridge.store.messages()  # the pages are in the store's cache now
        write_random(tmp_path / "ledger.sqlite3", 8192)
        assert len(bridge.store.messages()) == 1  # the cache still answers
        assert not service.check_ledger()
        assert service.stop.is_set()
        assert service.fatal is not None and "is damaged" in str(service.fatal)
    finally:
        bridge.close()


def test_deliver_keeps_the_mail_at_the_mta_when_the_ledger_is_damaged(
        tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support")])
    ledger = tmp_path / "ledger.sqlite3"
    SQLiteStore(ledger).close()
    write_random(ledger, 0)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(
        customer_mail("Via MTA", "mta@example.org"))))
    code, _ = cli_output("-q", "-c", str(config), "deliver")
    assert code == EX_TEMPFAIL
    assert zendesk.ticket_list() == []


# -- store check / store backup ----------------------------------------------------------------


def test_store_check_and_backup_of_a_sound_ledger(
        dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path,
        zendesk: FakeZendesk) -> None:
    config = ledger_with_mail(tmp_path, dovecot, mailbox_user, zendesk)
    code, text = cli_output("-c", str(config), "store", "check")
    assert code == EX_OK
    assert "integrity ok, 1 message record(s)" in text

    target = tmp_path / "backups" / "ledger-copy.sqlite3"
    store = SQLiteStore(tmp_path / "ledger.sqlite3")  # the bridge running meanwhile
    store.begin_message("support", "written-before-the-backup", sha256=None, durable=False)
    code, text = cli_output("-c", str(config), "store", "backup", str(target))
    store.close()
    assert code == EX_OK, text
    assert f"written to {target}" in text
    copy = SQLiteStore(target)
    try:
        assert {r.ref for r in copy.messages()} >= {"written-before-the-backup"}
        assert len(copy.messages()) == 2
    finally:
        copy.close()


def test_store_check_and_backup_report_a_damaged_ledger(
        dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path,
        zendesk: FakeZendesk) -> None:
    config = ledger_with_mail(tmp_path, dovecot, mailbox_user, zendesk)
    damage_table(tmp_path / "ledger.sqlite3")
    code, text = cli_output("-c", str(config), "store", "check")
    assert code == EX_IOERR
    assert "FAIL  ledger" in text and "damaged" in text
    target = tmp_path / "copy.sqlite3"
    code, text = cli_output("-c", str(config), "store", "backup", str(target))
    assert code == EX_IOERR
    assert "no copy written" in text
    assert not target.exists()
