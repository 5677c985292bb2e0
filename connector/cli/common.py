"""What every command shares: logging, exit codes, the config, the parts a processing
command assembles."""

from __future__ import annotations

import argparse
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from connector.config import AccountConfig, Config, load_config

if TYPE_CHECKING:
    from connector.hosts.base import HostAdapter
    from connector.service.metrics import Metrics
    from connector.service.pipeline import Pipeline
    from connector.store.base import Store
    from connector.understand import Rules


def setup_logging(verbosity: int, stream: TextIO) -> None:
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    logging.basicConfig(level=level, stream=stream, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def load(args: argparse.Namespace, *, secrets: bool = True) -> Config:
    """The config named on the command line (``secrets=False``: see ``load_config``); its
    ``limits:`` bound every parse of this process, parse-ahead workers included."""
    from connector.mail.mimetree import set_limits

    config = load_config(args.config, secrets=secrets)
    set_limits(config.limits)
    return config


@dataclass
class Parts:
    """What every processing command assembles from the config."""

    config: Config
    store: Store
    host: HostAdapter
    rules: Rules
    metrics: Metrics
    dry_run: bool

    def pipeline(self, account: AccountConfig) -> Pipeline:
        from connector.service.pipeline import Pipeline

        return Pipeline(account, self.config.host, self.store, self.host, self.rules,
                        metrics=self.metrics)


def build(config: Config, out: TextIO, stop: threading.Event | None = None, *,
          checked_within: float = 0.0) -> Parts:
    """Store, host adapter and filter stage for a config. Dry-run never writes the store.
    With ``stop``, a shutdown cuts short the waits between helpdesk retries;
    ``checked_within`` skips the ledger's quick_check when one passed that recently."""
    from connector.hosts.factory import make_host
    from connector.service.filtering import load_rules
    from connector.service.metrics import Metrics
    from connector.store.factory import open_store

    dry_run = config.host.type == "dry-run"
    store = open_store(config.store, dry_run=dry_run, checked_within=checked_within)
    metrics = Metrics()
    sleep = stop.wait if stop is not None else time.sleep
    host = make_host(config.host, out=out, observer=metrics, sleep=sleep)
    return Parts(config, store, host, load_rules(config), metrics, dry_run)
def account_for(config: Config, name: str | None) -> AccountConfig:
    if name:
        return config.account(name)
    return config.accounts[0]


def readonly_store(config: Config) -> Store:
    """The store opened read-only (SQLite URI mode=ro; PostgreSQL read-only transactions),
    for commands that only look; an in-memory ledger when there is none to read yet (no
    SQLite file, or the PostgreSQL DSN's secret is not at hand)."""
    from connector.store.factory import open_store, store_exists

    if not store_exists(config.store) or (config.store.shared and not config.store.dsn):
        return open_store(config.store, dry_run=True)
    return open_store(config.store, read_only=True)


def admin_store(config: Config) -> Store:
    from connector.store.factory import open_store

    return open_store(config.store)
