"""The webhook endpoint Zendesk's trigger calls, as a plain WSGI application.

Routes:

- ``POST <prefix>/hooks/zendesk/<account>``: a reply request. Answered 202 as soon as the job
  is committed to the queue; the sending happens in the worker, so Zendesk's ~10 s webhook
  timeout never fires.
- ``GET /healthz``: 200 when the queue's database takes writes, else 503.

Every POST is authenticated by Zendesk's signature before anything else is looked at (only
the size cap comes first, to bound the read). A bad or stale signature gets 401 and a log line
naming the reason and the client, never the body. Duplicates (the same invocation id, or the
same signed delivery replayed) get 202 with ``"duplicate": true`` and queue nothing.

The JSON body is read leniently: Zendesk fills the trigger's template without always
escaping quotes in placeholder output, so a body that does not parse still yields its ticket
id when the signature proves it is Zendesk's.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from connector.outbound.otobo_hook import authentic, parse_hook
from connector.outbound.queue import OutboundQueue
from connector.outbound.settings import OutboundConfig
from connector.outbound.zendesk_signature import delivery_digest, verify

log = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]

_ROUTE = re.compile(r"^(?:/.*)?/hooks/zendesk/([a-z0-9][a-z0-9_.-]{0,62})/?$")
_OTOBO_ROUTE = re.compile(r"^(?:/.*)?/hooks/otobo/([a-z0-9][a-z0-9_.-]{0,62})/?$")
#: OTOBO repeats a failed invocation (its scheduler); within this window a byte-identical
#: delivery is the same request, later it is the agent asking again.
OTOBO_REPLAY_WINDOW = 600
_TICKET_ID = re.compile(r'"ticket_id"\s*:\s*"?\s*(\d+)')
_ACCOUNT = re.compile(r'"account"\s*:\s*"([^"\\]{0,100})"')
_ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_INVOCATION = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_STATUS = {200: "200 OK", 202: "202 Accepted", 400: "400 Bad Request", 401: "401 Unauthorized",
           404: "404 Not Found", 405: "405 Method Not Allowed", 411: "411 Length Required",
           413: "413 Payload Too Large", 503: "503 Service Unavailable"}


class WebhookApp:
    """WSGI callable. ``secrets(account)`` gives the signing secrets accepted for an account."""

    def __init__(self, config: OutboundConfig, queue: OutboundQueue, *,
                 secrets: Callable[[str], Iterable[str]] | None = None,
                 on_enqueued: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.time,
                 ticket_number: Callable[[int], str | None] | None = None) -> None:
        if config.service is None:
            raise ValueError("the webhook needs the service: section")
        self.service = config.service
        self.accounts = {a.account for a in config.enabled_accounts}
        self.queue = queue
        self._secrets = secrets or self._default_secrets
        self._on_enqueued = on_enqueued
        self._clock = clock
        # OTOBO/Znuny: TicketID -> TicketNumber (the id the bridge knows tickets by).
        self._ticket_number = ticket_number

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
            otobo = _OTOBO_ROUTE.match(path) if match is None else None
            if match is None and otobo is None:
                return self._reply(start_response, 404, {"error": "not found"})
            if method != "POST":
                return self._reply(start_response, 405, {"error": "method not allowed"},
                                   allow="POST")
            if otobo is not None:
                return self._otobo_hook(environ, start_response, otobo.group(1))
            assert match is not None
            return self._hook(environ, start_response, match.group(1))
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

    # -- the hook -----------------------------------------------------------------------------
    def _client(self, environ: Mapping[str, Any]) -> str:
        return str(environ.get("REMOTE_ADDR") or "?")

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

    def _hook(self, environ: Mapping[str, Any], start_response: StartResponse,
              account: str) -> list[bytes]:
        client = self._client(environ)
        body = self._read_body(environ)
        if isinstance(body, int):
            log.warning("webhook account=%s from %s: refused with %d (body over %d bytes or "
                        "no length)", account, client, body, self.service.max_body_bytes)
            return self._reply(start_response, body, {"error": "request body too large"
                                                      if body == 413 else "length required"})
        signature = environ.get("HTTP_X_ZENDESK_WEBHOOK_SIGNATURE")
        timestamp = environ.get("HTTP_X_ZENDESK_WEBHOOK_SIGNATURE_TIMESTAMP")
        secrets = list(self._secrets(account)) if account in self.accounts else []
        # An unknown account is checked against the configured secret too (and fails the
        # same way), so the answer does not tell which account names exist.
        verdict = verify(secrets or [self.service.signing_secret], signature, timestamp, body,
                         now=datetime.fromtimestamp(self._clock(), UTC),
                         tolerance=self.service.timestamp_tolerance)
        if not verdict or account not in self.accounts:
            reason = verdict.reason if not verdict else "no enabled outbound account"
            log.warning("webhook account=%s from %s: unauthorized: %s", account, client, reason)
            return self._reply(start_response, 401, {"error": "unauthorized"})
        assert isinstance(timestamp, str)
        request = parse_request(body)
        if request.problem is not None:
            log.warning("webhook account=%s from %s: signed request refused: %s", account,
                        client, request.problem)
            return self._reply(start_response, 400, {"error": request.problem})
        ticket_id, payload = request.ticket_id, request.payload
        # Zendesk signs the body, not the URL: the account that sends is the one the signed
        # body names (install writes it into each account's trigger), and the URL must agree.
        if request.account != account:
            log.warning("webhook account=%s from %s: the signed body names account %r", account,
                        client, request.account)
            return self._reply(start_response, 400, {"error": "account mismatch"})
        assert ticket_id is not None
        invocation = str(environ.get("HTTP_X_ZENDESK_WEBHOOK_INVOCATION_ID") or "").strip()
        digest = delivery_digest(timestamp, body)
        key = f"inv:{invocation}" if _INVOCATION.match(invocation) else f"sig:{digest}"
        record = {k: v for k, v in payload.items() if k in ("v", "ticket_id", "subject",
                                                            "message", "account")
                  and isinstance(v, str | int | float | bool)}
        record["invocation_id"] = invocation or None
        record["webhook_id"] = environ.get("HTTP_X_ZENDESK_WEBHOOK_ID")
        try:
            result = self.queue.enqueue(account, ticket_id, source="webhook", dedupe_key=key,
                                        payload=record, digest=digest)
        except Exception:
            log.exception("webhook account=%s ticket=%s: cannot queue the request", account,
                          ticket_id)
            return self._reply(start_response, 503, {"error": "temporarily unavailable"})
        if result.created:
            log.info("webhook account=%s ticket=%s invocation=%s: queued as job %s", account,
                     ticket_id, invocation or "-", result.job_id)
            if self._on_enqueued is not None:
                self._on_enqueued()
        else:
            log.info("webhook account=%s ticket=%s invocation=%s: duplicate of job %s",
                     account, ticket_id, invocation or "-", result.job_id)
        return self._reply(start_response, 202, {"job": result.job_id,
                                                 "duplicate": not result.created})

    def _otobo_hook(self, environ: Mapping[str, Any], start_response: StartResponse,
                    account: str) -> list[bytes]:
        """A reply request from OTOBO's / Znuny's invoker (connector.outbound.otobo_hook)."""
        client = self._client(environ)
        body = self._read_body(environ)
        if isinstance(body, int):
            return self._reply(start_response, body, {"error": "request body too large"
                                                      if body == 413 else "length required"})
        secrets = list(self._secrets(account)) if account in self.accounts else []
        if not authentic(environ, secrets or [self.service.signing_secret]) \
                or account not in self.accounts:
            log.warning("webhook account=%s from %s: unauthorized (otobo invoker)", account,
                        client)
            return self._reply(start_response, 401, {"error": "unauthorized"})
        hook = parse_hook(body)
        if hook.problem is not None:
            log.warning("webhook account=%s from %s: refused: %s", account, client,
                        hook.problem)
            return self._reply(start_response, 400, {"error": hook.problem})
        number = hook.ticket_number
        if number is None and hook.ticket_id is not None and self._ticket_number is not None:
            number = self._ticket_number(hook.ticket_id)
        if number is None:
            return self._reply(start_response, 400, {"error": "unknown ticket"})
        digest = delivery_digest(str(int(self._clock() // OTOBO_REPLAY_WINDOW)), body)
        try:
            result = self.queue.enqueue(account, number, source="webhook",
                                        dedupe_key=f"otobo:{digest}",
                                        payload={"ticket_id": number, "account": account,
                                                 "event": hook.event})
        except Exception:
            log.exception("webhook account=%s ticket=%s: cannot queue the request", account,
                          number)
            return self._reply(start_response, 503, {"error": "temporarily unavailable"})
        if result.created:
            log.info("webhook account=%s ticket=%s (otobo %s): queued as job %s", account,
                     number, hook.event or "event", result.job_id)
            if self._on_enqueued is not None:
                self._on_enqueued()
        return self._reply(start_response, 202, {"job": result.job_id,
                                                 "duplicate": not result.created})


#: Zendesk ticket ids are positive 64-bit integers; anything longer is not an id.
MAX_TICKET_ID = 2**63 - 1


@dataclass(frozen=True)
class HookRequest:
    """What a signed delivery asks for; ``problem`` says why it cannot be queued (a 400)."""

    ticket_id: str | None = None
    account: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None


def parse_request(body: bytes) -> HookRequest:
    """Ticket id, account and the JSON object of a delivery; lenient when the JSON is broken
    (Zendesk does not always escape placeholder output), strict about the values."""
    text = body.decode("utf-8", "replace")
    try:
        data: Any = json.loads(text)
    except (ValueError, RecursionError):
        id_match, account_match = _TICKET_ID.search(text), _ACCOUNT.search(text)
        return _checked(id_match.group(1) if id_match else None,
                        account_match.group(1) if account_match else None, {})
    if not isinstance(data, dict):
        return HookRequest(problem="the body is not a JSON object")
    return _checked(data.get("ticket_id"), data.get("account"), data)


def _checked(raw_id: Any, raw_account: Any, payload: dict[str, Any]) -> HookRequest:
    if raw_id is None:
        return HookRequest(problem="ticket_id missing")
    text = str(raw_id).strip() if isinstance(raw_id, str | int) and \
        not isinstance(raw_id, bool) else ""
    if not text.isascii() or not text.isdigit() or len(text) > 19 or \
            not 0 < int(text) <= MAX_TICKET_ID:
        return HookRequest(problem="ticket_id is not a ticket id")
    if not isinstance(raw_account, str) or not _ACCOUNT_NAME.match(raw_account):
        return HookRequest(problem="account missing or invalid")
    return HookRequest(str(int(text)), raw_account, payload)
