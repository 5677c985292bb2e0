"""Paced logins: a per-server limiter every mailbox transport (IMAP, POP3, Graph) goes through.

Mail servers restart, load balancers drop connections, a bridge starts with hundreds of
accounts: each time, every account wants to log in at the same moment. Providers count
connections and logins (Gmail answers "Too many simultaneous connections"; Dovecot's stock
login-process limit times out the excess of a burst), so the bridge spreads them out itself:

- ``login_rate`` new logins per second per server (a token bucket with ``login_burst``
  tokens, so a handful of accounts still start at once), and
- ``max_connections`` connections open at the same time per server (0: no cap).

A server is ``host:port`` as the account names it. Limits come from the ``connections:``
section of the config, per server, over presets for providers whose limits are known
(``KNOWN_SERVERS``), over the defaults.

A transport that is a ``Mailbox`` (``connector.fetch.open_mailbox`` returns it) gets all of
this from the runner, which paces ``Mailbox.connect`` by the account's ``host``/``port`` and
reports the states; a Microsoft Graph mailbox keyed on ``graph.microsoft.com:443`` shares one
pacer across its accounts that way. A transport with a loop of its own does what the runner
does, around its token/session setup::

    pacer = pacing.for_server(host, port)
    board.set_state(account, ConnectionState.WAITING_FOR_LOGIN)   # shown by `accounts`
    slot = pacer.acquire(stop)          # blocks (no polling) until allowed; None on stop
    if slot is None:
        return                          # shutting down
    try:
        connect_and_log_in()
    except BaseException:
        slot.release()
        raise
    ...                                 # the connection counts against max_connections
    slot.release()                      # when the connection is closed, exactly once

``pacer.crowded()`` tells a holder that others wait for a connection slot: a holder that would
only sit in IDLE should close and poll instead, so the cap rotates between accounts instead of
starving some of them. The account's state (``connector.fetch.status``) is reported by the
caller, not by the pacer: the pacer knows servers, not accounts.

Waiting never polls: the connection cap waits on a condition that ``release`` and
``interrupt`` (called on shutdown) notify, the rate waits on the stop event with a timeout
equal to the time of the reserved login.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

#: Defaults for a server nobody configured: 10 new logins per second and at most 1,000
#: connections at once (one per account: IDLE keeps each account's connection open).
DEFAULT_LOGIN_RATE = 10.0
DEFAULT_LOGIN_BURST = 10
DEFAULT_MAX_CONNECTIONS = 1000


@dataclass(frozen=True)
class ServerLimits:
    """What one mail server accepts from this bridge. ``max_connections`` 0 means no cap."""

    login_rate: float = DEFAULT_LOGIN_RATE
    login_burst: int = DEFAULT_LOGIN_BURST
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    source: str = "default"

    def describe(self) -> str:
        cap = self.max_connections or "no cap"
        return (f"{self.login_rate:g} logins/s (burst {self.login_burst}), "
                f"connections: {cap} ({self.source})")


#: Large providers. What they publish is per mailbox: Gmail allows 15 simultaneous IMAP
#: connections per account ("Too many simultaneous connections"), Exchange Online 20
#: concurrent IMAP and 20 POP connections per mailbox. The bridge holds one connection per
#: account, so those matter only when several accounts log in as the same user (one account
#: per folder). Neither publishes a per-address login rate, so the presets log in more slowly
#: than the default, to be safe.
#: Override any of it in ``connections.servers``.
KNOWN_SERVERS: Mapping[str, ServerLimits] = {
    "imap.gmail.com": ServerLimits(login_rate=2.0, login_burst=5, max_connections=1000,
                                   source="preset imap.gmail.com"),
    "pop.gmail.com": ServerLimits(login_rate=2.0, login_burst=5, max_connections=1000,
                                  source="preset pop.gmail.com"),
    "outlook.office365.com": ServerLimits(login_rate=3.0, login_burst=5, max_connections=1000,
                                          source="preset outlook.office365.com"),
}


class ConnectionSlot:
    """One connection counted against a server's ``max_connections``; ``release`` once."""

    def __init__(self, pacer: ServerPacer) -> None:
        self._pacer: ServerPacer | None = pacer

    def release(self) -> None:
        pacer, self._pacer = self._pacer, None
        if pacer is not None:
            pacer._release()

    @property
    def held(self) -> bool:
        return self._pacer is not None


