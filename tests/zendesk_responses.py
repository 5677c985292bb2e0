"""An in-memory Zendesk Support behind `responses`, and the bridge assembled around it, for the
end-to-end ingest tests (tests/test_ingest_*.py).

``with fake_zendesk() as zd:`` starts a ``responses.RequestsMock`` and answers, from tickets
kept in memory, every call the bridge makes: ``POST /oauth/tokens``, ``GET /api/v2/users/me``,
``GET /api/v2/users/search``, ``POST /api/v2/uploads``, ``POST /api/v2/tickets`` (honouring
``Idempotency-Key`` as Zendesk documents it), ``GET /api/v2/tickets?external_id=``,
``GET|PUT /api/v2/tickets/{id}``, ``GET /api/v2/tickets/{id}/audits``, and for history
``POST /api/v2/users/create_or_update``, ``POST /api/v2/imports/tickets``,
``POST /api/v2/imports/tickets/create_many`` (a background job: queued, working, completed)
and ``GET /api/v2/job_statuses/{id}``.

Every request body the bridge sends is checked against Zendesk's OpenAPI description
(tests/zendesk_oas.py; on a bare clone without it the exchange passes unchecked and is counted,
see ``check_fake`` there) or, where the OAS has no JSON schema (OAuth, uploads), against the
documented form; every answer is built with the resource builders of tests/zendesk_double.py
and validated before it goes out. A request that breaks the rules, or one to an endpoint the
fake does not know, is recorded in ``violations`` and leaving the ``with`` block fails the test:
the bridge swallows exceptions raised inside a host call (it retries later), so raising alone
would hide the problem.

``responses`` patches ``requests`` only: IMAP and POP3 sockets to the test Dovecot are not
affected, and nothing is passed through to any network.

Faults: ``zd.fail("POST", r"^/api/v2/tickets$", status=500)`` answers the next matching call
with that status (``count=-1``: every call); ``exception=requests.ReadTimeout`` raises instead;
``after=True`` performs the request first and then fails, so the client never learns that it
worked (a lost answer).
"""

from __future__ import annotations

import contextlib
import email.policy
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import responses
import yaml
from dovecot import DovecotServer, MailUser
from zendesk_double import (
    attachment_resource,
    closed_ticket_error,
    error_body,
    iso,
    ticket_resource,
    user_resource,
)
from zendesk_oas import check_fake, validate_error, validate_request, validate_response

from connector.config import AccountConfig, Config, load_config
from connector.fetch import open_mailbox
from connector.hosts.zendesk import ZendeskAdapter, ZendeskSettings
from connector.service.filtering import load_rules
from connector.service.pipeline import Pipeline
from connector.service.runner import AccountPoller, AccountSummary, MailboxFactory, Service
from connector.store.base import MessageRecord
from connector.store.factory import open_store

BASE_URL = "https://acme.zendesk.com"
CLIENT_ID = "postmaster-bridge"
CLIENT_SECRET = "zd-client-secret-4b7e"
INTEGRATION_USER_ID = 100
INTEGRATION_EMAIL = "integration@acme.example"
#: The fake's clock starts here (2026) and moves one second per change, so ``updated_at``
#: stamps (``safe_update``) always differ.
T0 = 1_790_000_000.0
#: Zendesk remembers an Idempotency-Key for two hours.
IDEMPOTENCY_TTL = 2 * 3600.0
_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
_TICKET = re.compile(r"^/api/v2/tickets/(\d+)(/audits)?$")


@dataclass
class Call:
    """One request the bridge made, and the status it got (None: answered by an exception)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Fault:
    """An answer forced on the next ``count`` matching calls (-1: every call)."""

    method: str
    path_regex: str
    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    exception: type[BaseException] | BaseException | None = None
    count: int = 1
    after: bool = False  # perform the request, then answer with the fault
    hits: int = 0

    def matches(self, call: Call) -> bool:
        return (self.count != 0 and self.method == call.method
                and re.search(self.path_regex, call.path) is not None)


class ApiError(Exception):
    """A Zendesk error answer."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


