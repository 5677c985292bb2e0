"""The instances and leases tables (migration 3), in SQL both engines run.

A mixin for a store that supplies ``_tx`` (a write transaction whose connection takes ``?``
placeholders), ``_query`` and its ``dialect`` (connector/store/sql.py), whose ``epoch_now`` is
the database's clock in Unix seconds (SQLite: the machine's clock every process sharing the
file reads; PostgreSQL: the server's ``statement_timestamp()``) and whose ``share_lock`` is
appended to the fence's read of the lease row (PostgreSQL ``FOR SHARE``: a takeover's UPDATE
waits for the transaction that records an effect; SQLite's IMMEDIATE transaction already
excludes every other writer).

The decisions (who may take a lease, what a fence allows) live here once; the policy that
uses them is connector/service/leases.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from connector.errors import LeaseLostError
from connector.store.base import Fence, InstanceRecord, Lease
from connector.store.sql import Dialect

#: How long an instance that stopped heartbeating stays listed (`accounts`: "gone").
GONE_INSTANCES_KEPT_SECONDS = 3600.0


def _unix(value: float) -> datetime:
    return datetime.fromtimestamp(float(value), UTC)


def lease_tx(db: Any, dialect: Dialect) -> None:
    """What a transaction touching a lease row runs first (``Dialect.lease_tx_setup``)."""
    for statement in dialect.lease_tx_setup:
        db.execute(statement)


def check_fence(db: Any, fence: Fence | None, dialect: Dialect, *,
                margin: float | None = None) -> None:
    """Inside the transaction that commits an effect: refuse it (LeaseLostError, the caller's
    transaction rolls back) unless ``fence`` still holds with more than its margin (or
    ``margin``) left by the database's clock."""
    if fence is None:
        return
    left = fence.margin if margin is None else margin
    lease_tx(db, dialect)
    row = db.execute(f"SELECT expires_at - {dialect.epoch_now} AS remaining FROM leases "
                     f"WHERE resource = ? AND holder = ? AND epoch = ?{dialect.share_lock}",
                     (fence.resource, fence.holder, fence.epoch)).fetchone()
    if row is None:
        raise LeaseLostError(f"{fence.resource}: lease epoch {fence.epoch} is no longer held "
                             f"by {fence.holder}")
    if float(row["remaining"]) <= left:
        raise LeaseLostError(f"{fence.resource}: lease epoch {fence.epoch} has "
                             f"{max(0.0, float(row['remaining'])):.1f} s left (needs more "
                             f"than {left:.1f} s)")


