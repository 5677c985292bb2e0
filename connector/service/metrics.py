"""Prometheus metrics and the health verdict, served at /metrics and /healthz.

One registry per process (not prometheus-client's global one), so tests and several services
in one interpreter do not mix their figures.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from connector.fetch.status import ConnectionState, StatusBoard
from connector.store.base import Store

if TYPE_CHECKING:
    from connector.service.leases import LeaseKeeper


def event_kind(event: str | None) -> str:
    """A server event in one of a few words, for a metric label (the text is in
    ``accounts``)."""
    text = (event or "").lower()
    for needle, kind in (("new mail", "new_mail"), ("idle renewed", "idle_renewed"),
                         ("bye", "bye"), ("connection lost", "connection_lost"),
                         ("logged in", "logged_in")):
        if needle in text:
            return kind
    return "other" if text else "none"


class _ConnectionCollector:
    """Each account's connection, read from the service's status board at scrape time."""

    def __init__(self, board: StatusBoard) -> None:
        self.board = board

    def collect(self) -> Iterable[GaugeMetricFamily]:
        state = GaugeMetricFamily(
            "pmb_account_connection_state",
            "1 for the state each account's connection is in now (starting, waiting for a "
            "login slot, connecting, connected, idling, waiting to poll, backing off, "
            "disabled, stopped)", labels=["account", "state"])
        reconnects = GaugeMetricFamily("pmb_account_reconnects_last_hour",
                                       "Reconnections after a lost connection, last hour",
                                       labels=["account"])
        last_event = GaugeMetricFamily(
            "pmb_account_last_server_event_timestamp_seconds",
            "Unix time of the last thing the account's server said or did, by kind",
            labels=["account", "event"])
        by_state = GaugeMetricFamily("pmb_accounts_by_connection_state",
                                     "Accounts in each connection state", labels=["state"])
        counts = dict.fromkeys((s.value for s in ConnectionState), 0)
        for status in self.board.all():
            state.add_metric([status.account, status.state.value], 1.0)
            counts[status.state.value] += 1
            reconnects.add_metric([status.account], float(status.reconnects_last_hour))
            if status.server_event_at is not None:
                last_event.add_metric([status.account, event_kind(status.server_event)],
                                      status.server_event_at.timestamp())
        for name, count in counts.items():
            by_state.add_metric([name], float(count))
        yield state
        yield by_state
        yield reconnects
        yield last_event


class _StateCollector:
    """Gauges read from the store at scrape time: account state and queue depths."""

    def __init__(self, store: Store, accounts: Iterable[str],
                 queue_depth: Callable[[], dict[str, int]] | None) -> None:
        self.store = store
        self.accounts = list(accounts)
        self.queue_depth = queue_depth

    def collect(self) -> Iterable[GaugeMetricFamily]:
        enabled = GaugeMetricFamily("pmb_account_enabled",
                                    "1 when the account is enabled, 0 when disabled",
                                    labels=["account"])
        failures = GaugeMetricFamily("pmb_account_consecutive_failures",
                                     "Connection failures in a row", labels=["account"])
        last_ok = GaugeMetricFamily("pmb_account_last_success_timestamp_seconds",
                                    "Unix time of the last successful fetch",
                                    labels=["account"])
        held = GaugeMetricFamily("pmb_messages_held",
                                 "Mail held over the per-sender cap, waiting for `held release`",
                                 labels=["account"])
        figures = self.store.account_figures()
        for name in self.accounts:
            held.add_metric([name], float(figures.get(name, {}).get("held", 0)))
            health = self.store.get_health(name)
            enabled.add_metric([name], 1.0 if health.enabled else 0.0)
            failures.add_metric([name], float(health.consecutive_failures))
            if health.last_success_at is not None:
                last_ok.add_metric([name], health.last_success_at.timestamp())
        yield enabled
        yield failures
        yield last_ok
        yield held
        if self.queue_depth is not None:
            depth = GaugeMetricFamily("pmb_outbound_queue_depth",
                                      "Outbound jobs by state", labels=["state"])
            for state, count in self.queue_depth().items():
                depth.add_metric([state], float(count))
            yield depth


class _LeaseCollector:
    """This instance's leases (several instances on one ledger), read at scrape time."""

    def __init__(self, keeper: LeaseKeeper) -> None:
        self.keeper = keeper

    def collect(self) -> Iterable[GaugeMetricFamily]:
        from prometheus_client.core import CounterMetricFamily

        status = self.keeper.status()
        stats = self.keeper.stats
        held = GaugeMetricFamily("pmb_lease_held", "1 for each lease this instance holds "
                                 "(resource account:<name> or sweep)", labels=["resource"])
        valid = GaugeMetricFamily("pmb_lease_valid_seconds",
                                  "Seconds this instance is sure to hold each lease without "
                                  "another renewal", labels=["resource"])
        epoch = GaugeMetricFamily("pmb_lease_epoch", "Each held lease's fencing epoch",
                                  labels=["resource"])
        since = GaugeMetricFamily("pmb_lease_held_since_timestamp_seconds",
                                  "Unix time this instance took each lease it holds (its age)",
                                  labels=["resource"])
        for resource, lease in status["leases"].items():
            held.add_metric([resource], 1.0)
            valid.add_metric([resource], float(lease["valid_for"]))
            epoch.add_metric([resource], float(lease["epoch"]))
            since.add_metric([resource],
                             datetime.fromisoformat(lease["held_since"]).timestamp())
        yield held
        yield valid
        yield epoch
        yield since
        yield GaugeMetricFamily("pmb_lease_accounts_held", "Accounts this instance works",
                                value=float(len(self.keeper.held_accounts())))
        yield GaugeMetricFamily("pmb_lease_fair_share",
                                "The most accounts this instance keeps now",
                                value=float(stats.share))
        yield GaugeMetricFamily("pmb_instances_live", "Live instances sharing the ledger",
                                value=float(stats.live_instances))
        ago = status["last_renewed_seconds_ago"]
        yield GaugeMetricFamily("pmb_lease_last_renewal_age_seconds",
                                "Seconds since the leases were last renewed",
                                value=float(ago) if ago is not None else float("nan"))
        yield CounterMetricFamily("pmb_lease_renew_failures",
                                  "Lease renewals that failed (the database did not answer)",
                                  value=float(stats.renew_failures))
        yield CounterMetricFamily("pmb_lease_takeovers",
                                  "Leases taken over from another instance",
                                  value=float(stats.takeovers))
        yield CounterMetricFamily("pmb_lease_lost", "Leases lost (expired without a renewal, "
                                  "or taken by another instance)", value=float(stats.lost))
        yield CounterMetricFamily("pmb_lease_handed_back",
                                  "Accounts handed back to even out the share",
                                  value=float(stats.handed_back))


