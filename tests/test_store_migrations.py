"""Versioned schema migrations: a ledger from before migrations were recorded is upgraded in
place with nothing lost, ``store migrate`` is idempotent and ``--check`` lists what is pending,
and a store a newer bridge migrated is refused instead of misread."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bridge_cli import cli_output

from connector.errors import StoreSchemaError
from connector.outbound.queue import OutboundQueue
from connector.store.migrations import LATEST, MIGRATIONS
from connector.store.sqlite import SQLiteStore

NOW = datetime(2026, 1, 5, 9, 30, tzinfo=UTC).isoformat()


def legacy_ledger(path: Path) -> None:
    """A ledger as a bridge from before migrations left it: its ledger tables without the
    columns added later, no outbound tables (the queue never opened), no migrations table,
    and some mail in it."""
    SQLiteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE schema_migrations")
    for table in ("outbound_jobs", "outbound_sends", "outbound_deliveries",
                  "outbound_installed", "outbound_secrets"):
        db.execute(f"DROP TABLE {table}")
    db.execute("DROP INDEX messages_sender_day")
    db.execute("ALTER TABLE messages DROP COLUMN mail_day")
    db.execute("ALTER TABLE messages DROP COLUMN sender_proven")
    db.execute("INSERT INTO meta (key, value) VALUES ('schema', '2')")
    db.execute("INSERT INTO messages (account, ref, state, sender, ticket_id, attempts, "
               "created_at, updated_at) VALUES ('support', 'INBOX:1:7', 'done', "
               "'anna@example.com', 42, 1, ?, ?)", (NOW, NOW))
    db.execute("INSERT INTO message_ids (message_id, ticket_id, direction, account, created_at)"
               " VALUES ('a@example.com', 42, 'in', 'support', ?)", (NOW,))
    db.commit()
    db.close()


def config_for(tmp_path: Path, ledger: Path) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(f"host: {{type: dry-run}}\nstore: {{path: {ledger}}}\naccounts:\n"
                      "  - name: support\n    protocol: imap\n    host: 127.0.0.1\n"
                      "    username: u\n    password: ${PMB_TEST_UNUSED}\n")
    return config


def test_a_ledger_from_before_migrations_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    legacy_ledger(path)
    store = SQLiteStore(path)
    assert store.applied_migrations() == [m.version for m in MIGRATIONS]
    record = store.get_message("support", "INBOX:1:7")
    assert record is not None and record.ticket_id == "42" and record.sender == "anna@example.com"
    assert store.ticket_for_message_ids(["a@example.com"]) == "42"
    # The upgraded columns work: the old record counts on the day it was recorded.
    assert store.sender_count_on("anna@example.com", datetime.fromisoformat(NOW).date()) == 1
    store.close()
    queue = OutboundQueue(path)  # the queue's tables came with migration 2
    assert queue.enqueue("support", 42, source="webhook", dedupe_key="k").created
    queue.close()


def test_store_migrate_is_idempotent_and_check_lists_what_is_pending(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    legacy_ledger(path)
    config = config_for(tmp_path, path)

    code, out = cli_output("-c", str(config), "store", "migrate", "--check")
    assert code == 1
    assert [line.split()[:2] for line in out.splitlines()[:-1]] == [
        ["pending", str(m.version)] for m in MIGRATIONS]
    assert sqlite3.connect(path).execute(  # --check touched nothing
        "SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_migrations'").fetchone() == (0,)

    code, out = cli_output("-c", str(config), "store", "migrate")
    assert code == 0 and f"applied  {LATEST}" in out
    code, out = cli_output("-c", str(config), "store", "migrate")
    assert code == 0 and "0 migration(s) applied" in out
    code, out = cli_output("-c", str(config), "store", "migrate", "--check")
    assert code == 0 and "0 migration(s) pending" in out
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM messages").fetchone() == (1,)
    assert db.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall() == [
        (m.version,) for m in MIGRATIONS]


def test_a_store_migrated_by_a_newer_bridge_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    SQLiteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'x', ?)",
               (LATEST + 1, NOW))
    db.commit()
    db.close()
    with pytest.raises(StoreSchemaError, match="newer postmaster-bridge"):
        SQLiteStore(path)
    code, out = cli_output("-c", str(config_for(tmp_path, path)), "store", "migrate")
    assert code == 1


def test_the_event_index_holds_connection_events_only(tmp_path: Path) -> None:
    """Migration 4: the reconnections of the last hour are counted through a partial index;
    the helpdesk-call entries (two a mail, long scattered event names) are not indexed."""
    from datetime import timedelta

    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    now = datetime.now(UTC)
    store.log_event(level="info", kind="connection", account="a", event="reconnected")
    store.log_events([{"level": "debug", "kind": "host", "account": "a", "event": "reconnected"}])
    assert store.count_events_since("reconnected", now - timedelta(hours=1)) == {"a": 1}
    store.close()
    db = sqlite3.connect(tmp_path / "ledger.sqlite3")
    names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "comm_log_connection_event" in names and "comm_log_event" not in names
    plan = " ".join(str(r) for r in db.execute(
        "EXPLAIN QUERY PLAN SELECT account, COUNT(*) AS n FROM comm_log WHERE kind = "
        "'connection' AND event = ? AND ts >= ? GROUP BY account", ("reconnected", "x")))
    assert "comm_log_connection_event" in plan
    db.close()
