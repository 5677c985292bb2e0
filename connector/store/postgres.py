"""PostgreSQL implementation of the store: the shared engine several bridge instances use.

psycopg 3 over the system's libpq, a psycopg-pool connection pool per store object (account
workers in threads each take a connection for one transaction). The ledger's SQL is the one
SQLite runs (connector/store/ledger.py); this module supplies transactions, reads and the
durability barrier.

Durability, the same rule as SQLite's: a write is durable when it returns (``COMMIT`` with
``synchronous_commit`` on: the commit record is flushed to the server's WAL before the commit
returns), unless the caller passes ``durable=False``: then ``SET LOCAL synchronous_commit =
off``, which commits without waiting for the flush. The WAL is one sequence, so what a crash
of the server keeps is a prefix of the commits, and a later synchronous commit flushes every
commit before it, from any connection. ``make_durable()`` is that barrier. So the effect of a
mail is committed durably before the mail leaves the server, as with SQLite. (With
synchronous standbys configured, a synchronous commit also waits for them, as the server's
``synchronous_commit`` setting says; the barrier then always commits.)

Errors: a server that cannot be reached or refuses the login raises
:class:`StoreUnavailableError`, whose message never carries the DSN's password.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import conninfo
from psycopg_pool import ConnectionPool

from connector.errors import StoreUnavailableError
from connector.store.leasing import LeaseTables
from connector.store.ledger import Ledger, _now
from connector.store.migrations import MIGRATIONS_TABLE, Migration, apply_steps, pending
from connector.store.sql import POSTGRESQL, Row

log = logging.getLogger("connector.store")

#: pg_advisory_xact_lock key held while migrating ("pmb-migr" in ASCII).
_MIGRATION_LOCK = 0x706D622D6D696772

#: Seconds to wait for a first connection before the store is called unreachable.
CONNECT_TIMEOUT = 10.0

#: Server settings of every connection. A lock held by another instance is waited for at
#: most as long as SQLite waits for its file (the call then fails and the mail is retried); a
#: transaction left open by a hung instance is ended by the server, so its locks are freed.
SESSION_SETTINGS = "-c lock_timeout=30s -c idle_in_transaction_session_timeout=60s"

#: libpq's TCP settings of every connection, unless the DSN sets them. Without them a call
#: waiting for a server that a network cut made unreachable (no FIN, no RST ever comes)
#: waits as long as the kernel's defaults say: hours for an idle wait, ~15 minutes for
#: unacknowledged data. With them such a call fails within ~15 s (keepalive probes after 5 s
#: of silence, every 2 s, 3 unanswered; sent data unacknowledged for 15 s), the connection
#: is dropped from the pool, and the instance counts a failed renewal instead of hanging.
TCP_SETTINGS: dict[str, int] = {
    "connect_timeout": int(CONNECT_TIMEOUT), "keepalives": 1, "keepalives_idle": 5,
    "keepalives_interval": 2, "keepalives_count": 3, "tcp_user_timeout": 15_000}


#: Seconds a call (one transaction or query) may wait for the server before the bridge cuts
#: its connection: well above lock_timeout, so only a server that stopped answering meets it.
CALL_TIMEOUT = 90.0


class _Call:
    """One call under a deadline; ``cut`` once the watchdog shut its socket."""

    __slots__ = ("cut", "deadline", "fd")

    def __init__(self, deadline: float, fd: int) -> None:
        self.deadline, self.fd, self.cut = deadline, fd, False


class _Deadlines:
    """Client-side deadlines of the calls under way. libpq has none: a call waits as long as
    the TCP connection lives. Keepalives end a connection whose packets are dropped; this
    ends a call whose peer's TCP still answers but which never replies (a hung server or
    proxy, a relay that stopped relaying): its socket is shut down, which wakes libpq with
    an error and the pool drops the connection."""

    def __init__(self, path: str, seconds: float) -> None:
        self.path, self.seconds = path, seconds
        self._calls: set[_Call] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def guard(self, conn: psycopg.Connection[Any], bounded: bool) -> Iterator[_Call]:
        call = _Call(time.monotonic() + self.seconds, conn.pgconn.socket)
        if not bounded:
            yield call
            return
        with self._lock:
            self._calls.add(call)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, daemon=True,
                                                name="store-deadlines")
                self._thread.start()
        try:
            yield call
        finally:
            with self._lock:  # the watchdog never cuts a connection back in the pool
                self._calls.discard(call)

    def _watch(self) -> None:
        while not self._closed.wait(0.5):
            now = time.monotonic()
            with self._lock:
                late = [call for call in self._calls if now >= call.deadline]
                for call in late:
                    self._calls.discard(call)
                    call.cut = True
                    with contextlib.suppress(OSError), \
                            socket.fromfd(call.fd, socket.AF_INET, socket.SOCK_STREAM) as sock:
                        sock.shutdown(socket.SHUT_RDWR)
            for _ in late:
                log.error("store %s: no answer from the server within %.0f s; connection cut",
                          self.path, self.seconds)

    def close(self) -> None:
        self._closed.set()


def connection_settings(dsn: str) -> dict[str, int]:
    """TCP_SETTINGS but those the DSN chooses itself."""
    try:
        chosen = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        chosen = {}
    return {key: value for key, value in TCP_SETTINGS.items() if chosen.get(key) is None}


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, fit for logs and errors (key=value or URI form)."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(an unreadable PostgreSQL DSN)"
    params.pop("password", None)
    shown = " ".join(f"{k}={v}" for k, v in sorted(params.items()) if v is not None)
    return shown or "(PostgreSQL defaults)"


def scrub(text: str, dsn: str) -> str:
    """``text`` with the DSN's password cut out, in case a driver message quoted it."""
    try:
        password = conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        password = None
    return text.replace(str(password), "***") if password else text


@lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled first). The shared SQL
    never has a ``?`` inside a string literal."""
    return re.sub(r"\?", "%s", sql.replace("%", "%%"))


def _scalar(conn: psycopg.Connection[Any], sql: str) -> Any:
    """The one value of a statement that always returns one row."""
    row = conn.execute(sql).fetchone()
    if row is None:
        raise psycopg.InterfaceError(f"no row from {sql!r}")
    return row[0]


class _PgRow:
    """A row readable by column name and by position, like sqlite3.Row."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: dict[str, int], values: Sequence[Any]) -> None:
        self._index = index
        self._values = values

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def keys(self) -> list[str]:
        return list(self._index)

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)


def _row_factory(cursor: Any) -> Any:
    index = {column.name: i for i, column in enumerate(cursor.description or ())}

    def make(values: Sequence[Any]) -> _PgRow:
        return _PgRow(index, values)

    return make


class _Connection:
    """A pooled connection inside one transaction, taking the shared SQL's ``?``."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self._conn.execute(_pg_sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> psycopg.Cursor[Any]:
        cursor = self._conn.cursor()
        rows = [tuple(r) for r in rows]
        if rows:
            cursor.executemany(_pg_sql(sql), rows)
        return cursor


class PostgresDatabase:
    """A PostgreSQL database opened through a connection pool; applies the pending schema
    migrations when opened for writes. The store and the outbound queue each open one."""

    engine = "postgresql"
    dialect = POSTGRESQL
    errors: tuple[type[BaseException], ...] = (psycopg.Error, StoreUnavailableError)

    def __init__(self, dsn: str, *, pool_size: int = 10, migrate: bool = True,
                 read_only: bool = False, name: str = "postmaster-bridge",
                 call_timeout: float = CALL_TIMEOUT) -> None:
        self._dsn = dsn
        #: What logs and errors name instead of the DSN (no password).
        self.path = redact_dsn(dsn)
        self.call_timeout = call_timeout
        self._deadlines = _Deadlines(self.path, call_timeout)
        self.read_only = read_only
        self.in_memory = False
        self._unsynced = True  # see SQLiteFile: this process may act on others' commits
        self._barrier_key = f"durable:{uuid.uuid4().hex}"
        self._lock = threading.Lock()
        options = SESSION_SETTINGS + (" -c default_transaction_read_only=on"
                                      if read_only else "")
        # pg_stat_activity shows which host and process a connection belongs to.
        application = f"{name} {socket.gethostname()}:{os.getpid()}"[:63]
        kwargs: dict[str, Any] = {"autocommit": True, "row_factory": _row_factory,
                                  "application_name": application, "options": options,
                                  **connection_settings(dsn)}
        if self._check_reachable(kwargs) == "off":
            # A role or server that commits without waiting for the flush would break the
            # rule the ledger rests on; every other level (local, remote_*) keeps it.
            log.warning("store %s: synchronous_commit is off for this role; the bridge sets "
                        "it on for its own sessions", self.path)
            kwargs["options"] += " -c synchronous_commit=on"
        self._pool = ConnectionPool(dsn, min_size=1, max_size=max(2, pool_size),
                                    kwargs=kwargs, open=False, name=name,
                                    timeout=CONNECT_TIMEOUT)
        self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        if migrate and not read_only:
            try:
                self.migrate()
            except BaseException:
                self._pool.close()
                raise

    def _check_reachable(self, kwargs: dict[str, Any]) -> str:
        """One direct connection first: the pool would only say "timed out", libpq says why
        (refused, unknown host, failed password). Returns the session's synchronous_commit."""
        try:
            conn = psycopg.connect(self._dsn, **kwargs)
            try:
                level = str(_scalar(conn, "SHOW synchronous_commit"))
            finally:
                conn.close()
        except psycopg.Error as exc:
            reason = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else
                            type(exc).__name__, self._dsn)
            raise StoreUnavailableError(
                f"the PostgreSQL store ({self.path}) cannot be reached: {reason}") from None
        return level

    def close(self) -> None:
        self._deadlines.close()
        self._pool.close()

    def _unavailable(self, exc: psycopg.OperationalError) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"the PostgreSQL store ({self.path}) failed: {scrub(str(exc).strip(), self._dsn)}")

    @contextmanager
    def _connection(self, *, bounded: bool = True) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection for one call, cut if the server has not answered within
        ``call_timeout`` (unless not ``bounded``: migrations, VACUUM)."""
        call: _Call | None = None
        try:
            with self._pool.connection() as conn, \
                    self._deadlines.guard(conn, bounded) as call:
                yield conn
        except psycopg.OperationalError as exc:
            if call is not None and call.cut:
                raise StoreUnavailableError(
                    f"the PostgreSQL store ({self.path}) did not answer within "
                    f"{self.call_timeout:.0f} s; the connection was cut") from exc
            raise self._unavailable(exc) from exc

    @contextmanager
    def _tx(self, *, durable: bool = True, bounded: bool = True) -> Iterator[_Connection]:
        """One transaction (READ COMMITTED; the shared SQL claims with upserts and row locks).
        ``durable=False``: committed without waiting for the WAL flush (see the module).
        ``bounded=False``: maintenance that may run long on a big ledger, no call deadline."""
        with self._connection(bounded=bounded) as conn, conn.transaction():
            if not durable:
                conn.execute("SET LOCAL synchronous_commit = off")
            yield _Connection(conn)
        if not durable:
            self._unsynced = True

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        with self._connection() as conn:
            return conn.execute(_pg_sql(sql), tuple(params)).fetchall()

    # -- schema migrations -----------------------------------------------------------------
    def applied_migrations(self) -> list[int]:
        if not self._query("SELECT 1 FROM information_schema.tables WHERE table_schema = "
                           "current_schema() AND table_name = 'schema_migrations'"):
            return []
        return [int(r[0]) for r in self._query("SELECT version FROM schema_migrations")]

    def pending_migrations(self) -> list[Migration]:
        return pending(self.applied_migrations())

    def migrate(self) -> list[Migration]:
        """Apply the pending migrations in one transaction under an advisory lock: instances
        starting together migrate once, the others wait and find nothing left to do."""
        applied: list[Migration] = []
        # Not bounded: it may wait for another instance's migration (the advisory lock).
        with self._connection(bounded=False) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(MIGRATIONS_TABLE)
            done = [int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations")]
            for migration in pending(done):
                apply_steps(migration, self.engine, conn)
                conn.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                             "VALUES (%s, %s, %s)", (migration.version, migration.name,
                                                     _now()))
                applied.append(migration)
        for migration in applied:
            log.info("store %s: schema migration %d (%s) applied", self.path,
                     migration.version, migration.name)
        return applied

    # -- durability ------------------------------------------------------------------------
    def make_durable(self) -> None:
        """Barrier: every commit so far (this process's unsynced ones, and others' it may act
        on) is flushed when this returns. Free when the server's WAL is flushed up to where
        it is written; otherwise one synchronous commit, which flushes everything before it."""
        if self.read_only:
            return
        with self._lock:
            if not self._unsynced:
                with self._connection() as conn:
                    flushed = _scalar(
                        conn, "SELECT pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn() "
                        "AND current_setting('synchronous_standby_names') = ''")
                if flushed:
                    return
            with self._tx() as db:
                db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) "
                           "DO UPDATE SET value = excluded.value",
                           (self._barrier_key, str(time.time_ns())))
            self._unsynced = False

    def quick_check(self) -> list[str]:
        """PostgreSQL guards its own pages (checksums, WAL): nothing for the bridge to scan."""
        return []

    def database_size(self) -> int:
        with self._connection() as conn:
            return int(_scalar(conn, "SELECT pg_database_size(current_database())"))


class PostgresStore(PostgresDatabase, Ledger, LeaseTables):
    """The ledger on PostgreSQL."""

    def _write_unsynced(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._tx(durable=False) as db:
            db.executemany(sql, rows)

    def vacuum(self) -> tuple[int, int]:
        """``VACUUM (ANALYZE)`` of the ledger's tables: the space retention freed is reused
        by new rows (PostgreSQL gives it back to the file system only with ``VACUUM FULL``,
        which locks the tables; autovacuum does the plain one anyway). Returns the
        database's size before and after."""
        before = self.database_size()
        with self._connection(bounded=False) as conn:
            conn.execute("VACUUM (ANALYZE) messages, comm_log")
        return before, self.database_size()
