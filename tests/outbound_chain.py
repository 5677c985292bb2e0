"""The outbound side of the bridge over one ledger file, set up once for every host's suite.

``OutboundChain`` builds what ``serve`` runs (the ledger, the durable queue, the host's outbound
API, the worker and the webhook app) for Zendesk or OTOBO alike: the API is chosen by the host
adapter given (``outbound_api``). ``start()`` serves it over HTTP on a free loopback port
(``OutboundService``); tests that drive the parts by hand use ``app`` and ``worker`` directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connector.hosts.otobo import OtoboAdapter
from connector.outbound.otobo_api import OtoboOutboundAPI
from connector.outbound.queue import OutboundQueue
from connector.outbound.service import OutboundService
from connector.outbound.settings import OutboundConfig
from connector.outbound.webhook import WebhookApp
from connector.outbound.worker import OutboundWorker
from connector.outbound.zendesk_api import ZendeskOutboundAPI
from connector.store.base import Store
from connector.store.sqlite import SQLiteStore


def outbound_api(adapter: Any, config: OutboundConfig) -> Any:
    """The outbound API of the host ``adapter`` talks to: OTOBO's reads ``PECReply`` for the
    accounts' reply tags, Zendesk's the tags themselves."""
    if isinstance(adapter, OtoboAdapter):
        return OtoboOutboundAPI(adapter, {a.reply_tag: a.account
                                          for a in config.enabled_accounts})
    return ZendeskOutboundAPI(adapter)


class OutboundChain:
    """Queue, worker and webhook app over ``path`` (the ledger ``store`` and the ``queue`` are
    opened there unless given: a test on another engine passes its own); ``crashed_worker``:
    the worker never runs (a process that died right after answering 202)."""

    def __init__(self, config: OutboundConfig, path: Path, adapter: Any, *,
                 store: Store | None = None, queue: OutboundQueue | None = None,
                 crashed_worker: bool = False) -> None:
        self.config = config
        self.own_store = store is None
        self.own_queue = queue is None
        self.store: Store = store if store is not None else SQLiteStore(path)
        self.queue = queue if queue is not None else OutboundQueue(path)
        self.api = outbound_api(adapter, config)
        self.worker = OutboundWorker(config, self.queue, self.api, self.store)
        if crashed_worker:
            self.worker.run_forever = lambda: None  # type: ignore[method-assign]
        self.app = WebhookApp(config, self.queue, self.api.webhook(),
                              on_enqueued=self.worker.wake.set)
        self.service: OutboundService | None = None

    def start(self) -> OutboundService:
        self.service = OutboundService(self.config, self.queue, self.worker, app=self.app)
        self.service.start()
        return self.service

    @property
    def port(self) -> int:
        assert self.service is not None, "start() first"
        return self.service.port

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None
        if self.own_queue:
            self.queue.close()
        if self.own_store:
            self.store.close()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    """``predicate()`` once it is truthy (polled), else an AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")

