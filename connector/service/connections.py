"""The service's connection bookkeeping: login pacing from the config, and account states
saved where ``postmaster-bridge accounts`` (another process) reads them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from connector.config import Config
from connector.fetch.pacing import LoginPacing
from connector.fetch.status import ConnectionStatus, StatusBoard
from connector.store.base import Store

log = logging.getLogger("connector.connections")

#: The communication log event a reconnection writes (counted for "reconnects in the last
#: hour").
RECONNECTED = "reconnected"


def pacing_from_config(config: Config) -> LoginPacing:
    return LoginPacing(config.connections.default, config.connections.servers)


def persisting_board(store: Store | None) -> StatusBoard:
    """A status board whose changes are saved in the store (None: kept in memory only, as
    for a dry run). A failing store never stops an account: the change is logged and lost."""
    if store is None:
        return StatusBoard()
    pid = os.getpid()

    def save(status: ConnectionStatus) -> None:
        try:
            store.save_connection_status(
                status.account, state=status.state.value, detail=status.detail,
                since=status.since, server_event=status.server_event,
                server_event_at=status.server_event_at, pid=pid)
        except store.errors as exc:
            log.warning("account=%s: connection state not saved: %s", status.account, exc)

    return StatusBoard(save)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def connection_report(store: Store, accounts: list[str]) -> dict[str, dict[str, Any]]:
    """Per account: ``connection`` (state, or "not running" when the process that saved it is
    gone), ``connection_since``, ``connection_detail``, ``last_server_event`` (text and time)
    and ``reconnects_last_hour``."""
    saved = store.connection_statuses()
    reconnects = store.count_events_since(RECONNECTED, datetime.now(UTC) - timedelta(hours=1))
    report: dict[str, dict[str, Any]] = {}
    for name in accounts:
        row = saved.get(name)
        entry: dict[str, Any] = {"connection": "not running", "connection_since": None,
                                 "connection_detail": None, "last_server_event": None,
                                 "last_server_event_at": None,
                                 "reconnects_last_hour": reconnects.get(name, 0)}
        if row is not None:
            alive = False
            with contextlib.suppress(OSError):
                alive = _running(int(row["pid"]))
            entry.update({
                "connection": row["state"] if alive else "not running",
                "connection_since": row["since"].isoformat() if alive else None,
                "connection_detail": row["detail"] if alive else None,
                "last_server_event": row["server_event"],
                "last_server_event_at": row["server_event_at"].isoformat()
                if row["server_event_at"] else None})
        report[name] = entry
    return report


__all__ = ["RECONNECTED", "connection_report", "pacing_from_config", "persisting_board"]
