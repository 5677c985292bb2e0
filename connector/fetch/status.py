"""What each account's mailbox connection is doing now, for ``accounts`` and ``/metrics``.

Every transport reports through one ``StatusBoard`` (the service owns it): the state it is
in (``ConnectionState``), the last thing the server said or did (``server_event``: new mail
announced, ``BYE``, the connection closed, an IDLE renewal answered) and each reconnection
after a lost connection (``reconnected``). ``listener`` receives every change; the service
passes the store's ``save_connection_status`` so that ``postmaster-bridge accounts``, another
process, shows it. Counting reconnections of the last hour is the listener's side too: the
store counts the ``reconnected`` entries of the communication log.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum


class ConnectionState(StrEnum):
    """One account's connection, as the admin reads it."""

    STARTING = "starting"
    WAITING_FOR_LOGIN = "waiting for a login slot"
    CONNECTING = "connecting"
    CONNECTED = "connected"  # logged in, working through a pass
    IDLING = "idling"  # IMAP IDLE: the server pushes new mail
    WAITING = "waiting to poll"  # no IDLE (off, not offered, POP3): until the next poll
    BACKING_OFF = "backing off"  # after a failure, until the next attempt
    DISABLED = "disabled"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ConnectionStatus:
    account: str
    state: ConnectionState
    since: datetime
    detail: str | None = None
    server_event: str | None = None
    server_event_at: datetime | None = None
    reconnects_last_hour: int = 0


StatusListener = Callable[[ConnectionStatus], None]

HOUR = 3600.0


class StatusBoard:
    """Thread-safe table of ``ConnectionStatus`` by account. ``listener`` is called (outside
    the board's lock, in the reporting thread) with every new status; its errors are the
    caller's to survive, so the board swallows none: the service passes a listener that does
    not raise."""

    def __init__(self, listener: StatusListener | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._listener = listener
        self._clock = clock
        self._lock = threading.Lock()
        self._status: dict[str, ConnectionStatus] = {}
        self._reconnects: dict[str, deque[float]] = {}
        #: Every transition, for tests and the bench: (account, state).
        self.transitions: deque[tuple[str, ConnectionState]] = deque(maxlen=100_000)

    def _update(self, account: str, **changes: object) -> ConnectionStatus:
        with self._lock:
            current = self._status.get(account) or ConnectionStatus(
                account, ConnectionState.STARTING, datetime.now(UTC))
            status = replace(current, reconnects_last_hour=self._recent(account),
                             **changes)  # type: ignore[arg-type]
            self._status[account] = status
        if self._listener is not None:
            self._listener(status)
        return status

    def set_state(self, account: str, state: ConnectionState, detail: str | None = None) -> None:
        current = self._status.get(account)
        if current is not None and current.state == state and current.detail == detail:
            return
        with self._lock:
            self.transitions.append((account, state))
        self._update(account, state=state, since=datetime.now(UTC), detail=detail)

    def server_event(self, account: str, event: str) -> None:
        self._update(account, server_event=event, server_event_at=datetime.now(UTC))

    def reconnected(self, account: str) -> None:
        with self._lock:
            self._reconnects.setdefault(account, deque()).append(self._clock())
        self._update(account)

    def _recent(self, account: str) -> int:
        times = self._reconnects.get(account)
        if not times:
            return 0
        cutoff = self._clock() - HOUR
        while times and times[0] < cutoff:
            times.popleft()
        return len(times)

    def status(self, account: str) -> ConnectionStatus | None:
        with self._lock:
            status = self._status.get(account)
            if status is None:
                return None
            return replace(status, reconnects_last_hour=self._recent(account))

    def all(self) -> list[ConnectionStatus]:
        with self._lock:
            names = list(self._status)
        return [s for s in (self.status(n) for n in names) if s is not None]

    def count(self, state: ConnectionState) -> int:
        with self._lock:
            return sum(s.state == state for s in self._status.values())


__all__ = ["ConnectionState", "ConnectionStatus", "StatusBoard", "StatusListener"]