class ServerPacer:
    """The limiter of one server. Thread-safe; shared by every account on that server.

    ``clock`` and ``wait`` exist for tests: ``wait(stop, seconds)`` returns True when the
    stop event was set (default: ``stop.wait(seconds)``).
    """

    def __init__(self, server: str, limits: ServerLimits, *,
                 clock: Callable[[], float] = time.monotonic,
                 wait: Callable[[threading.Event, float], bool] | None = None) -> None:
        self.server = server
        self.limits = limits
        self._clock = clock
        self._wait = wait or (lambda stop, seconds: stop.wait(seconds))
        self._cond = threading.Condition()
        self._open = 0
        self._waiting = 0
        self._interrupted = False
        # GCRA: the theoretical time of the next login if logins came exactly at the rate.
        self._tat = 0.0
        #: Figures for tests, metrics and the bench.
        self.granted = 0
        self.delayed = 0
        self.grant_times: deque[float] = deque(maxlen=10_000)

    @property
    def open_connections(self) -> int:
        return self._open

    def crowded(self) -> bool:
        """True when an account waits for a connection slot of this server."""
        return self._waiting > 0

    def would_wait(self) -> bool:
        """True when a login asked for now would have to wait (for the cap or the rate)."""
        with self._cond:
            cap = self.limits.max_connections
            if cap and self._open >= cap:
                return True
            return self._allowed_at(self._clock()) > self._clock()

    def acquire(self, stop: threading.Event) -> ConnectionSlot | None:
        """Block until a connection may be opened and a login made; None when ``stop`` is
        set (or ``interrupt`` was called) first."""
        cap = self.limits.max_connections
        with self._cond:
            if cap:
                self._waiting += 1
                try:
                    while self._open >= cap:
                        if stop.is_set() or self._interrupted:
                            return None
                        self._cond.wait()  # notified by _release and interrupt
                finally:
                    self._waiting -= 1
            if stop.is_set() or self._interrupted:
                return None
            self._open += 1
            now = self._clock()
            at = self._allowed_at(now)
            interval = 1.0 / self.limits.login_rate if self.limits.login_rate > 0 else 0.0
            self._tat = max(self._tat, now) + interval  # reserved: the next caller queues behind
        if at > now:
            self.delayed += 1
            if self._wait(stop, at - now):
                self._release()
                return None
        with self._cond:
            self.granted += 1
            self.grant_times.append(max(at, now))
        return ConnectionSlot(self)

    def _allowed_at(self, now: float) -> float:
        if self.limits.login_rate <= 0:
            return now
        # GCRA: a login conforms once ``now >= tat - (burst - 1) * interval``.
        interval = 1.0 / self.limits.login_rate
        return max(now, self._tat - (max(1, self.limits.login_burst) - 1) * interval)

    def _release(self) -> None:
        with self._cond:
            self._open = max(0, self._open - 1)
            self._cond.notify()

    def interrupt(self) -> None:
        """Wake every waiter (shutdown): they return None."""
        with self._cond:
            self._interrupted = True
            self._cond.notify_all()


def server_key(host: str, port: int) -> str:
    return f"{host.lower()}:{port}"


class LoginPacing:
    """The pacers of one running service, one per server, created on first use.

    ``servers`` maps ``host`` or ``host:port`` to its limits (the config's
    ``connections.servers``); ``default`` applies to every other server, after the presets in
    ``KNOWN_SERVERS``.
    """

    def __init__(self, default: ServerLimits | None = None,
                 servers: Mapping[str, ServerLimits] | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.default = default or ServerLimits()
        self.servers = {key.lower(): value for key, value in (servers or {}).items()}
        self._clock = clock
        self._pacers: dict[str, ServerPacer] = {}
        self._lock = threading.Lock()

    def limits_for(self, host: str, port: int) -> ServerLimits:
        key = server_key(host, port)
        for name in (key, host.lower()):
            if name in self.servers:
                return self.servers[name]
        return KNOWN_SERVERS.get(host.lower(), self.default)

    def for_server(self, host: str, port: int) -> ServerPacer:
        key = server_key(host, port)
        with self._lock:
            pacer = self._pacers.get(key)
            if pacer is None:
                pacer = self._pacers[key] = ServerPacer(key, self.limits_for(host, port),
                                                        clock=self._clock)
            return pacer

    def pacers(self) -> list[ServerPacer]:
        with self._lock:
            return list(self._pacers.values())

    def interrupt(self) -> None:
        for pacer in self.pacers():
            pacer.interrupt()


__all__ = [
    "DEFAULT_LOGIN_BURST",
    "DEFAULT_LOGIN_RATE",
    "DEFAULT_MAX_CONNECTIONS",
    "KNOWN_SERVERS",
    "ConnectionSlot",
    "LoginPacing",
    "ServerLimits",
    "ServerPacer",
    "server_key",
]
