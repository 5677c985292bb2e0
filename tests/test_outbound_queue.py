"""The durable outbound queue on both engines: dedupe, claims, crash recovery, one send per
comment; on PostgreSQL, claims by several instances at once (``FOR UPDATE SKIP LOCKED``)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from conftest import StoreTarget

from connector.outbound.queue import JobState, OutboundQueue, owner_dead, process_owner


class Clock:
    def __init__(self) -> None:
        self.now = 1_790_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(target: StoreTarget, clock: Clock) -> OutboundQueue:
    return target.queue(clock)


ME = process_owner("me")


def test_wal_and_full_sync(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "bridge.sqlite3")
    assert queue.db._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    queue.enqueue("pec", 1, source="webhook", dedupe_key="k")  # as every queue write: FULL
    assert queue.db._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    queue.close()


def test_enqueue_dedupes_on_key_and_on_delivery_digest(queue: OutboundQueue) -> None:
    first = queue.enqueue("pec", 4711, source="webhook", dedupe_key="inv:A", digest="d1",
                          payload={"ticket_id": "4711"})
    assert first.created
    assert queue.enqueue("pec", 4711, source="webhook", dedupe_key="inv:A",
                         digest="d2") == type(first)(first.job_id, False)
    # The same signed delivery under another invocation id header is a replay.
    replay = queue.enqueue("pec", 4711, source="webhook", dedupe_key="inv:FORGED", digest="d1")
    assert replay.job_id == first.job_id and not replay.created
    assert [j.id for j in queue.jobs()] == [first.job_id]
    assert queue.job(first.job_id).payload == {"ticket_id": "4711"}


def test_jobs_survive_reopening_the_store(target: StoreTarget, clock: Clock) -> None:
    q = target.queue(clock)
    job_id = q.enqueue("pec", 1, source="webhook", dedupe_key="k").job_id
    q.close()
    reopened = target.queue(clock)
    assert reopened.job(job_id).state == JobState.QUEUED


def test_shares_the_database_with_the_store(target: StoreTarget, clock: Clock) -> None:
    store = target.store()
    q = target.queue(clock)
    store.map_message_ids(4711, ["m1@example.it"], direction="in", account="pec")
    store.map_message_ids(4711, ["pmb.1@pec.example.it"], direction="out", account="pec")
    store.map_message_ids(4711, ["m2@example.it"], direction="in", account="pec")
    assert q.thread_message_ids(4711) == [("m1@example.it", "in"),
                                          ("pmb.1@pec.example.it", "out"),
                                          ("m2@example.it", "in")]
    assert q.thread_message_ids(999) == []
    if target.engine == "sqlite":
        tables = {r[0] for r in sqlite3.connect(target.where).execute(
            "SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"messages", "outbound_jobs", "outbound_sends"} <= tables


def test_thread_ids_without_store_tables(queue: OutboundQueue) -> None:
    assert queue.thread_message_ids(1) == []


def test_claims_count_attempts_and_respect_backoff_and_rate(queue: OutboundQueue,
                                                            clock: Clock) -> None:
    a = queue.enqueue("legal", 1, source="webhook", dedupe_key="a").job_id
    b = queue.enqueue("aruba", 2, source="webhook", dedupe_key="b").job_id
    job = queue.claim_next(ME, 600, can_send=lambda acc: acc != "legal")
    assert job.id == b and job.state == JobState.WORKING and job.attempts == 1
    assert queue.claim_next(ME, 600, can_send=lambda acc: acc != "legal") is None
    queue.retry_later(b, ME, "451 later", clock.now + 60)
    job = queue.claim_next(ME, 600)
    assert job.id == a
    assert queue.claim_next(ME, 600) is None  # b waits for its backoff
    assert queue.next_due_at() == clock.now + 60
    clock.now += 61
    assert queue.claim_next(ME, 600).attempts == 2


def test_reports_owed_come_before_new_sends(queue: OutboundQueue) -> None:
    queue.enqueue("pec", 1, source="webhook", dedupe_key="first")
    job = queue.claim_next(ME, 600)
    queue.begin_send(job.id, ME, message_id="m@x", recipient="r@example.it", subject="s")
    queue.mark_sent(job.id, ME, "250 ok")
    queue.recover(process_owner("next-incarnation"))  # the worker died before the note
    queue.enqueue("pec", 2, source="webhook", dedupe_key="second")
    claimed = queue.claim_next(ME, 600)
    assert claimed.id == job.id and claimed.needs_report and claimed.state == JobState.SENT
    queue.mark_reported(claimed.id, ME)
    assert not queue.job(job.id).needs_report


def test_recovery_after_a_crash(queue: OutboundQueue) -> None:
    old = process_owner("crashed")
    reading = queue.enqueue("pec", 1, source="webhook", dedupe_key="r").job_id
    sending = queue.enqueue("pec", 2, source="webhook", dedupe_key="s").job_id
    assert queue.claim_next(old, 600).id == reading
    assert queue.claim_next(old, 600).id == sending
    queue.begin_send(sending, old, message_id="m@x", recipient="r@example.it", subject="s")
    new = process_owner("restarted")
    uncertain = queue.recover(new)
    assert [j.id for j in uncertain] == [sending]
    assert queue.job(reading).state == JobState.QUEUED and queue.job(reading).owner is None
    job = queue.job(sending)
    assert job.state == JobState.UNCERTAIN and job.needs_report and "may or may not" in job.error
    # A live owner's claims are left alone.
    claimed = queue.claim_next(new, 600)
    assert claimed is not None and claimed.id in (reading, sending)
    assert queue.recover(new) == []
    assert queue.job(claimed.id).owner == new


def test_expired_lease_is_recovered(queue: OutboundQueue, clock: Clock) -> None:
    other_host = "elsewhere:1:x"
    queue.enqueue("pec", 1, source="webhook", dedupe_key="k")
    job = queue.claim_next(other_host, 600)
    assert queue.recover(ME) == [] and queue.job(job.id).state == JobState.WORKING
    clock.now += 601
    queue.recover(ME)
    assert queue.job(job.id).state == JobState.QUEUED


def test_owner_liveness() -> None:
    me = process_owner("a")
    assert not owner_dead(me, me)
    assert owner_dead(process_owner("b"), me)  # an earlier worker of this process
    host = me.split(":")[0]
    assert owner_dead(f"{host}:999999999:x", me)  # no such process
    assert not owner_dead("other-host:1:x", me)


def test_one_send_per_comment(queue: OutboundQueue) -> None:
    ids = [queue.enqueue("pec", 7, source=s, dedupe_key=s).job_id for s in ("webhook", "sweep")]
    first, second = (queue.job(i) for i in ids)
    assert queue.claim_send(first, 555) is None
    assert queue.claim_send(first, 555) is None  # idempotent for its holder
    assert queue.claim_send(second, 555) == first.id
    assert queue.claim_send(second, 556) is None  # another comment is free
    # A failed holder frees the comment: the agent may apply the macro again.
    queue.claim_next(ME, 600)
    queue.mark_failed(first.id, ME, "550 no")
    third = queue.job(queue.enqueue("pec", 7, source="webhook", dedupe_key="again").job_id)
    assert queue.claim_send(third, 555) is None


def test_requeue_rules(queue: OutboundQueue) -> None:
    job_id = queue.enqueue("pec", 7, source="webhook", dedupe_key="k").job_id
    with pytest.raises(ValueError, match="not finished"):
        queue.requeue(job_id)
    queue.claim_next(ME, 600)
    queue.begin_send(job_id, ME, message_id="m1@x", recipient="r@example.it", subject="s")
    queue.mark_uncertain(job_id, ME, "lost")
    job = queue.requeue(job_id)
    assert job.state == JobState.QUEUED and job.forced and job.generation == 1
    assert job.message_id == "m1@x"  # same Message-ID: the receiver can tell it is one message
    queue.claim_next(ME, 600)
    queue.mark_sent(job_id, ME, "250 ok")
    with pytest.raises(ValueError, match="was sent"):
        queue.requeue(job_id)
    with pytest.raises(LookupError):
        queue.requeue(12345)


def test_install_records_and_secrets(queue: OutboundQueue) -> None:
    queue.record_installed("trigger_category", "PEC Connector", "100", created=True)
    queue.record_installed("trigger_category", "PEC Connector", "100", created=False)
    (record,) = queue.installed("trigger_category")
    assert record.created  # once created by us, always ours to remove
    queue.forget_installed("trigger_category", "PEC Connector")
    assert queue.installed() == []
    queue.set_webhook_secret("pec", "W1", "zendesk-chosen")
    assert queue.webhook_secret("pec") == "zendesk-chosen"
    queue.forget_webhook_secret("pec")
    assert queue.webhook_secret("pec") is None


@pytest.fixture
def pg_target(pg_dsn: str) -> StoreTarget:
    made = StoreTarget("postgresql", pg_dsn)
    yield made
    made.close()


def test_a_job_another_instance_is_claiming_is_skipped_not_waited_for(
        pg_target: StoreTarget) -> None:
    import psycopg

    queue = pg_target.queue()
    first = queue.enqueue("pec", 1, source="webhook", dedupe_key="a").job_id
    second = queue.enqueue("pec", 2, source="webhook", dedupe_key="b").job_id
    with psycopg.connect(pg_target.where) as other:  # another instance, mid-claim
        other.execute("SELECT id FROM outbound_jobs WHERE id = %s FOR UPDATE", (first,))
        assert queue.claim_next(ME, 600).id == second  # returns at once, no lock wait
        assert queue.claim_next(ME, 600) is None
    assert queue.claim_next(ME, 600).id == first  # released: claimable again


def test_instances_claiming_at_once_take_each_job_exactly_once(
        pg_target: StoreTarget) -> None:
    jobs = 60
    setup = pg_target.queue()
    for n in range(jobs):
        setup.enqueue(f"acc{n % 3}", n, source="webhook", dedupe_key=f"k{n}")
    instances = [pg_target.queue() for _ in range(3)]
    claimed: list[list[int]] = [[] for _ in instances]
    go = threading.Barrier(len(instances))

    def work(index: int) -> None:
        owner = f"instance-{index}:1:x"
        go.wait()
        while (job := instances[index].claim_next(owner, 600)) is not None:
            claimed[index].append(job.id)
            instances[index].mark_skipped(job.id, owner, "done in the test")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(instances))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    every = sorted(j for ids in claimed for j in ids)
    assert every == sorted(j.id for j in setup.jobs(limit=jobs))  # each once, none left
    assert len(set(every)) == jobs