class FakeZendesk:
    """Zendesk state in memory plus the ``responses`` callbacks that serve it.

    ``tickets`` maps id to the stored ticket: the fields ``ticket_resource`` reads, plus
    ``comments`` (each ``body``/``html_body`` as sent, ``plain`` text, ``public``,
    ``author_id``, ``metadata`` and ``attachments`` whose ``data`` is the uploaded bytes) and
    ``audits``. ``users`` maps id to user (100 is the integration user); ``calls`` lists every
    request in order.
    """

    def __init__(self, base_url: str = BASE_URL, client_id: str = CLIENT_ID,
                 client_secret: str = CLIENT_SECRET) -> None:
        self.base_url = base_url
        self.client_id = client_id
        self.client_secret = client_secret
        self._lock = threading.RLock()
        self.now = T0
        self.next_id = 1000
        self.users: dict[int, dict[str, Any]] = {}
        self.tickets: dict[int, dict[str, Any]] = {}
        self.uploads: dict[str, dict[str, Any]] = {}  # token -> {attachments, consumed}
        self.idempotency: dict[str, dict[str, Any]] = {}
        self.tokens: set[str] = set()
        self.calls: list[Call] = []
        self.violations: list[str] = []
        self.faults: list[Fault] = []
        self.jobs: dict[str, dict[str, Any]] = {}  # background jobs by id (job statuses)
        #: Called with each new ticket, right after Zendesk "created" it (to time disturbances).
        self.on_ticket_created: Callable[[dict[str, Any]], None] | None = None
        self.users[INTEGRATION_USER_ID] = {"id": INTEGRATION_USER_ID, "name": "Bridge Integration",
                                           "email": INTEGRATION_EMAIL, "role": "admin",
                                           "created_at": T0}

    # -- test controls ------------------------------------------------------------------------
    def install(self, rsps: responses.RequestsMock) -> None:
        """One callback per method for every URL: ``responses`` pops overlapping matches."""
        for method in _METHODS:
            rsps.add_callback(method, re.compile(r".*"), callback=self._callback)

    def fail(self, method: str, path_regex: str, status: int | None = None, *, body: Any = None,
             headers: Mapping[str, str] | None = None,
             exception: type[BaseException] | BaseException | None = None, count: int = 1,
             after: bool = False) -> Fault:
        if status is not None and body is None:
            phrase = HTTPStatus(status).phrase
            body = error_body(phrase.replace(" ", ""), phrase)
        if body is not None:
            check_fake(validate_error, body)
        fault = Fault(method, path_regex, status, body, dict(headers or {}), exception, count,
                      after)
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()

    def advance(self, seconds: float) -> None:
        """Let time pass on Zendesk's side (idempotency keys expire)."""
        self.now += seconds

    def set_status(self, ticket_id: int, status: str) -> None:
        self.tickets[ticket_id]["status"] = status
        self._touch(self.tickets[ticket_id])

    def calls_to(self, method: str, path_regex: str) -> list[Call]:
        return [c for c in self.calls
                if c.method == method and re.search(path_regex, c.path) is not None]

    def ticket_list(self) -> list[dict[str, Any]]:
        return [self.tickets[k] for k in sorted(self.tickets)]

    def user(self, user_id: int) -> dict[str, Any]:
        return self.users[user_id]

    def assert_clean(self) -> None:
        assert not self.violations, "the bridge broke Zendesk's rules:\n" + "\n".join(
            self.violations)

    # -- dispatch -----------------------------------------------------------------------------
    def _callback(self, request: Any) -> tuple[int, dict[str, str], bytes]:
        # The bridge sends several mails of an account at once (host.max_in_flight): one
        # request at a time here, as a real server keeps its own state consistent.
        with self._lock:
            return self._answer(request)

    def _answer(self, request: Any) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(request.url)
        body = request.body or b""
        call = Call(method=request.method.upper(), path=parts.path,
                    query={k: v[0] for k, v in parse_qs(parts.query, True).items()},
                    headers=dict(request.headers),
                    body=body.encode("utf-8") if isinstance(body, str) else bytes(body))
        self.calls.append(call)
        if f"{parts.scheme}://{parts.netloc}" != self.base_url:
            self._violation(call, "request to a host other than the configured Zendesk")
        fault = next((f for f in self.faults if f.matches(call)), None)
        if fault is not None:
            if fault.count > 0:
                fault.count -= 1
            fault.hits += 1
            if not fault.after:
                return self._fault_answer(call, fault)
        try:
            status, answer, headers = self._route(call)
        except ApiError as err:
            status, answer, headers = err.status, err.body, err.headers
        self._check_answer(call, status, answer)
        if fault is not None:
            return self._fault_answer(call, fault)
        call.status = status
        out = {"Content-Type": "application/json; charset=utf-8", **headers}
        return status, out, json.dumps(answer).encode("utf-8") if answer is not None else b""

    def _fault_answer(self, call: Call, fault: Fault) -> tuple[int, dict[str, str], bytes]:
        if fault.exception is not None:
            exc = fault.exception
            raise exc(f"fault: {call.method} {call.path}") if isinstance(exc, type) else exc
        assert fault.status is not None, "a fault needs a status or an exception"
        call.status = fault.status
        headers = {"Content-Type": "application/json; charset=utf-8", **fault.headers}
        return fault.status, headers, json.dumps(fault.body).encode("utf-8")

    def _check_answer(self, call: Call, status: int, answer: Any) -> None:
        """A wrong answer is the fake's bug; recorded too, since the bridge would swallow it."""
        try:
            if 200 <= status < 300:
                check_fake(validate_response, call.method, call.path, status, answer)
            else:
                check_fake(validate_error, answer)
        except AssertionError as exc:
            self._violation(call, f"the fake's own answer is not Zendesk's: {exc}")
            raise

    def _violation(self, call: Call, problem: str) -> None:
        self.violations.append(f"{call.method} {call.path}: {problem}")

    def _checked(self, call: Call, method: str, template: str) -> Any:
        """The JSON body of ``call``, validated against the operation's request schema."""
        if "application/json" not in call.headers.get("Content-Type", ""):
            self._violation(call, f"Content-Type {call.headers.get('Content-Type')!r} "
                            "is not application/json")
        try:
            body = call.json
            check_fake(validate_request, method, template, body)
        except (ValueError, AssertionError) as exc:
            self._violation(call, str(exc))
            raise ApiError(400, error_body("InvalidParameter", str(exc)[:200])) from None
        return body

    def _route(self, call: Call) -> tuple[int, Any, dict[str, str]]:
        path = call.path[:-5] if call.path.endswith(".json") else call.path
        if call.method == "GET" and call.body:
            self._violation(call, "a GET with a body")
        if path == "/oauth/tokens" and call.method == "POST":
            return 201, self._oauth(call), {}
        self._authenticate(call)
        if path == "/api/v2/users/me" and call.method == "GET":
            me = user_resource(self.users[INTEGRATION_USER_ID], self.base_url)
            return 200, {"user": me}, {}
        if path == "/api/v2/users/search" and call.method == "GET":
            return 200, self._search_users(call), {}
        if path == "/api/v2/uploads" and call.method == "POST":
            return 201, self._upload(call), {}
        if path == "/api/v2/tickets" and call.method == "POST":
            return self._create(call)
        if path == "/api/v2/users/create_or_update" and call.method == "POST":
            return self._create_or_update_user(call)
        if path == "/api/v2/imports/tickets" and call.method == "POST":
            return 201, self._import_one(call), {}
        if path == "/api/v2/imports/tickets/create_many" and call.method == "POST":
            return 200, self._import_many(call), {}
        if path.startswith("/api/v2/job_statuses/") and call.method == "GET":
            return 200, self._job_status(path.rsplit("/", 1)[1]), {}
        if path == "/api/v2/tickets" and call.method == "GET":
            return 200, self._list_tickets(call), {}
        match = _TICKET.match(path)
        if match:
            ticket = self._ticket(int(match.group(1)))
            if match.group(2) and call.method == "GET":
                return 200, self._page([self._audit_out(a) for a in ticket["audits"]],
                                       "audits"), {}
            if not match.group(2) and call.method == "GET":
                out: dict[str, Any] = {"ticket": ticket_resource(ticket, self.base_url)}
                if call.query.get("include") == "users":
                    out["users"] = self._sideload([ticket])
                return 200, out, {}
            if not match.group(2) and call.method == "PUT":
                return 200, self._update(call, ticket), {}
        self._violation(call, "an endpoint the bridge has no business calling")
        raise ApiError(404, error_body("InvalidEndpoint", "Not found"))

    # -- auth and users -----------------------------------------------------------------------
    def _oauth(self, call: Call) -> dict[str, Any]:
        try:
            body = call.json
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("grant_type") != "client_credentials":
            self._violation(call, f"not a client_credentials grant: {body!r}")
            raise ApiError(400, {"error": "unsupported_grant_type",
                                 "error_description": "The grant type is not supported."})
        expires_in = body.get("expires_in")
        if not isinstance(expires_in, int) or not 300 <= expires_in <= 172_800:
            self._violation(call, f"expires_in {expires_in!r} outside 300..172800")
        if body.get("client_id") != self.client_id or body.get("client_secret") != \
                self.client_secret:
            raise ApiError(401, {"error": "invalid_client", "error_description":
                                 "Client authentication failed due to unknown client."})
        token = hashlib.sha256(f"token{len(self.tokens)}".encode()).hexdigest()[:40]
        self.tokens.add(token)
        return {"access_token": token, "token_type": "bearer",
                "scope": str(body.get("scope") or "read"), "expires_in": expires_in}

    def _authenticate(self, call: Call) -> None:
        scheme, _, token = call.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token not in self.tokens:
            raise ApiError(401, {"error": "invalid_token", "error_description":
                                 "The access token provided is expired, revoked, malformed or "
                                 "invalid for other reasons."})

    def _find_or_create_user(self, email: str, name: str | None) -> dict[str, Any]:
        for user in self.users.values():
            if user["email"].lower() == email.lower():
                return user
        user = {"id": self._new_id(), "name": name or email.split("@")[0], "email": email,
                "role": "end-user", "created_at": self.now}
        self.users[user["id"]] = user
        return user

    def _search_users(self, call: Call) -> dict[str, Any]:
        query = call.query.get("query", "")
        if not query.startswith("email:"):
            self._violation(call, f"user search by {query!r}, not by email")
        email = query[6:].strip('"').lower()
        found = [user_resource(u, self.base_url) for u in self.users.values()
                 if u["email"].lower() == email]
        return self._page(found, "users")

    def _sideload(self, tickets: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ids: list[int] = []
        for t in tickets:
            for uid in (t["requester_id"], t["submitter_id"], *t["email_cc_ids"]):
                if uid not in ids:
                    ids.append(uid)
        return [user_resource(self.users[u], self.base_url) for u in ids]

    # -- uploads ------------------------------------------------------------------------------
    def _upload(self, call: Call) -> dict[str, Any]:
        filename = call.query.get("filename")
        if not filename:
            self._violation(call, "upload without a filename")
            raise ApiError(400, error_body("InvalidParameter", "filename parameter is required"))
        if "token" in call.query:
            self._violation(call, "the bridge must not add files to a shared upload token")
        if not call.body:
            self._violation(call, "empty upload")
        att_id = self._new_id()
        att = {"id": att_id, "file_name": filename, "size": len(call.body),
               "content_type": call.headers.get("Content-Type") or "application/octet-stream",
               "token": f"att{att_id}", "data": call.body}
        token = f"upload{att_id}"
        self.uploads[token] = {"attachments": [att], "consumed": False}
        out = attachment_resource(att, self.base_url)
        return {"upload": {"token": token, "attachment": out, "attachments": [out]}}

    def _consume(self, tokens: list[Any]) -> list[dict[str, Any]]:
        for token in tokens:
            upload = self.uploads.get(str(token))
            if upload is None or upload["consumed"]:
                raise ApiError(422, error_body("RecordInvalid", "Record validation errors", {
                    "uploads": [{"description": f"Upload token {token} is invalid",
                                 "error": "InvalidValue"}]}))
        attachments: list[dict[str, Any]] = []
        for token in tokens:
            self.uploads[str(token)]["consumed"] = True
            attachments += self.uploads[str(token)]["attachments"]
        return attachments

    # -- tickets ------------------------------------------------------------------------------
    def _ticket(self, ticket_id: int) -> dict[str, Any]:
        if ticket_id not in self.tickets:
            raise ApiError(404, error_body("RecordNotFound", "Not found"))
        return self.tickets[ticket_id]

    def _create(self, call: Call) -> tuple[int, Any, dict[str, str]]:
        body = self._checked(call, "POST", "/api/v2/tickets")
        key = call.headers.get("Idempotency-Key")
        fingerprint = hashlib.sha256(call.body).hexdigest()
        for stale in [k for k, v in self.idempotency.items()
                      if v["created_at"] + IDEMPOTENCY_TTL <= self.now]:
            del self.idempotency[stale]
        if key is not None and key in self.idempotency:
            seen = self.idempotency[key]
            if seen["fingerprint"] != fingerprint:
                raise ApiError(400, error_body(
                    "IdempotentRequestError",
                    "Request parameters don't match the given idempotency key"))
            return seen["status"], seen["answer"], {"x-idempotency-lookup": "hit"}
        req = body["ticket"]
        if not isinstance(req.get("requester"), dict) or "email" not in req["requester"]:
            self._violation(call, "a ticket without requester email: the integration user "
                            "would become the requester")
            raise ApiError(422, error_body("RecordInvalid", "Record validation errors"))
        requester = self._find_or_create_user(req["requester"]["email"],
                                              req["requester"].get("name"))
        source = req.get("via_followup_source_id")
        if source is not None and self.tickets.get(source, {}).get("status") != "closed":
            raise ApiError(422, error_body("RecordInvalid", "Record validation errors", {
                "via_followup_source_id": [{"description": "is not a closed ticket",
                                            "error": "InvalidValue"}]}))
        self._touch(None)
        ticket: dict[str, Any] = {
            "id": self._new_id(), "subject": req.get("subject", ""),
            "status": req.get("status") or "new", "priority": req.get("priority"),
            "type": req.get("type"), "group_id": req.get("group_id"),
            "brand_id": req.get("brand_id"), "external_id": req.get("external_id"),
            "requester_id": requester["id"], "submitter_id": requester["id"],
            "tags": _tags(req.get("tags")), "custom_fields": list(req.get("custom_fields") or []),
            "email_cc_ids": [self._find_or_create_user(cc["user_email"], None)["id"]
                             for cc in req.get("email_ccs") or []],
            "via_followup_source_id": source, "created_at": self.now, "updated_at": self.now,
            "comments": [], "audits": [],
            "is_public": bool(req["comment"].get("public", True)),
        }
        audit = self._comment(ticket, req["comment"], requester["id"], req.get("metadata"))
        ticket["description"] = ticket["comments"][0]["plain"]
        self.tickets[ticket["id"]] = ticket
        if self.on_ticket_created is not None:
            self.on_ticket_created(ticket)
        answer = {"ticket": ticket_resource(ticket, self.base_url),
                  "audit": self._audit_out(audit)}
        headers = {"Location": f"{self.base_url}/api/v2/tickets/{ticket['id']}.json"}
        if key is not None:
            self.idempotency[key] = {"fingerprint": fingerprint, "status": 201, "answer": answer,
                                     "created_at": self.now}
            headers["x-idempotency-lookup"] = "miss"
        return 201, answer, headers

    def _update(self, call: Call, ticket: dict[str, Any]) -> dict[str, Any]:
        req = self._checked(call, "PUT", "/api/v2/tickets/{ticket_id}")["ticket"]
        if ticket["status"] == "closed":
            raise ApiError(422, closed_ticket_error())
        if req.get("safe_update") and req.get("updated_stamp") != iso(ticket["updated_at"]):
            raise ApiError(409, error_body(
                "UpdateConflict", "Safe Update prevented the update due to outdated ticket "
                "data. Please fetch the latest ticket data and try again."))
        author = INTEGRATION_USER_ID
        comment = req.get("comment")
        if isinstance(comment, dict) and comment.get("author_id") is not None:
            if comment["author_id"] not in self.users:
                raise ApiError(422, error_body("RecordInvalid", "Record validation errors", {
                    "author_id": [{"description": "Author: is invalid",
                                   "error": "InvalidValue"}]}))
            author = comment["author_id"]
        for name in ("status", "priority", "subject", "type", "group_id"):
            if name in req:
                ticket[name] = req[name]
        if "tags" in req:
            ticket["tags"] = _tags(req["tags"])
        self._touch(ticket)
        if isinstance(comment, dict):
            audit = self._comment(ticket, comment, author, req.get("metadata"))
        else:
            audit = self._audit(ticket, author, [], req.get("metadata"))
        return {"ticket": ticket_resource(ticket, self.base_url),
                "audit": self._audit_out(audit)}

    def _comment(self, ticket: dict[str, Any], comment: Mapping[str, Any], author: int,
                 metadata: Any) -> dict[str, Any]:
        html = comment.get("html_body")
        plain = comment.get("body") if html is None else re.sub(r"<[^>]+>", " ", html)
        if not str(plain or "").strip():
            raise ApiError(422, error_body("RecordInvalid", "Record validation errors", {
                "base": [{"description": "Comment: cannot be blank", "error": "BlankValue"}]}))
        stored = {"id": self._new_id(), "author_id": author, "body": comment.get("body"),
                  "html_body": html, "plain": " ".join(str(plain).split()),
                  "public": bool(comment.get("public", True)),
                  "attachments": self._consume(list(comment.get("uploads") or [])),
                  "metadata": metadata}
        ticket["comments"].append(stored)
        if stored["public"]:
            ticket["is_public"] = True
        event = {"id": self._new_id(), "type": "Comment", "author_id": author,
                 "body": stored["plain"], "public": stored["public"]}
        return self._audit(ticket, author, [event], metadata)

    def _audit(self, ticket: dict[str, Any], author: int, events: list[dict[str, Any]],
               metadata: Any) -> dict[str, Any]:
        audit = {"id": self._new_id(), "ticket_id": ticket["id"], "author_id": author,
                 "created_at": self.now, "events": events,
                 "custom": metadata if isinstance(metadata, dict) else {}}
        ticket["audits"].append(audit)
        return audit

    def _audit_out(self, audit: Mapping[str, Any]) -> dict[str, Any]:
        return {"id": audit["id"], "ticket_id": audit["ticket_id"],
                "author_id": audit["author_id"], "created_at": iso(audit["created_at"]),
                "events": [dict(e) for e in audit["events"]],
                "metadata": {"custom": dict(audit["custom"]),
                             "system": {"client": "postmaster-bridge",
                                        "ip_address": "127.0.0.1"}},
                "via": {"channel": "api", "source": {"from": {}, "to": {}, "rel": None}}}

    def _list_tickets(self, call: Call) -> dict[str, Any]:
        if "external_id" not in call.query:
            self._violation(call, "listing all tickets instead of looking one up by external_id")
        # Zendesk's list endpoints do not show archived tickets.
        found = [t for t in self.ticket_list()
                 if t.get("external_id") == call.query.get("external_id")
                 and not t.get("archived")]
        out = self._page([ticket_resource(t, self.base_url) for t in found], "tickets")
        if call.query.get("include") == "users":
            out["users"] = self._sideload(found)
        return out

    # -- users and the Ticket Import API ------------------------------------------------------
    def _create_or_update_user(self, call: Call) -> tuple[int, Any, dict[str, str]]:
        req = self._checked(call, "POST", "/api/v2/users/create_or_update")["user"]
        email = req.get("email")
        if not email:
            self._violation(call, "create_or_update without an email: a duplicate user")
            raise ApiError(422, error_body("RecordInvalid", "Record validation errors"))
        known = any(u["email"].lower() == email.lower() for u in self.users.values())
        user = self._find_or_create_user(email, req.get("name"))
        if not req.get("skip_verify_email"):
            user["verification_mail_sent"] = True
        headers = {"Location": f"{self.base_url}/api/v2/users/{user['id']}.json"}
        return (200 if known else 201), {"user": user_resource(user, self.base_url)}, headers

    def _import_one(self, call: Call) -> dict[str, Any]:
        body = self._checked(call, "POST", "/api/v2/imports/tickets")
        archive = call.query.get("archive_immediately") == "true"
        ticket = self._import_ticket(call, body["ticket"], archive)
        return {"ticket": ticket_resource(ticket, self.base_url)}

    def _import_many(self, call: Call) -> dict[str, Any]:
        body = self._checked(call, "POST", "/api/v2/imports/tickets/create_many")
        tickets = body.get("tickets") or []
        if not 1 <= len(tickets) <= 100:
            raise ApiError(400, error_body("InvalidValue", "between 1 and 100 tickets"))
        archive = call.query.get("archive_immediately") == "true"
        # Zendesk does the work in a background job; here it is done now, and the job shows
        # queued in this answer and completed to whoever polls it.
        results = [{"id": self._import_ticket(call, t, archive)["id"], "index": i}
                   for i, t in enumerate(tickets)]
        job_id = hashlib.sha256(f"job{self._new_id()}".encode()).hexdigest()[:32]
        self.jobs[job_id] = {"id": job_id, "results": results, "looks": 0,
                             "job_type": "bulk_import_tickets"}
        return {"job_status": self._job_out(self.jobs[job_id], "queued")}

    def _job_status(self, job_id: str) -> dict[str, Any]:
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, error_body("RecordNotFound", "Not found"))
        job["looks"] += 1
        return {"job_status": self._job_out(job, "completed")}

    def _job_out(self, job: Mapping[str, Any], status: str) -> dict[str, Any]:
        total = len(job["results"])
        done = {"queued": 0, "working": total // 2, "completed": total}[status]
        out: dict[str, Any] = {
            "id": job["id"], "job_type": job["job_type"], "status": status, "total": total,
            "progress": done, "url": f"{self.base_url}/api/v2/job_statuses/{job['id']}.json",
            "message": "Completed" if status == "completed" else None,
            "results": list(job["results"]) if status == "completed" else None}
        return out

    def _import_ticket(self, call: Call, req: Mapping[str, Any],
                       archive: bool) -> dict[str, Any]:
        """A ticket as the Ticket Import API makes it: dates as given, no triggers."""
        requester_id = req.get("requester_id")
        if requester_id not in self.users:
            self._violation(call, f"imported ticket's requester_id {requester_id!r} is no user")
            raise ApiError(422, error_body("RecordInvalid", "Record validation errors"))
        comments = req.get("comments") or []
        if not comments:
            self._violation(call, "an imported ticket without comments")
            raise ApiError(422, error_body("RecordInvalid", "Record validation errors"))
        self._touch(None)
        created = self._import_time(call, req.get("created_at"))
        status = req.get("status") or "open"
        ticket: dict[str, Any] = {
            "id": self._new_id(), "subject": req.get("subject", ""), "status": status,
            "priority": req.get("priority"), "type": req.get("type"),
            "group_id": req.get("group_id"), "brand_id": req.get("brand_id"),
            "external_id": req.get("external_id"), "requester_id": requester_id,
            "submitter_id": requester_id, "tags": _tags(req.get("tags")),
            "custom_fields": list(req.get("custom_fields") or []),
            "email_cc_ids": [self._find_or_create_user(cc["user_email"], None)["id"]
                             for cc in req.get("email_ccs") or []],
            "created_at": created,
            "updated_at": self._import_time(call, req.get("updated_at") or req.get("created_at")),
            "solved_at": req.get("solved_at"), "comments": [], "audits": [],
            "is_public": False, "imported": True,
            "archived": archive and status == "closed",
        }
        for comment in comments:
            author = comment.get("author_id", INTEGRATION_USER_ID)
            if author not in self.users:
                self._violation(call, f"comment author_id {author!r} is no user")
                raise ApiError(422, error_body("RecordInvalid", "Record validation errors"))
            self._comment(ticket, comment, author, None)
            ticket["comments"][-1]["created_at"] = self._import_time(call,
                                                                     comment.get("created_at"))
        ticket["description"] = ticket["comments"][0]["plain"]
        self.tickets[ticket["id"]] = ticket
        if self.on_ticket_created is not None:
            self.on_ticket_created(ticket)
        return ticket

    def _import_time(self, call: Call, value: Any) -> float:
        if value is None:
            return self.now
        try:
            stamp = datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            self._violation(call, f"import time stamp {value!r} is not ISO 8601 UTC")
            raise ApiError(422, error_body("RecordInvalid", "Record validation errors")) \
                from None
        if stamp.year < 1970:
            self._violation(call, f"import time stamp {value!r} before 1970")
        return stamp.timestamp()

    # -- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _page(items: list[Any], key: str) -> dict[str, Any]:
        return {key: items, "count": len(items), "next_page": None, "previous_page": None}

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def _touch(self, ticket: dict[str, Any] | None) -> None:
        self.now += 1.0
        if ticket is not None:
            ticket["updated_at"] = self.now


def _tags(tags: Any) -> list[str]:
    out: list[str] = []
    for tag in tags or []:
        for part in str(tag).lower().split():
            if part not in out:
                out.append(part)
    return out


@contextlib.contextmanager
def fake_zendesk(base_url: str = BASE_URL) -> Iterator[FakeZendesk]:
    """A FakeZendesk serving ``requests`` for the duration of the block; on leaving, fails
    when the bridge broke any rule of Zendesk's API."""
    fake = FakeZendesk(base_url)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.install(rsps)
        yield fake
    fake.assert_clean()


# -- the bridge under test, assembled as `postmaster-bridge run` assembles it ------------------
# (shared by tests/test_ingest_*.py: config files, customer mail, store + adapter + pipelines)

CUSTOMER = "Mario Rossi <mario.rossi@example.org>"
SUPPORT_ADDRESS = "support@example.com"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(64))
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def account(dovecot: DovecotServer, user: MailUser, name: str, protocol: str = "imap",
            **extra: Any) -> dict[str, Any]:
    """An ``accounts:`` entry for ``user`` on the test Dovecot (plain port, loopback).
    ``password`` is the plain password: ``write_config`` moves it into a file."""
    entry: dict[str, Any] = {
        "name": name, "protocol": protocol, "host": dovecot.host,
        "port": dovecot.imap_port if protocol == "imap" else dovecot.pop3_port,
        "security": "none", "username": user.name, "password": user.password,
        "timeout": 10, "own_addresses": [SUPPORT_ADDRESS],
    }
    entry.update(extra)
    return entry


