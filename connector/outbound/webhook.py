"""The bridge's webhook endpoint, as a plain WSGI application, for whichever host it serves.

Routes:

- ``POST <prefix>/hooks/<host>/<account>``: a reply request from the helpdesk (``<host>`` is
  the host's ``HostHook.route``: ``zendesk``, ``otobo``). Answered 202 as soon as the job is
  committed to the queue; the sending happens in the worker, so the host's webhook timeout
  (Zendesk's ~10 s) never fires.
- ``GET /healthz``: 200 when the queue's database takes writes, else 503.

What is shared here: routing, the body size cap (checked first, to bound the read), refusing
an account that sends nothing (checked against the configured secret all the same, so the
answer does not tell which account names exist), queueing the request durably and the 202
answer (``"duplicate": true`` when the request was queued before). What each host decides is
its ``HostHook`` (``connector.outbound.<host>_hook``, built by the host's outbound API): how a
request proves it comes from the helpdesk (a bad one gets 401 and a log line naming the reason
and the client, never the body), how its body names the ticket, and what makes two deliveries
the same request.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from connector.outbound.queue import OutboundQueue
from connector.outbound.settings import OutboundConfig, ServiceSettings

log = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]

_ROUTE = re.compile(r"^(?:/.*)?/hooks/([a-z]+)/([a-z0-9][a-z0-9_.-]{0,62})/?$")
_STATUS = {200: "200 OK", 202: "202 Accepted", 400: "400 Bad Request", 401: "401 Unauthorized",
           404: "404 Not Found", 405: "405 Method Not Allowed", 411: "411 Length Required",
           413: "413 Payload Too Large", 503: "503 Service Unavailable"}


@dataclass(frozen=True)
class Delivery:
    """A verified request to queue: the ticket (an opaque id), what makes a repeat of it the
    same request (``dedupe_key``, and ``digest`` when the host signs each delivery), what the
    job keeps of it (``payload``) and what its log lines add (``detail``)."""

    ticket_id: str
    dedupe_key: str
    payload: dict[str, Any] = field(default_factory=dict)
    digest: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class Refused:
    """A request that is not queued: the answer's ``error`` (status 400) and, when it says
    more than the answer, the logged ``reason``."""

    error: str
    reason: str | None = None


@dataclass(frozen=True)
class HookContext:
    """What a host's hook gets with each request: the account of the URL, whether it sends
    (an unknown account is still verified, then refused), the secrets it accepts, the time."""

    account: str
    secrets: tuple[str, ...]
    now: float
    service: ServiceSettings


class HostHook(Protocol):
    """One host's side of the webhook (``connector.outbound.zendesk_hook``, ``otobo_hook``)."""

    @property
    def route(self) -> str:
        """The host's part of the URL: ``/hooks/<route>/<account>``."""
        ...

    def verify(self, environ: Mapping[str, Any], body: bytes,
               context: HookContext) -> str | None:
        """None when the request proves it comes from the helpdesk, else why not (logged,
        answered 401)."""
        ...

    def read(self, environ: Mapping[str, Any], body: bytes,
             context: HookContext) -> Delivery | Refused:
        """The verified request's ticket and identity, or why it cannot be queued (400)."""
        ...


