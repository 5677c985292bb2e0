"""The PostgreSQL store on a real server (tests/postgres.py): configuration and secrecy of
the DSN, schema migrations, the durability barrier, ``store copy`` from an SQLite ledger, and
the bridge end to end (Dovecot, the Zendesk fake) with its ledger in PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import yaml
from bridge_cli import cli_streams, run_report
from dovecot import CuttingProxy, DovecotServer, MailUser
from postgres import PostgresServer
from zendesk_responses import Bridge, FakeZendesk, account, customer_mail, write_config

from connector.config import load_config
from connector.errors import ConfigError, StoreSchemaError, StoreUnavailableError
from connector.outbound.queue import OutboundQueue
from connector.store.base import MessageState
from connector.store.migrations import LATEST, MIGRATIONS
from connector.store.postgres import (
    TCP_SETTINGS,
    PostgresDatabase,
    PostgresStore,
    connection_settings,
    redact_dsn,
)
from connector.store.sqlite import SQLiteStore


def pg_config(tmp_path: Path, dsn: str, **store: object) -> Path:
    """A config whose store is PostgreSQL, its DSN in a dsn_file (a secret, as a password)."""
    (tmp_path / "dsn").write_text(dsn + "\n")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "host": {"type": "dry-run"},
        "store": {"type": "postgresql", "dsn_file": str(tmp_path / "dsn"), **store},
        "accounts": [{"name": "support", "protocol": "imap", "host": "127.0.0.1",
                      "username": "u", "password": "${PMB_TEST_UNUSED}"}]}))
    return config


# -- configuration and the DSN's secrecy ---------------------------------------------------------

def test_the_dsn_is_a_secret_and_never_shown(tmp_path: Path, postgres: PostgresServer,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    dsn = postgres.dsn("postgres")
    config = load_config(pg_config(tmp_path, dsn), secrets=False)
    assert config.store.type == "postgresql" and config.store.dsn == dsn
    assert "pmb-test-secret" not in repr(config.store) and "pmb-test-secret" not in repr(config)
    assert "pmb-test-secret" not in redact_dsn(dsn) and "127.0.0.1" in redact_dsn(dsn)

    monkeypatch.setenv("PMB_DSN", dsn)
    env_config = tmp_path / "env.yaml"
    env_config.write_text(pg_config(tmp_path, dsn).read_text().replace(
        f"dsn_file: {tmp_path / 'dsn'}", "dsn: ${PMB_DSN}"))
    assert load_config(env_config, secrets=False).store.dsn == dsn

    literal = tmp_path / "literal.yaml"
    literal.write_text(env_config.read_text().replace("${PMB_DSN}", dsn))
    with pytest.raises(ConfigError, match="secrets are not written") as refused:
        load_config(literal, secrets=False)
    assert "pmb-test-secret" not in str(refused.value)


def test_an_unreachable_store_or_a_wrong_password_is_a_clear_error_without_the_password(
        tmp_path: Path, postgres: PostgresServer) -> None:
    wrong = postgres.dsn("postgres", password="not-the-pass-9F3k")
    with pytest.raises(StoreUnavailableError, match="password authentication failed") as exc:
        PostgresStore(wrong)
    assert "not-the-pass-9F3k" not in str(exc.value)

    code, out, err = cli_streams("-c", str(pg_config(tmp_path, wrong)), "accounts")
    assert code == 75 and "cannot be reached" in err
    assert "not-the-pass-9F3k" not in out + err


# -- schema migrations --------------------------------------------------------------------------

def test_migrate_check_and_migrate_on_an_empty_database(tmp_path: Path,
                                                        postgres: PostgresServer) -> None:
    dsn = postgres.fresh_database(migrated=False)
    config = str(pg_config(tmp_path, dsn))
    code, out, _ = cli_streams("-c", config, "store", "migrate", "--check")
    assert code == 1 and [line.split()[:2] for line in out.splitlines()[:-1]] == [
        ["pending", str(m.version)] for m in MIGRATIONS]
    assert "pmb-test-secret" not in out
    code, out, _ = cli_streams("-c", config, "store", "migrate")
    assert code == 0 and f"{len(MIGRATIONS)} migration(s) applied" in out
    code, out, _ = cli_streams("-c", config, "store", "migrate")
    assert code == 0 and "0 migration(s) applied" in out
    code, out, _ = cli_streams("-c", config, "store", "migrate", "--check")
    assert code == 0 and "0 migration(s) pending" in out
    postgres.drop_database(dsn)


def test_instances_starting_together_migrate_once(postgres: PostgresServer) -> None:
    dsn = postgres.fresh_database(migrated=False)
    applied: list[int] = []
    errors: list[BaseException] = []
    go = threading.Barrier(4)

    def start() -> None:
        go.wait()
        try:
            database = PostgresDatabase(dsn, pool_size=2, migrate=False)
            applied.extend(m.version for m in database.migrate())
            database.close()
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and sorted(applied) == [m.version for m in MIGRATIONS]
    versions = postgres.admin_sql("SELECT version FROM schema_migrations ORDER BY version",
                                  dsn.rsplit("/", 1)[1].split("?")[0])
    assert [v for (v,) in versions] == [m.version for m in MIGRATIONS]
    postgres.drop_database(dsn)


def test_a_database_migrated_by_a_newer_bridge_is_refused(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                     "VALUES (%s, 'from the future', 'now')", (LATEST + 1,))
    with pytest.raises(StoreSchemaError, match="newer postmaster-bridge"):
        PostgresStore(pg_dsn)


# -- durability ---------------------------------------------------------------------------------

def wal_positions(dsn: str) -> tuple[str, str, bool]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        insert, flush, done = conn.execute(
            "SELECT pg_current_wal_insert_lsn(), pg_current_wal_flush_lsn(), "
            "pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn()").fetchone()
    return str(insert), str(flush), bool(done)


def test_unsynced_writes_are_flushed_by_the_barrier_and_durable_writes_at_once(
        pg_dsn: str) -> None:
    """The test server's WAL writer waits 10 s (tests/postgres.py), so a commit without
    synchronous_commit stays unflushed until something flushes it."""
    store = PostgresStore(pg_dsn, pool_size=2)
    store.make_durable()
    record = store.begin_message("support", "r1", sha256=None, durable=False)
    assert not wal_positions(pg_dsn)[2]  # committed, visible, not yet flushed
    store.make_durable()
    assert wal_positions(pg_dsn)[2]
    store.describe_message(record.id, dedupe_key="k", message_id=None, sender=None,
                           subject=None, trace=None, durable=False)
    store.set_pending(record.id, "new_ticket", {"x": 1})  # always durable: flushes all before
    assert wal_positions(pg_dsn)[2]
    store.close()


# -- store copy ---------------------------------------------------------------------------------

def sqlite_ledger(path: Path) -> dict[str, int]:
    """An SQLite ledger with a bit of everything: ticketed, failed (quarantined, dismissed),
    skipped mail, threading ids in and out, marks, health, a log, outbound jobs."""
    store = SQLiteStore(path)
    done = store.begin_message("support", "INBOX:1:1", sha256="aa")
    store.describe_message(done.id, dedupe_key="k1", message_id="m1@example.org",
                           sender="anna@example.org", subject="Stampante", trace={"why": 1})
    store.set_pending(done.id, "new_ticket", {"external_id": "pmb-1"})
    store.finish_message(done.id, MessageState.DONE, action="new_ticket", ticket_id="4711",
                         thread_ids=["m1@example.org"])
    store.map_message_ids("4711", ["pmb.1@bridge", "pmb.2@bridge"], direction="out",
                          account="support")
    failed = store.begin_message("support", "INBOX:1:2", sha256=None)
    store.quarantine(failed.id, b"\x00raw bytes\xff")
    store.finish_message(failed.id, MessageState.FAILED, error="ParseError: broken")
    store.dismiss_message(failed.id, "handled by phone")
    store.mark_skipped("support", ["INBOX:1:0"])
    store.set_mailbox_mark("support", "INBOX", uidvalidity=7, baseline_taken=True)
    store.record_success("support", backlog=0)
    store.log_event(level="info", kind="message", account="support", event="ticketed")
    store.close()
    queue = OutboundQueue(path)
    job = queue.enqueue("support", 4711, source="webhook", dedupe_key="inv-1", digest="d1",
                        payload={"ticket_id": "4711"})
    queue.claim_send(queue.job(job.job_id), 9001)
    queue.close()
    return {"done": done.id, "failed": failed.id, "job": job.job_id}


def test_store_copy_moves_everything_verified_and_keeps_ids(tmp_path: Path, pg_dsn: str) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    ids = sqlite_ledger(ledger)
    config = str(pg_config(tmp_path, pg_dsn, path=str(ledger)))
    (tmp_path / "target").write_text(pg_dsn)

    code, out, _ = cli_streams("-c", config, "store", "copy", "--to-file",
                               str(tmp_path / "target"))

    assert code == 0, out
    assert "row counts verified" in out and "pmb-test-secret" not in out
    assert "messages: 3 row(s) copied, 3 in the target" in out
    store = PostgresStore(pg_dsn)
    copied = store.get_message("support", "INBOX:1:1")
    assert copied is not None and copied.id == ids["done"] and copied.ticket_id == "4711"
    assert copied.trace == {"why": 1} and copied.pending == {"external_id": "pmb-1"}
    assert store.ticket_for_message_ids(["m1@example.org"]) == "4711"
    assert store.is_own_message_id("pmb.2@bridge")
    assert store.quarantined_raw(ids["failed"]) == b"\x00raw bytes\xff"
    assert store.failed_messages() == [] and store.dismissals([ids["failed"]])
    assert store.ref_states("support", ["INBOX:1:0"]) == {"INBOX:1:0": MessageState.SKIPPED}
    mark = store.get_mailbox_mark("support", "INBOX")
    assert mark is not None and mark.uidvalidity == 7 and mark.baseline_taken
    assert [e.event for e in store.log_entries()] == ["ticketed"]
    # New rows continue after the copied ids.
    assert store.begin_message("support", "INBOX:1:3", sha256=None).id > ids["failed"]
    queue = OutboundQueue(PostgresDatabase(pg_dsn))
    assert queue.job(ids["job"]).payload == {"ticket_id": "4711"}
    assert queue.thread_message_ids(4711) == [("m1@example.org", "in"),
                                              ("pmb.1@bridge", "out"), ("pmb.2@bridge", "out")]
    assert not queue.enqueue("support", 4711, source="webhook", dedupe_key="x",
                             digest="d1").created  # the replay digest came along
    assert queue.enqueue("support", 5, source="webhook", dedupe_key="new").job_id > ids["job"]
    queue.close()
    store.close()

    # A second copy onto the now filled database is refused, unless told to replace it.
    code, out, _ = cli_streams("-c", config, "store", "copy", "--to", pg_dsn)
    assert code == 64 and "already holds bridge data" in out and "pmb-test-secret" not in out
    code, out, _ = cli_streams("-c", config, "store", "copy", "--to", pg_dsn, "--replace")
    assert code == 0
    store = PostgresStore(pg_dsn)
    assert store.get_message("support", "INBOX:1:3") is None  # replaced by the ledger's rows
    store.close()


def test_a_copy_that_fails_leaves_the_target_as_it_was(tmp_path: Path, pg_dsn: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from connector.store import copy as copy_module

    ledger = tmp_path / "ledger.sqlite3"
    sqlite_ledger(ledger)
    real = copy_module._copy_table

    def short_count(reader: object, target: object, table: str) -> copy_module.CopiedTable:
        copied = real(reader, target, table)  # type: ignore[arg-type]
        if table == "messages":  # as if a row had gone missing on the way
            return copy_module.CopiedTable(table, copied.source_rows + 1, copied.target_rows)
        return copied

    monkeypatch.setattr(copy_module, "_copy_table", short_count)
    config = str(pg_config(tmp_path, pg_dsn, path=str(ledger)))
    code, out, _ = cli_streams("-c", config, "store", "copy", "--to", pg_dsn)
    assert code == 1 and "not verified" in out and "rolled back" in out
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone() == (0,)
        assert conn.execute("SELECT COUNT(*) FROM outbound_jobs").fetchone() == (0,)


# -- the bridge end to end on PostgreSQL ---------------------------------------------------------

def test_mail_becomes_tickets_once_with_the_ledger_in_postgresql(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk, tmp_path: Path,
    pg_dsn: str,
) -> None:
    (tmp_path / "dsn").write_text(pg_dsn)
    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support")],
                          store={"type": "postgresql", "dsn_file": str(tmp_path / "dsn")})
    dovecot.append(mailbox_user, [customer_mail(f"Richiesta {n}", f"m{n}@example.org")
                                  for n in range(3)])
    dovecot.append(mailbox_user, customer_mail("Re: Richiesta 0", "r0@example.org",
                                               in_reply_to="m0@example.org"))

    code, lines = run_report("-c", str(config), "run", "--once")

    assert code == 0, lines
    assert "fetched=4 ticketed=3 followed-up=1" in lines[-1]
    assert len(zendesk.ticket_list()) == 3
    code, lines = run_report("-c", str(config), "run", "--once")  # nothing left, nothing twice
    assert code == 0 and len(zendesk.ticket_list()) == 3
    code, out, _ = cli_streams("-c", str(config), "accounts", "--json")
    [support] = json.loads(out)
    assert support["account"] == "support" and support["processed"] == 4
    assert not (tmp_path / "ledger.sqlite3").exists()  # nothing went to an SQLite file


def test_the_bridge_helper_runs_on_postgresql(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk, tmp_path: Path,
    pg_dsn: str, make_bridge: Callable[..., Bridge],
) -> None:
    (tmp_path / "dsn").write_text(pg_dsn)
    dovecot.append(mailbox_user, customer_mail("Stampante", "p1@example.org"))
    bridge = make_bridge([account(dovecot, mailbox_user, "support")],
                         store={"type": "postgresql", "dsn_file": str(tmp_path / "dsn")})
    assert bridge.store.engine == "postgresql"
    assert bridge.poll().counts["ticketed"] == 1
    [record] = bridge.store.messages()
    assert record.state == MessageState.DONE and record.ticket_id is not None


def test_the_store_recovers_when_its_connections_are_cut(pg_dsn: str,
                                                         postgres: PostgresServer) -> None:
    """A server restart or failover cuts every connection: the calls that meet a dead one
    fail as StoreUnavailableError (the mail is retried, as after any store error), and the
    pool replaces them: the same store object works again, nothing reopened."""
    store = PostgresStore(pg_dsn, pool_size=3)
    record = store.begin_message("support", "r1", sha256=None)
    dbname = pg_dsn.rsplit("/", 1)[1].split("?")[0]
    postgres.admin_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       f"WHERE datname = '{dbname}' AND pid <> pg_backend_pid()")
    failures = 0
    for _ in range(10):
        try:
            found = store.get_message_by_id(record.id)
            break
        except StoreUnavailableError as exc:
            assert "pmb-test-secret" not in str(exc)
            failures += 1
    else:
        pytest.fail("the store did not recover")
    assert found is not None and found.ref == "r1" and failures <= 3
    store.finish_message(record.id, MessageState.DONE, action="new_ticket", ticket_id="1")
    store.close()


def test_connections_give_up_on_a_server_that_went_silent(pg_dsn: str) -> None:
    """Every pooled connection carries TCP keepalives and a user timeout, so a call waiting
    for a server a network cut made unreachable fails within seconds (and the lease keeper
    counts a failed renewal) instead of waiting for the kernel's hours. A DSN that chooses
    its own values keeps them."""
    store = PostgresStore(pg_dsn, pool_size=2)
    try:
        with store._connection() as conn:
            used = {o.keyword.decode(): (o.val or b"").decode() for o in conn.pgconn.info}
    finally:
        store.close()
    assert {k: used[k] for k in TCP_SETTINGS} == {k: str(v) for k, v in TCP_SETTINGS.items()}
    own = connection_settings(pg_dsn + " keepalives_idle=60" if "://" not in pg_dsn
                              else pg_dsn + ("&" if "?" in pg_dsn else "?")
                              + "keepalives_idle=60")
    assert "keepalives_idle" not in own and own["tcp_user_timeout"] == 15_000


def test_a_call_the_server_never_answers_is_cut_after_the_call_timeout(
        pg_dsn: str, postgres: PostgresServer) -> None:
    """A worker must never wait forever on the store (its account would stay stuck, a stop
    would hang): a call without an answer fails after ``call_timeout`` as
    StoreUnavailableError, and once the server answers again the same store works."""
    # Frozen, the proxy keeps every connection open (its kernel still acknowledges data and
    # keepalives) but forwards nothing, as a hung server or proxy does: only a deadline tells.
    relay = CuttingProxy(postgres.port)
    store = PostgresStore(pg_dsn.replace(f":{postgres.port}/", f":{relay.port}/"),
                          pool_size=2, call_timeout=2.0)
    try:
        record = store.begin_message("support", "r1", sha256=None)
        relay.freeze()
        with pytest.raises(StoreUnavailableError, match="did not answer within 2 s"):
            store.get_message_by_id(record.id)
        relay.thaw()
        for _ in range(50):
            with contextlib.suppress(StoreUnavailableError):
                found = store.get_message_by_id(record.id)
                break
            time.sleep(0.1)
        else:
            pytest.fail("the store did not recover")
        assert found is not None and found.ref == "r1"
    finally:
        store.close()
        relay.close()


def test_check_reports_the_postgresql_store(tmp_path: Path, postgres: PostgresServer,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMB_TEST_UNUSED", "x")
    dsn = postgres.fresh_database(migrated=False)

    def store_check(config: Path) -> dict:
        _, out, _ = cli_streams("-c", str(config), "check", "--json")
        [store] = [c for c in json.loads(out)["checks"] if c["check"] == "store"]
        assert "pmb-test-secret" not in out
        return store

    pending = store_check(pg_config(tmp_path, dsn))
    assert pending["status"] == "warn"
    assert f"{len(MIGRATIONS)} schema migration(s) pending" in pending["detail"]
    PostgresDatabase(dsn).close()
    assert store_check(pg_config(tmp_path, dsn))["status"] == "ok"
    wrong = store_check(pg_config(tmp_path, postgres.dsn("postgres", password="nope-77")))
    assert wrong["status"] == "fail" and "cannot be reached" in wrong["detail"]
    postgres.drop_database(dsn)


def test_store_vacuum_works_and_check_backup_point_to_postgresqls_tools(
        tmp_path: Path, pg_dsn: str) -> None:
    config = str(pg_config(tmp_path, pg_dsn))
    code, out, _ = cli_streams("-c", config, "store", "vacuum")
    assert code == 0 and "PostgreSQL store" in out and "pmb-test-secret" not in out
    code, out, _ = cli_streams("-c", config, "store", "check")
    assert code == 64 and "pg_amcheck" in out
    code, out, _ = cli_streams("-c", config, "store", "backup", str(tmp_path / "b"))
    assert code == 64 and "pg_dump" in out


def test_a_role_without_synchronous_commit_gets_it_back_for_the_bridge(
        pg_dsn: str, postgres: PostgresServer) -> None:
    dbname = pg_dsn.rsplit("/", 1)[1].split("?")[0]
    postgres.admin_sql(f"ALTER DATABASE {dbname} SET synchronous_commit = off")
    store = PostgresStore(pg_dsn, pool_size=2)
    with store._tx() as db:
        assert db.execute("SHOW synchronous_commit").fetchone()[0] == "on"
        assert db.execute("SHOW lock_timeout").fetchone()[0] == "30s"
    store.close()


def test_a_row_the_server_refuses_rolls_the_whole_copy_back(tmp_path: Path,
                                                            pg_dsn: str) -> None:
    import sqlite3

    ledger = tmp_path / "ledger.sqlite3"
    sqlite_ledger(ledger)
    with sqlite3.connect(ledger) as db:  # SQLite keeps what its column type does not fit
        db.execute("UPDATE mailbox_marks SET uidvalidity = 'not a number'")
    config = str(pg_config(tmp_path, pg_dsn, path=str(ledger)))
    code, out, _ = cli_streams("-c", config, "store", "copy", "--to", pg_dsn)
    assert code == 1 and "failed" in out and "rolled back" in out
    assert "pmb-test-secret" not in out
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone() == (0,)
