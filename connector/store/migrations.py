"""Versioned schema migrations for both store engines.

Every change to the tables is one more :class:`Migration` at the end of ``MIGRATIONS``: a
number, a name, and what it runs on SQLite and on PostgreSQL (SQL scripts, or a function of the
open connection for what SQL alone cannot say). A store records each migration it applied in
``schema_migrations``; opening it for writing applies the pending ones in order, in one
transaction each (PostgreSQL: all under one advisory lock, so instances starting together
migrate once); ``postmaster-bridge store migrate`` does the same on demand and ``--check``
lists what is pending. A store that records a migration this bridge does not know was
written by a newer bridge: it is refused rather than misread.

Migration 1 and 2 on SQLite are written to also complete a ledger made before migrations were
recorded (``CREATE ... IF NOT EXISTS`` and columns added only when missing): such a ledger is
upgraded in place, nothing in it is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from connector.errors import StoreSchemaError

#: One step of a migration: an SQL script (statements end a line with ``;``), or a function
#: given the engine's own connection (sqlite3.Connection; psycopg.Connection, ``%s`` params).
Step = str | Callable[[Any], None]

#: The table that records applied migrations (the same on both engines).
MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sqlite: tuple[Step, ...]
    postgresql: tuple[Step, ...]

    def steps(self, engine: str) -> tuple[Step, ...]:
        return self.sqlite if engine == "sqlite" else self.postgresql


_SQLITE_LEDGER = """
CREATE TABLE IF NOT EXISTS messages (
    id          INTEGER PRIMARY KEY,
    account     TEXT NOT NULL,
    ref         TEXT NOT NULL,
    state       TEXT NOT NULL,
    dedupe_key  TEXT,
    message_id  TEXT,
    sha256      TEXT,
    sender      TEXT,
    subject     TEXT,
    action      TEXT,
    ticket_id   INTEGER,
    attempts    INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    pending     TEXT,
    trace       TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    mail_day    TEXT,  -- the UTC day of the mail's Date (the per-sender cap counts by it)
    sender_proven INTEGER,  -- 1: the From was authenticated (proven mail is counted apart)
    UNIQUE (account, ref)
);
CREATE INDEX IF NOT EXISTS messages_sender ON messages (sender, created_at);
CREATE INDEX IF NOT EXISTS messages_state ON messages (state, account);
CREATE INDEX IF NOT EXISTS messages_dedupe ON messages (dedupe_key);

-- One row per distinct mail: the first record to claim a dedupe key owns it, so the same mail
-- fetched from two mailboxes (or after a UIDVALIDITY change) makes one ticket.
CREATE TABLE IF NOT EXISTS dedupe_claims (
    dedupe_key  TEXT PRIMARY KEY,
    record_id   INTEGER NOT NULL
);

