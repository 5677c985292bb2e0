"""The bridge's one HTTP server: waitress in a thread, serving a WSGI app.

waitress: a production WSGI server, pure Python (no compiler, no extra process), a thread
pool, and it refuses oversized request bodies itself (413) before buffering them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from waitress import wasyncore
from waitress.server import create_server

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def route(routes: Mapping[str, WSGIApp], default: WSGIApp) -> WSGIApp:
    """Send requests for the exact paths in ``routes`` to their app, the rest to ``default``."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = routes.get(environ.get("PATH_INFO", ""), default)
        return target(environ, start_response)

    return app


class WsgiServer:
    def __init__(self, app: WSGIApp, *, host: str, port: int, threads: int = 4,
                 max_body_bytes: int = 256 * 1024, name: str = "http") -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self.threads = threads
        self.max_body_bytes = max_body_bytes
        self.name = name
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.effective_port) if self._server is not None else 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self._server = create_server(
            self.app, host=self.host, port=self.requested_port, threads=self.threads,
            max_request_body_size=self.max_body_bytes, channel_timeout=30,
            ident="postmaster-bridge", clear_untrusted_proxy_headers=True)
        self._thread = threading.Thread(target=self._server.run, name=self.name, daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        server = self._server
        if server is None:
            return
        try:
            # Close every channel from inside the server's own loop thread.
            server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        except OSError as exc:
            # The loop's wake-up pipe is already gone (seen once, not reproduced): close from
            # here; the loop ends at its next poll.
            log.warning("%s: server trigger unavailable (%s); closing directly", self.name, exc)
            wasyncore.close_all(server._map, ignore_all=True)
        if self._thread is not None:
            self._thread.join(timeout)
        server.task_dispatcher.shutdown()
        self._server = None