class WebhookApp:
    """WSGI callable serving ``hook``'s host. ``secrets(account)`` gives the secrets accepted
    for an account (the configured one, and one the host chose itself at install)."""

    def __init__(self, config: OutboundConfig, queue: OutboundQueue, hook: HostHook, *,
                 secrets: Callable[[str], Iterable[str]] | None = None,
                 on_enqueued: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if config.service is None:
            raise ValueError("the webhook needs the service: section")
        self.service = config.service
        self.accounts = {a.account for a in config.enabled_accounts}
        self.queue = queue
        self.hook = hook
        self._secrets = secrets or self._default_secrets
        self._on_enqueued = on_enqueued
        self._clock = clock

    def _default_secrets(self, account: str) -> list[str]:
        found = [self.service.signing_secret]
        stored = self.queue.webhook_secret(account)
        if stored:
            found.append(stored)
        return found

    # -- WSGI --------------------------------------------------------------------------------
    def __call__(self, environ: Mapping[str, Any], start_response: StartResponse) -> list[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        path = str(environ.get("PATH_INFO", "") or "/")
        try:
            if path == "/healthz":
                if method not in ("GET", "HEAD"):
                    return self._reply(start_response, 405, {"error": "method not allowed"},
                                       allow="GET, HEAD")
                return self._health(start_response)
            match = _ROUTE.match(path)
            if match is None or match.group(1) != self.hook.route:
                return self._reply(start_response, 404, {"error": "not found"})
            if method != "POST":
                return self._reply(start_response, 405, {"error": "method not allowed"},
                                   allow="POST")
            return self._request(environ, start_response, match.group(2))
        except Exception:
            log.exception("webhook: unexpected error on %s %s", method, path)
            return self._reply(start_response, 503, {"error": "temporarily unavailable"})

    def _reply(self, start_response: StartResponse, status: int, body: Mapping[str, Any],
               **headers: str) -> list[bytes]:
        data = json.dumps(body).encode("utf-8")
        head = [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                ("Cache-Control", "no-store")]
        head += [(k.replace("_", "-").title(), v) for k, v in headers.items()]
        start_response(_STATUS[status], head)
        return [data]

    def _health(self, start_response: StartResponse) -> list[bytes]:
        if not self.queue.writable():
            return self._reply(start_response, 503, {"status": "store not writable"})
        return self._reply(start_response, 200, {"status": "ok", "jobs": self.queue.counts()})

    # -- the request ---------------------------------------------------------------------------
    def _read_body(self, environ: Mapping[str, Any]) -> bytes | int:
        """The body, or the status to answer (411 / 413)."""
        limit = self.service.max_body_bytes
        length_text = str(environ.get("CONTENT_LENGTH") or "").strip()
        stream = environ.get("wsgi.input")
        if length_text:
            try:
                length = int(length_text)
            except ValueError:
                return 411
            if length > limit:
                return 413
            return stream.read(length) if stream is not None and length > 0 else b""
        if stream is None:
            return b""
        data = stream.read(limit + 1)
        return 413 if len(data) > limit else data

    def _request(self, environ: Mapping[str, Any], start_response: StartResponse,
                 account: str) -> list[bytes]:
        client = str(environ.get("REMOTE_ADDR") or "?")
        body = self._read_body(environ)
        if isinstance(body, int):
            log.warning("webhook account=%s from %s: refused with %d (body over %d bytes or "
                        "no length)", account, client, body, self.service.max_body_bytes)
            return self._reply(start_response, body, {"error": "request body too large"
                                                      if body == 413 else "length required"})
        known = account in self.accounts
        secrets = tuple(self._secrets(account)) if known else ()
        context = HookContext(account, secrets or (self.service.signing_secret,),
                              self._clock(), self.service)
        reason = self.hook.verify(environ, body, context)
        if reason is not None or not known:
            log.warning("webhook account=%s from %s: unauthorized: %s", account, client,
                        reason or "no enabled outbound account")
            return self._reply(start_response, 401, {"error": "unauthorized"})
        delivery = self.hook.read(environ, body, context)
        if isinstance(delivery, Refused):
            log.warning("webhook account=%s from %s: request refused: %s", account, client,
                        delivery.reason or delivery.error)
            return self._reply(start_response, 400, {"error": delivery.error})
        return self._queue(start_response, account, delivery)

    def _queue(self, start_response: StartResponse, account: str,
               delivery: Delivery) -> list[bytes]:
        ticket = delivery.ticket_id
        try:
            result = self.queue.enqueue(account, ticket, source="webhook",
                                        dedupe_key=delivery.dedupe_key,
                                        payload=delivery.payload, digest=delivery.digest)
        except Exception:
            log.exception("webhook account=%s ticket=%s: cannot queue the request", account,
                          ticket)
            return self._reply(start_response, 503, {"error": "temporarily unavailable"})
        if result.created:
            log.info("webhook account=%s ticket=%s %s: queued as job %s", account, ticket,
                     delivery.detail, result.job_id)
            if self._on_enqueued is not None:
                self._on_enqueued()
        else:
            log.info("webhook account=%s ticket=%s %s: duplicate of job %s", account, ticket,
                     delivery.detail, result.job_id)
        return self._reply(start_response, 202, {"job": result.job_id,
                                                 "duplicate": not result.created})
