"""The ledger on both engines (a real SQLite file, a real PostgreSQL database): states, claims,
the Message-ID map, mailbox marks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import StoreTarget

from connector.store import MessageState


def test_ledger_survives_reopen(target: StoreTarget) -> None:
    store = target.store()
    rec = store.begin_message("support", "INBOX:1:7", sha256="abc")
    store.set_pending(rec.id, "new_ticket", {"external_id": "pmb-x"})
    store.close()

    store = target.store()
    again = store.begin_message("support", "INBOX:1:7", sha256="abc")
    assert again.id == rec.id and again.attempts == 2
    assert again.state == MessageState.PUSHING and again.pending == {"external_id": "pmb-x"}
    store.finish_message(rec.id, MessageState.DONE, action="new_ticket", ticket_id="42",
                         thread_ids=["a@b", "c@d"])
    assert store.ref_states("support", ["INBOX:1:7", "INBOX:1:8"]) == {
        "INBOX:1:7": MessageState.DONE}
    assert store.ticket_for_message_ids(["zzz", "c@d", "a@b"]) == "42"
    assert store.ticket_for_message_ids([]) is None
    assert not store.is_own_message_id("a@b")
    store.map_message_ids("42", ["sent@bridge"], direction="out", account="support")
    assert store.is_own_message_id("sent@bridge")


def test_dedupe_claim_is_first_come(target: StoreTarget) -> None:
    store = target.store()
    a = store.begin_message("one", "r1", sha256=None)
    b = store.begin_message("two", "r1", sha256=None)
    assert store.claim_dedupe_key("k", a.id) == a.id
    assert store.claim_dedupe_key("k", b.id) == a.id
    store.release_dedupe_key("k", a.id)
    assert store.claim_dedupe_key("k", b.id) == b.id


def test_skipped_and_failed_listing(target: StoreTarget) -> None:
    store = target.store()
    store.mark_skipped("acc", ["1", "2"])
    assert store.ref_states("acc", ["1", "2", "3"]) == {
        "1": MessageState.SKIPPED, "2": MessageState.SKIPPED}
    rec = store.begin_message("acc", "3", sha256=None)
    store.finish_message(rec.id, MessageState.FAILED, error="ParseError: nope")
    failed = store.failed_messages("acc")
    assert [f.ref for f in failed] == ["3"] and failed[0].error == "ParseError: nope"
    assert store.failed_messages("other") == []


def test_sender_count_and_marks(target: StoreTarget) -> None:
    store = target.store()
    for i in range(3):
        rec = store.begin_message("acc", f"r{i}", sha256=None)
        store.describe_message(rec.id, dedupe_key=f"k{i}", message_id=None,
                               sender="storm@example.com", subject="x", trace={"f": i})
    since = datetime.now(UTC) - timedelta(days=1)
    assert store.sender_count_since("Storm@Example.com", since) == 3
    assert store.get_message("acc", "r1").trace == {"f": 1}
    assert store.get_mailbox_mark("acc", "INBOX") is None
    store.set_mailbox_mark("acc", "INBOX", uidvalidity=5, baseline_taken=True)
    mark = store.get_mailbox_mark("acc", "INBOX")
    assert mark is not None and mark.uidvalidity == 5 and mark.baseline_taken
    assert store.writable()


def test_ticket_ids_are_text_and_ledgers_with_integer_ids_read_back(tmp_path: Path) -> None:
    """Ticket ids are opaque text; a ledger written when they were integers (the columns keep
    their INTEGER affinity) reads back the same ids as text, and threads on them."""
    import sqlite3

    from connector.store.sqlite import SQLiteStore

    path = tmp_path / "old.sqlite3"
    store = SQLiteStore(path)
    rec = store.begin_message("support", "INBOX:1:1", sha256=None)
    store.close()
    with sqlite3.connect(path) as db:  # what the integer-id bridge wrote
        db.execute("UPDATE messages SET state = 'done', ticket_id = 4711 WHERE id = ?",
                   (rec.id,))
        db.execute("INSERT INTO message_ids (message_id, ticket_id, direction, account, "
                   "created_at) VALUES ('old@x', 4711, 'in', 'support', '2026-01-01')")
    db.close()
    store = SQLiteStore(path)
    [record] = store.messages()
    assert record.ticket_id == "4711"
    assert store.ticket_for_message_ids(["old@x"]) == "4711"
    store.map_message_ids("4711", ["new@x"])
    store.map_message_ids("T-2026-abc", ["other@x"])  # not a number: kept as written
    assert store.ticket_for_message_ids(["new@x"]) == "4711"
    assert store.ticket_for_message_ids(["other@x"]) == "T-2026-abc"


def test_accounts_log_and_retention_on_each_engine(target: StoreTarget) -> None:
    """The admin side of the ledger: health, connection status, the communication log,
    figures, retention, orphans after a UIDVALIDITY change."""
    store = target.store()
    now = datetime.now(UTC)
    assert store.record_connection_failure("acc", "refused") == 1
    assert store.record_connection_failure("acc", "refused") == 2
    store.set_account_enabled("acc", False, "too many failures")
    health = store.get_health("acc")
    assert not health.enabled and health.disabled_reason == "too many failures"
    store.set_account_enabled("acc", True)
    store.record_success("acc", backlog=3)
    [health] = store.all_health()
    assert health.enabled and health.consecutive_failures == 0 and health.backlog == 3

    store.save_connection_status("acc", state="idling", detail=None, since=now,
                                 server_event="EXISTS 3", server_event_at=now, pid=4242)
    store.save_connection_status("acc", state="polling", detail="x", since=now,
                                 server_event=None, server_event_at=None, pid=4242)
    assert store.connection_statuses()["acc"]["state"] == "polling"

    store.log_event(level="warning", kind="connection", account="acc", event="login_failed",
                    detail="refused", duration_ms=12.5)
    store.log_events([{"level": "info", "kind": "message", "account": "acc", "event": "ticketed",
                       "ref": "INBOX:1:1", "message_id": "m1@x"},
                      {"level": "debug", "kind": "host", "account": "acc", "event": "call",
                       "ref": "INBOX:1:1", "ts": now - timedelta(days=40)}])
    assert [e.event for e in store.log_entries(min_level="warning")] == ["login_failed"]
    assert [e.event for e in store.log_entries(message="<m1@x>")] == ["ticketed"]
    assert store.count_events_since("login_failed", now - timedelta(hours=1)) == {"acc": 1}
    assert store.purge_log(now - timedelta(days=30)) == 1

    done = store.begin_message("acc", "INBOX:1:1", sha256=None)
    store.describe_message(done.id, dedupe_key="k", message_id="m1@x", sender="a@example.org",
                           subject="s", trace={"t": 1}, mail_day=now.date(), sender_proven=True)
    store.set_pending(done.id, "new_ticket", {"body": "x"})
    store.finish_message(done.id, MessageState.DONE, action="new_ticket", ticket_id="7")
    assert store.sender_count_on("a@example.org", now.date(), proven=True) == 1
    assert store.sender_count_on("a@example.org", now.date(), proven=False) == 0
    figures = store.account_figures()["acc"]
    assert figures["processed"] == 1 and figures["avg_seconds"] is not None
    assert store.apply_retention(now + timedelta(days=1)) == 1
    thinned = store.get_message_by_id(done.id)
    assert thinned.pending is None and thinned.trace is None and thinned.ticket_id == "7"

    store.mark_skipped("acc", ["INBOX:1:5"], {"INBOX:1:5": "old@x"})
    assert store.skipped_message_ids("acc") == {"old@x"}
    store.begin_message("acc", "INBOX:1:9", sha256=None)
    store.begin_message("acc", "OTHER:1:9", sha256=None)
    assert store.orphan_unfinished("acc", "INBOX:1:") == 1
    assert store.get_message("acc", "INBOX:1:9").state == MessageState.ORPHANED
    assert store.find_messages("<m1@x>")[0].id == done.id
    assert store.messages_in(MessageState.RECEIVED, "acc")[0].ref == "OTHER:1:9"
    store.make_durable()
    assert store.writable()
