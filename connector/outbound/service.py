"""Run the outbound side: the webhook under waitress, and the worker with its sweep.

``OutboundService.start()`` returns once the server listens; ``stop()`` closes it and lets
the worker finish the job in hand. ``postmaster-bridge serve`` runs only this;
``postmaster-bridge run`` starts it beside the mailbox pollers when an account has outbound
enabled.

waitress: a production WSGI server, pure Python (no compiler, no extra process), thread
pool, and it buffers request bodies with its own size cap before the app sees them.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from waitress import wasyncore
from waitress.server import create_server

from connector.outbound.queue import OutboundQueue
from connector.outbound.settings import OutboundConfig
from connector.outbound.webhook import WebhookApp
from connector.outbound.worker import OutboundWorker

log = logging.getLogger(__name__)


class OutboundService:
    """The webhook server and the worker, as two threads."""

    def __init__(self, config: OutboundConfig, queue: OutboundQueue, worker: OutboundWorker, *,
                 app: WebhookApp | None = None) -> None:
        if config.service is None:
            raise ValueError("outbound needs the service: section")
        self.config = config
        self.queue = queue
        self.worker = worker
        self.app = app or WebhookApp(config, queue, on_enqueued=worker.wake.set)
        self._server: Any = None
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return int(self._server.effective_port) if self._server is not None else 0

    @property
    def url(self) -> str:
        host = self.config.service.host if self.config.service else "127.0.0.1"
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        service = self.config.service
        assert service is not None
        self._server = create_server(
            self.app,
            host=service.host,
            port=service.port,
            threads=service.threads,
            # waitress refuses bigger bodies itself (413) before buffering them all.
            max_request_body_size=service.max_body_bytes,
            channel_timeout=30,
            ident="postmaster-bridge",
            clear_untrusted_proxy_headers=True,
        )
        server_thread = threading.Thread(target=self._server.run, name="outbound-webhook",
                                         daemon=True)
        worker_thread = threading.Thread(target=self.worker.run_forever,
                                         name="outbound-worker", daemon=True)
        self._threads = [server_thread, worker_thread]
        for thread in self._threads:
            thread.start()
        log.info("outbound: webhook listening on %s:%s for %s; public URL %s", service.host,
                 self.port, ", ".join(a.account for a in self.config.enabled_accounts),
                 service.public_url)

    def stop(self, timeout: float = 30.0) -> None:
        self.worker.stop()
        server = self._server
        if server is not None:
            # Close every channel from inside the server's own loop thread.
            server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        for thread in self._threads:
            thread.join(timeout)
        if server is not None:
            server.task_dispatcher.shutdown()
        self._server = None

    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)
