"""Opening the configured store: the one place that knows which engine serves it.

``store: {type: sqlite, path: ...}`` (the default) is one file on this machine;
``store: {type: postgresql, dsn: ${PMB_DSN}}`` is a PostgreSQL database several bridge
instances can share. Everything else asks for a :class:`~connector.store.base.Store` (and an
:class:`~connector.outbound.queue.OutboundQueue`) through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from connector.errors import ConfigError

if TYPE_CHECKING:
    from connector.config import StoreConfig
    from connector.outbound.queue import OutboundQueue
    from connector.store.base import Store
    from connector.store.migrations import Migration
    from connector.store.sql import Database

#: Connections of the outbound queue's own pool (webhook, worker, sweep).
QUEUE_POOL_SIZE = 4


def _dsn(config: StoreConfig) -> str:
    if not config.dsn:
        raise ConfigError("the PostgreSQL store needs its DSN (store.dsn: ${ENV_NAME} or "
                          "store.dsn_file: PATH), and none is available", key="store.dsn")
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise ConfigError("store.type postgresql needs psycopg 3 and psycopg-pool: "
                          "pip install 'postmaster-bridge[postgresql]'",
                          key="store.type") from None
    return config.dsn


def open_store(config: StoreConfig, *, dry_run: bool = False, read_only: bool = False,
               checked_within: float = 0.0, migrate: bool = True) -> Store:
    """The configured store, its pending migrations applied (unless ``read_only`` or
    ``migrate=False``). ``dry_run``: an empty in-memory SQLite ledger, whatever the engine,
    so a dry run never writes the real one. ``read_only``: for commands that only look (a
    SQLite ledger that does not exist yet raises FileNotFoundError's sqlite3 equivalent)."""
    if dry_run:
        from connector.store.sqlite import SQLiteStore

        return SQLiteStore(":memory:")
    if config.type == "postgresql":
        from connector.store.postgres import PostgresStore

        return PostgresStore(_dsn(config), pool_size=config.pool_size, read_only=read_only,
                             migrate=migrate)
    from connector.store.sqlite import SQLiteStore

    if read_only:
        return SQLiteStore(f"file:{config.path}?mode=ro", uri=True)
    return SQLiteStore(config.path, checked_within=checked_within, migrate=migrate)


def open_database(config: StoreConfig, *, migrate: bool = True) -> Database:
    """The store's database for the outbound queue (its own connection or pool)."""
    if config.type == "postgresql":
        from connector.store.postgres import PostgresDatabase

        return PostgresDatabase(_dsn(config), pool_size=QUEUE_POOL_SIZE, migrate=migrate,
                                name="postmaster-bridge-outbound")
    from connector.store.sqlite import SQLiteFile

    return SQLiteFile(config.path, migrate=migrate)


def open_queue(config: StoreConfig) -> OutboundQueue:
    from connector.outbound.queue import OutboundQueue

    return OutboundQueue(open_database(config))


def store_exists(config: StoreConfig) -> bool:
    """False only for a SQLite ledger not made yet (PostgreSQL: the database is the DBA's)."""
    return config.type == "postgresql" or Path(config.path).is_file()


def describe(config: StoreConfig) -> str:
    """What messages call the store: the SQLite file, or the DSN without its password."""
    if config.type == "postgresql":
        from connector.store.postgres import redact_dsn

        return f"PostgreSQL store {redact_dsn(config.dsn)}"
    return f"ledger {config.path}"


def pending_migrations(config: StoreConfig) -> list[Migration]:
    """What ``store migrate`` would apply, without changing anything."""
    from connector.store.migrations import pending

    if not store_exists(config):
        return pending(())
    store = open_store(config, read_only=True)
    try:
        return store.pending_migrations()
    finally:
        store.close()


def apply_migrations(config: StoreConfig) -> list[Migration]:
    store = open_store(config, migrate=False)
    try:
        return store.migrate()
    finally:
        store.close()