-- Every Message-ID the bridge has seen or sent, to thread replies onto their ticket.
CREATE TABLE IF NOT EXISTS message_ids (
    message_id  TEXT PRIMARY KEY,
    ticket_id   INTEGER NOT NULL,
    direction   TEXT NOT NULL,
    account     TEXT,
    created_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS mailbox_marks (
    account        TEXT NOT NULL,
    folder         TEXT NOT NULL,
    uidvalidity    INTEGER,
    baseline_taken INTEGER NOT NULL DEFAULT 0,
    updated_at     TEXT NOT NULL,
    PRIMARY KEY (account, folder)
);

CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

-- The raw bytes of messages that failed, so an admin can export and replay them.
CREATE TABLE IF NOT EXISTS quarantine (
    record_id   INTEGER PRIMARY KEY,
    raw         BLOB NOT NULL,
    created_at  TEXT NOT NULL
);

-- Failed messages an admin handled by hand (errors dismiss): out of `errors list`, kept here.
CREATE TABLE IF NOT EXISTS dismissals (
    record_id    INTEGER PRIMARY KEY,
    reason       TEXT NOT NULL,
    dismissed_at TEXT NOT NULL
);

-- Account health: consecutive connection failures, last success, auto-disable.
CREATE TABLE IF NOT EXISTS account_health (
    account              TEXT PRIMARY KEY,
    enabled              INTEGER NOT NULL DEFAULT 1,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    last_success_at      TEXT,
    last_error           TEXT,
    last_error_at        TEXT,
    disabled_reason      TEXT,
    backlog              INTEGER,
    updated_at           TEXT NOT NULL
);

-- The communication log (OTOBO's idea): connection and message events, each with level,
-- account, message identity and, for connections, how long it took.
CREATE TABLE IF NOT EXISTS comm_log (
    id           INTEGER PRIMARY KEY,
    ts           TEXT NOT NULL,
    level        TEXT NOT NULL,
    kind         TEXT NOT NULL,
    account      TEXT,
    ref          TEXT,
    message_id   TEXT,
    event        TEXT NOT NULL,
    detail       TEXT,
    duration_ms  REAL
);
CREATE INDEX IF NOT EXISTS comm_log_ts ON comm_log (ts);
CREATE INDEX IF NOT EXISTS comm_log_event ON comm_log (event, ts);

-- What each account's connection is doing now (written by the running service, read by
-- `accounts`): state, since when, the last thing its server said, and which process says so.
CREATE TABLE IF NOT EXISTS connection_status (
    account          TEXT PRIMARY KEY,
    state            TEXT NOT NULL,
    detail           TEXT,
    since            TEXT NOT NULL,
    server_event     TEXT,
    server_event_at  TEXT,
    pid              INTEGER NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS comm_log_account ON comm_log (account, ts);
"""

_SQLITE_QUEUE = """
CREATE TABLE IF NOT EXISTS outbound_jobs (
    id              INTEGER PRIMARY KEY,
    account         TEXT NOT NULL,
    ticket_id       INTEGER NOT NULL,
    source          TEXT NOT NULL,
    dedupe_key      TEXT NOT NULL UNIQUE,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    generation      INTEGER NOT NULL DEFAULT 0,
    forced          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    owner           TEXT,
    lease_until     REAL,
    payload         TEXT,
    comment_id      INTEGER,
    message_id      TEXT,
    recipient       TEXT,
    subject         TEXT,
    smtp_reply      TEXT,
    error           TEXT,
    reported        INTEGER NOT NULL DEFAULT 0,
    report_error    TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    sent_at         TEXT
);
CREATE INDEX IF NOT EXISTS outbound_jobs_due ON outbound_jobs (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbound_jobs_ticket ON outbound_jobs (account, ticket_id);

-- One send per comment: the job that sends (or sent) it.
CREATE TABLE IF NOT EXISTS outbound_sends (
    account     TEXT NOT NULL,
    ticket_id   INTEGER NOT NULL,
    comment_id  INTEGER NOT NULL,
    job_id      INTEGER NOT NULL,
    PRIMARY KEY (account, ticket_id, comment_id)
);

-- Signed deliveries already accepted (digest of timestamp + body): replays are duplicates.
CREATE TABLE IF NOT EXISTS outbound_deliveries (
    digest      TEXT PRIMARY KEY,
    job_id      INTEGER NOT NULL,
    received_at REAL NOT NULL
);

-- What `install` made or changed in Zendesk, so `uninstall` removes exactly that.
CREATE TABLE IF NOT EXISTS outbound_installed (
    kind        TEXT NOT NULL,
    key         TEXT NOT NULL,
    remote_id   TEXT NOT NULL,
    created     INTEGER NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);

-- A webhook signing secret Zendesk chose itself (it ignored or predates the configured one).
CREATE TABLE IF NOT EXISTS outbound_secrets (
    account     TEXT PRIMARY KEY,
    webhook_id  TEXT NOT NULL,
    secret      TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
"""

def _sqlite_ledger_columns(db: Any) -> None:
    """Columns a ledger from before migrations may lack (its tables exist already, so the
    CREATE above left them as they were)."""
    columns = {r[1] for r in db.execute("PRAGMA table_info(messages)")}
    if "mail_day" not in columns:  # a ledger written before the cap counted by Date
        db.execute("ALTER TABLE messages ADD COLUMN mail_day TEXT")
        # Their Date is not known: the day they were recorded stands in for it.
        db.execute("UPDATE messages SET mail_day = substr(created_at, 1, 10) "
                   "WHERE sender IS NOT NULL")
    if "sender_proven" not in columns:  # before proven senders were counted apart
        db.execute("ALTER TABLE messages ADD COLUMN sender_proven INTEGER")
    db.execute("CREATE INDEX IF NOT EXISTS messages_sender_day ON messages (sender, mail_day)")



# PostgreSQL: the same tables. Ticket ids are TEXT (helpdesks name tickets as they like);
# integers are BIGINT; ids are identities, so `store copy` can keep the SQLite ids.
_PG_LEDGER = """
CREATE TABLE messages (
    id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    account       TEXT NOT NULL,
    ref           TEXT NOT NULL,
    state         TEXT NOT NULL,
    dedupe_key    TEXT,
    message_id    TEXT,
    sha256        TEXT,
    sender        TEXT,
    subject       TEXT,
    action        TEXT,
    ticket_id     TEXT,
    attempts      BIGINT NOT NULL DEFAULT 0,
    error         TEXT,
    pending       TEXT,
    trace         TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    mail_day      TEXT,
    sender_proven INTEGER,
    UNIQUE (account, ref)
);
CREATE INDEX messages_sender ON messages (sender, created_at);
CREATE INDEX messages_state ON messages (state, account);
CREATE INDEX messages_dedupe ON messages (dedupe_key);
CREATE INDEX messages_sender_day ON messages (sender, mail_day);
CREATE INDEX messages_message_id ON messages (message_id);
CREATE TABLE dedupe_claims (
    dedupe_key  TEXT PRIMARY KEY,
    record_id   BIGINT NOT NULL
);
-- seq keeps the order of insertion (SQLite's rowid) for ids mapped in one go.
CREATE TABLE message_ids (
    message_id  TEXT PRIMARY KEY,
    ticket_id   TEXT NOT NULL,
    direction   TEXT NOT NULL,
    account     TEXT,
    created_at  TEXT NOT NULL,
    seq         BIGINT GENERATED BY DEFAULT AS IDENTITY
);
CREATE INDEX message_ids_ticket ON message_ids (ticket_id);
CREATE TABLE mailbox_marks (
    account        TEXT NOT NULL,
    folder         TEXT NOT NULL,
    uidvalidity    BIGINT,
    baseline_taken INTEGER NOT NULL DEFAULT 0,
    updated_at     TEXT NOT NULL,
    PRIMARY KEY (account, folder)
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE quarantine (
    record_id   BIGINT PRIMARY KEY,
    raw         BYTEA NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE dismissals (
    record_id    BIGINT PRIMARY KEY,
    reason       TEXT NOT NULL,
    dismissed_at TEXT NOT NULL
);
CREATE TABLE account_health (
    account              TEXT PRIMARY KEY,
    enabled              INTEGER NOT NULL DEFAULT 1,
    consecutive_failures BIGINT NOT NULL DEFAULT 0,
    last_success_at      TEXT,
    last_error           TEXT,
    last_error_at        TEXT,
    disabled_reason      TEXT,
    backlog              BIGINT,
    updated_at           TEXT NOT NULL
);
CREATE TABLE comm_log (
    id           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    ts           TEXT NOT NULL,
    level        TEXT NOT NULL,
    kind         TEXT NOT NULL,
    account      TEXT,
    ref          TEXT,
    message_id   TEXT,
    event        TEXT NOT NULL,
    detail       TEXT,
    duration_ms  DOUBLE PRECISION
);
CREATE INDEX comm_log_ts ON comm_log (ts);
CREATE INDEX comm_log_event ON comm_log (event, ts);
CREATE INDEX comm_log_account ON comm_log (account, ts);
CREATE TABLE connection_status (
    account          TEXT PRIMARY KEY,
    state            TEXT NOT NULL,
    detail           TEXT,
    since            TEXT NOT NULL,
    server_event     TEXT,
    server_event_at  TEXT,
    pid              BIGINT NOT NULL,
    updated_at       TEXT NOT NULL
);
"""

_PG_QUEUE = """
CREATE TABLE outbound_jobs (
    id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    account         TEXT NOT NULL,
    ticket_id       TEXT NOT NULL,
    source          TEXT NOT NULL,
    dedupe_key      TEXT NOT NULL UNIQUE,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    generation      BIGINT NOT NULL DEFAULT 0,
    forced          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    owner           TEXT,
    lease_until     DOUBLE PRECISION,
    payload         TEXT,
    comment_id      BIGINT,
    message_id      TEXT,
    recipient       TEXT,
    subject         TEXT,
    smtp_reply      TEXT,
    error           TEXT,
    reported        INTEGER NOT NULL DEFAULT 0,
    report_error    TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    sent_at         TEXT
);
CREATE INDEX outbound_jobs_due ON outbound_jobs (state, next_attempt_at);
CREATE INDEX outbound_jobs_ticket ON outbound_jobs (account, ticket_id);
CREATE TABLE outbound_sends (
    account     TEXT NOT NULL,
    ticket_id   TEXT NOT NULL,
    comment_id  BIGINT NOT NULL,
    job_id      BIGINT NOT NULL,
    PRIMARY KEY (account, ticket_id, comment_id)
);
CREATE TABLE outbound_deliveries (
    digest      TEXT PRIMARY KEY,
    job_id      BIGINT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE outbound_installed (
    kind        TEXT NOT NULL,
    key         TEXT NOT NULL,
    remote_id   TEXT NOT NULL,
    created     INTEGER NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE outbound_secrets (
    account     TEXT PRIMARY KEY,
    webhook_id  TEXT NOT NULL,
    secret      TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
"""

# Several `run` instances on one store (connector.service.leases): each registers with a
# heartbeat, and works an account (resource `account:<name>`) or the outbound sweep (`sweep`)
# only while its lease has not expired. Times are the database's clock in Unix seconds;
# `epoch` grows with each new holder (the fencing token effects are committed under).
_LEASES = """
CREATE TABLE IF NOT EXISTS instances (
    instance     TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          {integer} NOT NULL,
    url          TEXT,
    started_at   {real} NOT NULL,
    heartbeat_at {real} NOT NULL,
    expires_at   {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    resource     TEXT PRIMARY KEY,
    holder       TEXT NOT NULL,
    epoch        {integer} NOT NULL,
    acquired_at  {real} NOT NULL,
    renewed_at   {real} NOT NULL,
    expires_at   {real} NOT NULL
);
"""
_SQLITE_LEASES = _LEASES.format(integer="INTEGER", real="REAL")
_PG_LEASES = _LEASES.format(integer="BIGINT", real="DOUBLE PRECISION")

# The communication log's index by event serves one question, the reconnections of the last
# hour (connection events). Over every entry it also indexed the helpdesk calls, two a mail,
# whose event names the call and its target ("create_ticket new ticket 'subject'"): long,
# scattered keys that cost about three pages of WAL a mail (of some thirty), measured with
# 100 commits of two entries each (6.9 pages a commit with it, 4.0 without).
_EVENT_INDEX = """
DROP INDEX IF EXISTS comm_log_event;
CREATE INDEX IF NOT EXISTS comm_log_connection_event ON comm_log (event, ts)
    WHERE kind = 'connection';
"""

#: In order; a new change is one more entry with the next number (never edit an old one).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "ledger", sqlite=(_SQLITE_LEDGER, _sqlite_ledger_columns),
              postgresql=(_PG_LEDGER,)),
    Migration(2, "outbound queue", sqlite=(_SQLITE_QUEUE,), postgresql=(_PG_QUEUE,)),
    Migration(3, "instances and leases", sqlite=(_SQLITE_LEASES,), postgresql=(_PG_LEASES,)),
    Migration(4, "connection events index", sqlite=(_EVENT_INDEX,),
              postgresql=(_EVENT_INDEX,)),
)

LATEST = MIGRATIONS[-1].version


def pending(applied: Iterable[int]) -> list[Migration]:
    """The migrations not in ``applied``, in order; refuses a store a newer bridge wrote."""
    done = set(applied)
    unknown = sorted(v for v in done if v > LATEST)
    if unknown:
        raise StoreSchemaError(
            f"the store has schema migration {unknown[-1]}, this bridge knows up to {LATEST}: "
            "it was written by a newer postmaster-bridge; upgrade this one")
    return [m for m in MIGRATIONS if m.version not in done]


def apply_steps(migration: Migration, engine: str, conn: Any) -> None:
    """Run one migration's steps for ``engine`` on ``conn``, inside the caller's transaction
    (which also records it in ``schema_migrations``)."""
    for step in migration.steps(engine):
        if isinstance(step, str):
            for statement in sql_statements(step):
                conn.execute(statement)
        else:
            step(conn)


def sql_statements(script: str) -> list[str]:
    """A script's statements, for engines that run one statement per call (SQLite inside a
    transaction). Split on ``;`` at the end of a line: the scripts here keep to that."""
    statements, current = [], []
    for line in script.splitlines():
        if line.strip().startswith("--"):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).strip().rstrip(";"))
            current = []
    rest = "\n".join(current).strip()
    if rest:
        statements.append(rest)
    return [s for s in statements if s]