@dataclass
class Metrics:
    """The bridge's metrics. ``observe_*`` methods are called by the service."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.messages = Counter("pmb_messages", "Messages processed, by account and outcome",
                                ["account", "outcome"], registry=self.registry)
        self.ignored = Counter("pmb_messages_ignored", "Messages ignored, by account and why",
                               ["account", "reason"], registry=self.registry)
        self.latency = Histogram("pmb_message_processing_seconds",
                                 "Time from fetch to a recorded outcome, per message",
                                 ["account"], registry=self.registry,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.host_calls = Counter("pmb_host_calls", "Helpdesk API calls by method and status",
                                  ["method", "status"], registry=self.registry)
        self.retries = Counter("pmb_host_retries", "Helpdesk API calls retried after a wait",
                               registry=self.registry)
        self._lock = threading.Lock()

    def watch_store(self, store: Store, accounts: Iterable[str]) -> None:
        self._collector = _StateCollector(store, accounts, None)
        self.registry.register(self._collector)

    def watch_connections(self, board: StatusBoard) -> None:
        """Report each account's connection state from the service's status board."""
        self.registry.register(_ConnectionCollector(board))

    def watch_leases(self, keeper: LeaseKeeper) -> None:
        """Report this instance's leases (several instances on one ledger)."""
        self.registry.register(_LeaseCollector(keeper))

    def watch_queue(self, queue_depth: Callable[[], dict[str, int]]) -> None:
        """Report the outbound queue's jobs by state (read at scrape time)."""
        self._collector.queue_depth = queue_depth

    def observe_message(self, account: str, outcome: str, seconds: float, *,
                        ignored_as: str | None = None) -> None:
        self.messages.labels(account, outcome).inc()
        if ignored_as is not None:
            self.ignored.labels(account, ignored_as).inc()
        self.latency.labels(account).observe(seconds)

    def observe_host_response(self, method: str, status: int | str) -> None:
        self.host_calls.labels(method, str(status)).inc()

    def observe_host_retry(self) -> None:
        self.retries.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def health(store: Store, accounts: Iterable[str],
           leases: LeaseKeeper | None = None) -> tuple[bool, dict[str, Any]]:
    """Healthy when the store takes writes, no account is disabled and, with several
    instances, the leases are being renewed."""
    lease_report = leases.status() if leases is not None else None
    if lease_report is not None and lease_report["renew_failures_in_a_row"]:
        # The last renewal failed: the store is failing, and asking it again could keep the
        # answer waiting as long as a connection attempt (a probe wants it at once).
        writable = False
    else:
        writable = store.writable()
    report: dict[str, Any] = {"store_writable": writable, "accounts": {}}
    healthy = writable
    if lease_report is not None:
        report["leases"] = lease_report
        healthy = healthy and bool(lease_report["healthy"])
        if not writable:
            report["status"] = "unhealthy"
            return False, report
    for name in accounts:
        h = store.get_health(name)
        report["accounts"][name] = {
            "enabled": h.enabled, "consecutive_failures": h.consecutive_failures,
            "last_success": h.last_success_at.isoformat() if h.last_success_at else None,
            "last_error": h.last_error}
        healthy = healthy and h.enabled
    report["status"] = "ok" if healthy else "unhealthy"
    return healthy, report


def make_observability_app(metrics: Metrics, store: Store,  # noqa: ANN201
                           accounts: Iterable[str], leases: LeaseKeeper | None = None):
    """A WSGI app answering /metrics and /healthz (and 404 for anything else)."""
    names = list(accounts)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b""]
        if path == "/metrics":
            body = metrics.exposition()
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST),
                                      ("Content-Length", str(len(body)))])
            return [body]
        if path == "/healthz":
            ok, report = health(store, names, leases)
            body = json.dumps(report).encode()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    return app
