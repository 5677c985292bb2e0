"""What the SQL shared by both engines needs of an engine (connector/store/ledger.py and the
outbound queue): a connection-like object inside a transaction, rows readable by column name
and position, and the few spots where SQLite and PostgreSQL differ (:class:`Dialect`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol


class Row(Protocol):
    """A result row: ``row["column"]`` and ``row[0]`` (sqlite3.Row and the PostgreSQL row)."""

    def __getitem__(self, key: str | int) -> Any: ...

    def keys(self) -> list[str]: ...


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """The connection a transaction hands out (``?`` placeholders on both engines)."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Cursor: ...


class Database(Protocol):
    """An open store database: what the outbound queue and the ledger run their SQL on."""

    engine: str
    dialect: Dialect
    errors: tuple[type[BaseException], ...]

    def _tx(self, *, durable: bool = True,
            bounded: bool = True) -> AbstractContextManager[Any]: ...

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[Any]: ...

    def close(self) -> None: ...


def _same(value: Any) -> Any:
    return value


def _text_or_none(value: Any) -> Any:
    return None if value is None else str(value)


@dataclass(frozen=True)
class Dialect:
    name: str
    #: Orders rows inserted in one statement as they were given (SQLite: rowid).
    insertion_order: str
    #: Appended to a SELECT whose rows the transaction is about to claim.
    skip_locked: str
    #: Appended to a SELECT whose row the transaction is about to change.
    for_update: str
    #: SQL for the seconds between two ISO-8601 text columns.
    seconds_between: Callable[[str, str], str]
    #: A ticket id as the column takes it (PostgreSQL keeps ticket ids as TEXT).
    ticket_param: Callable[[Any], Any]
    #: The database's clock in Unix seconds: leases are judged by it, never by an instance's.
    #: SQLite's is the machine's, which every process sharing the file reads.
    epoch_now: str = "((julianday('now') - 2440587.5) * 86400.0)"
    #: Appended to the fence's read of a lease row in the transaction that records an
    #: effect: a takeover waits for that transaction (SQLite's IMMEDIATE one excludes every
    #: other writer already).
    share_lock: str = ""
    #: Run first in every transaction that reads or writes a lease row: on PostgreSQL a
    #: lease statement waits at most a moment for a row lock (a tick never hangs on it), and
    #: a process frozen inside such a transaction (SIGSTOP, a paused VM) loses its session
    #: soon, and with it the lock that would keep the others from taking its leases.
    lease_tx_setup: tuple[str, ...] = ()


SQLITE = Dialect(
    name="sqlite", insertion_order="rowid", skip_locked="", for_update="",
    seconds_between=lambda a, b: f"(julianday({b}) - julianday({a})) * 86400.0",
    ticket_param=_same)

POSTGRESQL = Dialect(
    name="postgresql", insertion_order="seq", skip_locked=" FOR UPDATE SKIP LOCKED",
    for_update=" FOR UPDATE",
    seconds_between=lambda a, b: (f"EXTRACT(EPOCH FROM ({b}::timestamptz - "
                                  f"{a}::timestamptz))::float8"),
    ticket_param=_text_or_none,
    epoch_now="EXTRACT(EPOCH FROM statement_timestamp())::float8", share_lock=" FOR SHARE",
    lease_tx_setup=("SET LOCAL lock_timeout = '2s'",
                    "SET LOCAL idle_in_transaction_session_timeout = '5s'"))


def ticket_in(value: Any) -> str | None:
    """A ticket id as read from either engine: the opaque text the bridge uses
    (connector.hosts.base.TicketId). SQLite ledgers keep the INTEGER affinity of the
    ``ticket_id`` columns written when ids were integers: an id of plain digits (every
    Zendesk id and OTOBO TicketNumber) is stored as a number there and read back as the same
    text; PostgreSQL keeps TEXT. No migration needed."""
    return None if value is None else str(value)