class LeaseTables:
    """``heartbeat_instance`` ... ``leases`` of the Store protocol."""

    dialect: Dialect

    def _tx(self, *, durable: bool = True,
            bounded: bool = True) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        raise NotImplementedError

    @property
    def db_now_sql(self) -> str:
        return self.dialect.epoch_now

    def heartbeat_instance(self, instance: str, *, ttl: float, host: str, pid: int,
                           url: str | None = None) -> None:
        now = self.db_now_sql
        with self._tx(durable=False) as db:
            db.execute(
                f"INSERT INTO instances (instance, host, pid, url, started_at, heartbeat_at, "
                f"expires_at) VALUES (?, ?, ?, ?, {now}, {now}, {now} + ?) "
                f"ON CONFLICT (instance) DO UPDATE SET heartbeat_at = {now}, "
                f"expires_at = {now} + ?, url = excluded.url",
                (instance, host, pid, url, ttl, ttl))
            # Instances killed long ago: `accounts` shows the gone ones for an hour.
            db.execute(f"DELETE FROM instances WHERE expires_at < {now} - ?",
                       (GONE_INSTANCES_KEPT_SECONDS,))

    def forget_instance(self, instance: str) -> None:
        with self._tx(durable=False) as db:
            db.execute("DELETE FROM instances WHERE instance = ?", (instance,))

    def instances(self) -> list[InstanceRecord]:
        rows = self._query(f"SELECT instance, host, pid, url, started_at, heartbeat_at, "
                           f"expires_at - {self.db_now_sql} AS remaining FROM instances "
                           "ORDER BY started_at, instance")
        return [InstanceRecord(instance=r["instance"], host=r["host"], pid=int(r["pid"]),
                               url=r["url"], started_at=_unix(r["started_at"]),
                               heartbeat_at=_unix(r["heartbeat_at"]),
                               expires_in=float(r["remaining"])) for r in rows]

    @staticmethod
    def _lease(row: Any) -> Lease:
        return Lease(resource=row["resource"], holder=row["holder"], epoch=int(row["epoch"]),
                     acquired_at=_unix(row["acquired_at"]), renewed_at=_unix(row["renewed_at"]),
                     expires_in=float(row["remaining"]))

    def _lease_row(self, db: Any, resource: str) -> Any:
        return db.execute(f"SELECT resource, holder, epoch, acquired_at, renewed_at, "
                          f"expires_at - {self.db_now_sql} AS remaining FROM leases "
                          "WHERE resource = ?", (resource,)).fetchone()

    def acquire_lease(self, resource: str, holder: str, ttl: float, *,
                      dead: Iterable[str] = ()) -> Lease | None:
        """Each step is one statement whose WHERE decides, so that on PostgreSQL two
        instances reaching for one lease at once serialize on its row: the second sees the
        first's expiry and takes nothing. Durable: the new holder's effects rest on it."""
        now = self.db_now_sql
        gone = sorted(set(dead))
        with self._tx() as db:
            lease_tx(db, self.dialect)
            taken = db.execute(
                f"INSERT INTO leases (resource, holder, epoch, acquired_at, renewed_at, "
                f"expires_at) VALUES (?, ?, 1, {now}, {now}, {now} + ?) "
                "ON CONFLICT (resource) DO NOTHING", (resource, holder, ttl)).rowcount == 1
            if not taken:  # ours still: renewed, the same epoch
                taken = db.execute(
                    f"UPDATE leases SET renewed_at = {now}, expires_at = {now} + ? "
                    f"WHERE resource = ? AND holder = ? AND expires_at > {now}",
                    (ttl, resource, holder)).rowcount == 1
            if not taken:  # expired, handed back, or its holder is gone: the next epoch
                marks = ", ".join("?" * len(gone))
                dead_holder = f" OR holder IN ({marks})" if gone else ""
                taken = db.execute(
                    f"UPDATE leases SET holder = ?, epoch = epoch + 1, acquired_at = {now}, "
                    f"renewed_at = {now}, expires_at = {now} + ? WHERE resource = ? AND "
                    f"(expires_at <= {now}{dead_holder})",
                    (holder, ttl, resource, *gone)).rowcount == 1
            row = self._lease_row(db, resource) if taken else None
        return self._lease(row) if row is not None else None

    def renew_leases(self, holder: str, epochs: Mapping[str, int],
                     ttl: float) -> dict[str, Lease]:
        now = self.db_now_sql
        renewed: dict[str, Lease] = {}
        with self._tx(durable=False) as db:
            lease_tx(db, self.dialect)
            for resource, epoch in epochs.items():
                changed = db.execute(
                    f"UPDATE leases SET renewed_at = {now}, expires_at = {now} + ? "
                    "WHERE resource = ? AND holder = ? AND epoch = ?",
                    (ttl, resource, holder, epoch)).rowcount
                row = self._lease_row(db, resource) if changed else None
                if row is not None:
                    renewed[resource] = self._lease(row)
        return renewed

    def release_lease(self, resource: str, holder: str, epoch: int) -> None:
        with self._tx() as db:
            lease_tx(db, self.dialect)
            # No holder: free, and whoever takes it next was not handed it by a takeover.
            db.execute(f"UPDATE leases SET holder = '', expires_at = {self.db_now_sql} "
                       "WHERE resource = ? AND holder = ? AND epoch = ?",
                       (resource, holder, epoch))

    def leases(self) -> list[Lease]:
        rows = self._query(f"SELECT resource, holder, epoch, acquired_at, renewed_at, "
                           f"expires_at - {self.db_now_sql} AS remaining FROM leases "
                           "ORDER BY resource")
        return [self._lease(r) for r in rows]
