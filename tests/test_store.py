"""The ledger on both engines (a real SQLite file, a real PostgreSQL database): states, claims,
the Message-ID map, mailbox marks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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
    store.finish_message(rec.id, MessageState.DONE, action="new_ticket", ticket_id=42,
                         thread_ids=["a@b", "c@d"])
    assert store.ref_states("support", ["INBOX:1:7", "INBOX:1:8"]) == {
        "INBOX:1:7": MessageState.DONE}
    assert store.ticket_for_message_ids(["zzz", "c@d", "a@b"]) == 42
    assert store.ticket_for_message_ids([]) is None
    assert not store.is_own_message_id("a@b")
    store.map_message_ids(42, ["sent@bridge"], direction="out", account="support")
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