def zendesk_host(**extra: Any) -> dict[str, Any]:
    """The ``host:`` section for the fake (``client_secret`` moved into a file)."""
    # One mail at a time: these tests assert ticket ids, log order and call sequences that
    # only one-at-a-time makes deterministic. tests/test_inflight.py and the crash test run
    # several mails at once (the default, host.max_in_flight: 8).
    host: dict[str, Any] = {"type": "zendesk", "url": BASE_URL, "timeout": 5,
                            "max_attempts": 3, "max_in_flight": 1,
                            "auth": {"type": "oauth", "client_id": CLIENT_ID,
                                     "client_secret": CLIENT_SECRET}}
    host.update(extra)
    return host


def write_config(directory: Path, accounts: Sequence[Mapping[str, Any]], *,
                 host: Mapping[str, Any] | None = None, **top: Any) -> Path:
    """config.yaml in ``directory``; secrets go into ``*_file`` files next to it, since the
    loader refuses secrets written in the config itself."""
    secrets_dir = directory / "secrets"
    secrets_dir.mkdir(exist_ok=True)

    def to_file(section: dict[str, Any], key: str, stem: str) -> None:
        if key in section:
            path = secrets_dir / stem
            path.write_text(str(section.pop(key)) + "\n")
            section[f"{key}_file"] = str(path)

    entries = []
    for entry in accounts:
        entry = dict(entry)
        to_file(entry, "password", f"{entry['name']}.password")
        entries.append(entry)
    host_section = dict(host if host is not None else zendesk_host())
    if isinstance(host_section.get("auth"), dict):
        host_section["auth"] = dict(host_section["auth"])
        to_file(host_section["auth"], "client_secret", "zendesk.secret")
    data = {"store": {"path": str(directory / "ledger.sqlite3")}, "host": host_section,
            "accounts": entries, **top}
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def customer_mail(subject: str, message_id: str, *, sender: str = CUSTOMER,
                  to: str = SUPPORT_ADDRESS, text: str | None = None, html: str | None = None,
                  inline_png: bool = False, pdf: bool = False,
                  in_reply_to: str | None = None, padding: int = 0,
                  headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A customer's mail as a mail client writes it (CRLF line ends).

    ``inline_png`` puts a logo into the HTML by ``cid:``; ``pdf`` attaches a PDF; ``padding``
    adds that many bytes of quoted history to the text (for size and batching tests).
    """
    msg = EmailMessage()
    for name, value in headers:
        msg[name] = value
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Mon, 02 Mar 2026 10:00:00 +0100"
    msg["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
        msg["References"] = f"<{in_reply_to}>"
    body = text if text is not None else f"Buongiorno,\nscrivo per: {subject}.\n\nMario Rossi\n"
    if padding:
        line = "> testo della conversazione precedente, riportato per intero\n"
        body += line * (padding // len(line) + 1)
    msg.set_content(body)
    if html is not None or inline_png:
        page = html or f"<p>Buongiorno,</p><p>scrivo per: {subject}.</p>"
        if inline_png:
            page += '<p><img src="cid:logo@example.org" alt="logo"></p>'
        msg.add_alternative(page, subtype="html")
        if inline_png:
            msg.get_payload()[1].add_related(PNG, "image", "png", cid="<logo@example.org>")
    if pdf:
        msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="modulo.pdf")
    return msg.as_bytes(policy=email.policy.SMTP)


class Bridge:
    """Store, Zendesk adapter, rules and one pipeline per account, built from a config
    file as the CLI builds them; the adapter's sleeps are recorded, never waited."""

    def __init__(self, config_path: Path) -> None:
        self.config: Config = load_config(config_path)
        self.store = open_store(self.config.store)
        self.sleeps: list[float] = []
        #: Added to the adapter's wall clock, to let hours pass between polls.
        self.wall_offset = 0.0
        # Recorded sleeps pass on the adapter's monotonic clock too, so its pacing sees the
        # time a real sleep would have taken.
        self.host = ZendeskAdapter(ZendeskSettings.from_host_config(self.config.host),
                                   sleep=self.sleeps.append,
                                   clock=lambda: time.monotonic() + sum(self.sleeps),
                                   wall_clock=lambda: time.time() + self.wall_offset)
        self.rules = load_rules(self.config)
        self._pollers: list[AccountPoller] = []
        self._steady: dict[str, AccountPoller] = {}

    def pipeline(self, account: AccountConfig) -> Pipeline:
        return Pipeline(account, self.config.host, self.store, self.host, self.rules)

    def poller(self, name: str | None = None, *, account: AccountConfig | None = None,
               mailbox_factory: MailboxFactory = open_mailbox) -> AccountPoller:
        """A new poller of account ``name`` (default: the first), or of ``account`` given whole
        (the same account reached another way, e.g. through a proxy). Closed by ``close``."""
        acc = account or (self.config.account(name) if name else self.config.accounts[0])
        poller = AccountPoller(acc, self.store, self.pipeline(acc),
                               mailbox_factory=mailbox_factory)
        self._pollers.append(poller)
        return poller

    def poll(self, name: str | None = None, *, account: AccountConfig | None = None,
             mailbox_factory: MailboxFactory | None = None) -> AccountSummary:
        """One pass of the account's long-lived poller, which keeps its IMAP connection open
        between passes as ``run`` does; with ``account`` or ``mailbox_factory``, one pass of a
        poller made for it, closed afterwards."""
        if account is None and mailbox_factory is None:
            key = name or self.config.accounts[0].name
            if key not in self._steady:
                self._steady[key] = self.poller(key)
            return self._steady[key].poll()
        poller = self.poller(name, account=account,
                             mailbox_factory=mailbox_factory or open_mailbox)
        try:
            return poller.poll()
        finally:
            poller.close()

    def service(self) -> Service:
        """All accounts, as ``run --once`` runs them (connections closed after the pass)."""
        return Service([self.poller(a.name) for a in self.config.accounts])

    def records(self, name: str | None = None) -> list[MessageRecord]:
        return self.store.messages(name)

    def close(self) -> None:
        for poller in self._pollers:
            poller.close()
        self.store.close()
