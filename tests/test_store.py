"""The SQLite ledger on a real file: states, claims, the Message-ID map, mailbox marks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from connector.store import MessageState, SQLiteStore


def test_ledger_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = SQLiteStore(path)
    rec = store.begin_message("support", "INBOX:1:7", sha256="abc")
    store.set_pending(rec.id, "new_ticket", {"external_id": "pmb-x"})
    store.close()

    store = SQLiteStore(path)
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


def test_dedupe_claim_is_first_come(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite3")
    a = store.begin_message("one", "r1", sha256=None)
    b = store.begin_message("two", "r1", sha256=None)
    assert store.claim_dedupe_key("k", a.id) == a.id
    assert store.claim_dedupe_key("k", b.id) == a.id
    store.release_dedupe_key("k", a.id)
    assert store.claim_dedupe_key("k", b.id) == b.id


def test_skipped_and_failed_listing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite3")
    store.mark_skipped("acc", ["1", "2"])
    assert store.ref_states("acc", ["1", "2", "3"]) == {
        "1": MessageState.SKIPPED, "2": MessageState.SKIPPED}
    rec = store.begin_message("acc", "3", sha256=None)
    store.finish_message(rec.id, MessageState.FAILED, error="ParseError: nope")
    failed = store.failed_messages("acc")
    assert [f.ref for f in failed] == ["3"] and failed[0].error == "ParseError: nope"
    assert store.failed_messages("other") == []


def test_sender_count_and_marks(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite3")
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
