"""Run the outbound side: the webhook under waitress, and the worker with its sweep.

``OutboundService.start()`` returns once the server listens; ``stop()`` closes it and lets
the worker finish the job in hand. ``postmaster-bridge serve`` runs only this;
``postmaster-bridge run`` starts it beside the mailbox pollers when an account has outbound
enabled.

The server is connector.service.http's waitress server; /metrics and /healthz of the whole
bridge are routed beside the webhook when ``run`` passes them in ``extra_routes``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from connector.outbound.queue import OutboundQueue
from connector.outbound.settings import OutboundConfig
from connector.outbound.webhook import WebhookApp
from connector.outbound.worker import OutboundWorker
from connector.service.http import WSGIApp, WsgiServer, route

log = logging.getLogger(__name__)


class OutboundService:
    """The webhook server and the worker, as two threads."""

    def __init__(self, config: OutboundConfig, queue: OutboundQueue, worker: OutboundWorker, *,
                 app: WebhookApp | None = None,
                 extra_routes: Mapping[str, WSGIApp] | None = None) -> None:
        if config.service is None:
            raise ValueError("outbound needs the service: section")
        self.config = config
        self.queue = queue
        self.worker = worker
        self.app = app or WebhookApp(config, queue, worker.api.webhook(),
                                     on_enqueued=worker.wake.set)
        service = config.service
        self.server = WsgiServer(route(extra_routes or {}, self.app), host=service.host,
                                 port=service.port, threads=service.threads,
                                 max_body_bytes=service.max_body_bytes,
                                 name="outbound-webhook")
        self._worker_thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        service = self.config.service
        assert service is not None
        self.server.start()
        self._worker_thread = threading.Thread(target=self.worker.run_forever,
                                               name="outbound-worker", daemon=True)
        self._worker_thread.start()
        log.info("outbound: webhook listening on %s:%s for %s; public URL %s", service.host,
                 self.port, ", ".join(a.account for a in self.config.enabled_accounts),
                 service.public_url)

    def stop(self, timeout: float = 30.0) -> None:
        self.worker.stop()
        self.server.stop(timeout)
        if self._worker_thread is not None:
            self._worker_thread.join(timeout)

    def alive(self) -> bool:
        return (self.server.alive() and self._worker_thread is not None
                and self._worker_thread.is_alive())
