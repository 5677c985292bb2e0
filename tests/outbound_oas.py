"""OAS checks for the Webhooks API, and an OAS-checked Zendesk fake for the outbound tests.

tests/zendesk_oas.py covers support-api.yaml; the webhooks live in a second document
(webhooks-api.yaml, paths without the ``/api/v2`` prefix). ``validate_webhook_request`` and
``validate_webhook_response`` do for it what zendesk_oas does for the Support API.

``FakeZendesk`` answers, through ``responses`` callbacks, every call the outbound side makes:
tickets, comments, users, search, attachment downloads (with the redirect to file storage),
internal-note updates, webhooks, trigger categories, triggers and macros. It keeps state, so
an install followed by a second install sees what the first made. Every JSON request body the
bridge sends and every JSON answer the fake gives is validated against Zendesk's OAS first: a
mock that answers what Zendesk never would proves nothing.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import responses
import yaml
from openapi_schema_validator import OAS30ReadValidator, OAS30WriteValidator, oas30_format_checker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4
from zendesk_double import (
    attachment_resource,
    comment_resource,
    iso,
    ticket_resource,
    user_resource,
)
from zendesk_oas import (
    OASValidationError,
    check_fake,
    spec_dir,
    validate_error,
    validate_request,
    validate_response,
)

_WEBHOOKS_URI = "urn:zendesk:webhooks-api"
BASE = "https://acme.zendesk.com"
FILES = "https://files.zdusercontent.example"
T0 = 1_790_000_000


@functools.cache
def load_webhooks_spec() -> dict[str, Any]:
    """The Webhooks API description (small; parsed once per run, no errata needed)."""
    with (spec_dir() / "webhooks-api.yaml").open("rb") as fh:
        return yaml.safe_load(fh)


@functools.cache
def _webhooks_registry() -> Registry:
    spec = load_webhooks_spec()
    return Registry().with_resource(
        _WEBHOOKS_URI, Resource.from_contents(spec, default_specification=DRAFT4))


def _webhooks_template(path: str) -> str:
    bare = path.split("?", 1)[0]
    bare = bare[len("/api/v2"):] if bare.startswith("/api/v2") else bare
    paths = load_webhooks_spec()["paths"]
    if bare in paths:
        return bare
    for template in sorted(paths, key=lambda t: t.count("{")):
        regex = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.match(f"^{regex}$", bare):
            return template
    raise LookupError(f"no path in the Webhooks OAS matches {path!r}")


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _check(kind: str, pointer: str, body: Any, what: str) -> None:
    cls = OAS30WriteValidator if kind == "write" else OAS30ReadValidator
    validator = cls({"$ref": f"{_WEBHOOKS_URI}#/{pointer}"}, registry=_webhooks_registry(),
                    format_checker=oas30_format_checker)
    errors = list(validator.iter_errors(body))
    if errors:
        lines = [f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors[:20]]
        raise OASValidationError(f"{what} does not match the Webhooks OAS:\n  "
                                 + "\n  ".join(lines))


def validate_webhook_request(method: str, path: str, body: Any) -> None:
    template = _webhooks_template(path)
    op = load_webhooks_spec()["paths"][template][method.lower()]
    if "application/json" not in ((op.get("requestBody") or {}).get("content") or {}):
        raise LookupError(f"the Webhooks OAS describes no JSON body for {method} {template}")
    _check("write", _pointer("paths", template, method.lower(), "requestBody", "content",
                             "application/json", "schema"), body, f"request {method} {path}")


def validate_webhook_response(method: str, path: str, status: int, body: Any) -> None:
    template = _webhooks_template(path)
    responses_ = load_webhooks_spec()["paths"][template][method.lower()]["responses"]
    answer = responses_.get(str(status))
    if answer is None:
        raise LookupError(f"the Webhooks OAS has no {status} answer for {method} {template}")
    content = (answer.get("content") or {}).get("application/json")
    if content is None:
        if body not in (None, b"", ""):
            raise OASValidationError(f"{method} {path} {status} has no body in the OAS")
        return
    _check("read", _pointer("paths", template, method.lower(), "responses", str(status),
                            "content", "application/json", "schema"), body,
           f"response {method} {path} {status}")


# -- the fake ----------------------------------------------------------------------------------

@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeZendesk:
    """Zendesk state plus the ``responses`` callbacks that serve it."""

    rsps: responses.RequestsMock
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    tickets: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    webhooks: dict[str, dict[str, Any]] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    categories: dict[str, dict[str, Any]] = field(default_factory=dict)
    triggers: dict[int, dict[str, Any]] = field(default_factory=dict)
    macros: dict[int, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    faults: list[tuple[str, str, int, Any]] = field(default_factory=list)
    #: Zendesk ignores the signing secret given at creation and picks one (when set).
    own_secret: str | None = None
    _ids: itertools.count = field(default_factory=lambda: itertools.count(9001))

    def __post_init__(self) -> None:
        routes: list[tuple[str, str, Callable[..., tuple[int, Any]]]] = [
            ("GET", r"/api/v2/tickets/(\d+)", self._get_ticket),
            ("PUT", r"/api/v2/tickets/(\d+)", self._put_ticket),
            ("GET", r"/api/v2/tickets/(\d+)/comments", self._get_comments),
            ("GET", r"/api/v2/tickets/(\d+)/audits", self._get_audits),
            ("GET", r"/api/v2/users/(\d+)", self._get_user),
            ("GET", r"/api/v2/search", self._search),
            ("GET", r"/api/v2/webhooks", self._list_webhooks),
            ("POST", r"/api/v2/webhooks", self._create_webhook),
            ("PATCH", r"/api/v2/webhooks/([A-Z0-9]+)", self._patch_webhook),
            ("DELETE", r"/api/v2/webhooks/([A-Z0-9]+)", self._delete_webhook),
            ("GET", r"/api/v2/webhooks/([A-Z0-9]+)/signing_secret", self._get_secret),
            ("GET", r"/api/v2/trigger_categories", self._list_categories),
            ("POST", r"/api/v2/trigger_categories", self._create_category),
            ("DELETE", r"/api/v2/trigger_categories/(\d+)", self._delete_category),
            ("GET", r"/api/v2/triggers", self._list_triggers),
            ("POST", r"/api/v2/triggers", self._create_trigger),
            ("PUT", r"/api/v2/triggers/(\d+)", self._update_trigger),
            ("DELETE", r"/api/v2/triggers/(\d+)", self._delete_trigger),
            ("GET", r"/api/v2/macros", self._list_macros),
            ("POST", r"/api/v2/macros", self._create_macro),
            ("PUT", r"/api/v2/macros/(\d+)", self._update_macro),
            ("DELETE", r"/api/v2/macros/(\d+)", self._delete_macro),
        ]
        for method, pattern, handler in routes:
            self.rsps.add_callback(method, re.compile(re.escape(BASE) + pattern + r"(\?.*)?$"),
                                   callback=self._wrap(method, handler))
        self.rsps.add_callback("GET", re.compile(re.escape(BASE) + r"/attachments/token/.*"),
                               callback=self._attachment_redirect)
        self.rsps.add_callback("GET", re.compile(re.escape(FILES) + r"/.*"),
                               callback=self._file)

    # -- plumbing ------------------------------------------------------------------------------
    def _wrap(self, method: str, handler: Callable[..., tuple[int, Any]]) -> Callable[..., Any]:
        def callback(request: Any) -> tuple[int, dict[str, str], bytes]:
            parts = urlsplit(request.url)
            body = json.loads(request.body) if request.body else None
            self.calls.append(Call(method, parts.path, parse_qs(parts.query),
                                   dict(request.headers), body))
            webhook = parts.path.startswith("/api/v2/webhooks")
            if body is not None:
                if webhook:
                    check_fake(validate_webhook_request, method, parts.path, body)
                else:
                    check_fake(validate_request, method, parts.path, body)
            for f_method, f_regex, f_status, f_body in list(self.faults):
                if f_method == method and re.search(f_regex, parts.path):
                    self.faults.remove((f_method, f_regex, f_status, f_body))
                    check_fake(validate_error, f_body)
                    return f_status, {"Content-Type": "application/json"}, \
                        json.dumps(f_body).encode()
            args = re.findall(r"/(\d+|[A-Z0-9]{20,})(?=/|$)", parts.path)
            status, answer = handler(*args, query=parse_qs(parts.query), body=body)
            if webhook:
                check_fake(validate_webhook_response, method, parts.path, status, answer)
            elif status >= 400:
                check_fake(validate_error, answer)
            else:
                check_fake(validate_response, method, parts.path, status, answer)
            data = json.dumps(answer).encode() if answer is not None else b""
            return status, {"Content-Type": "application/json"}, data

        return callback

    def fail_next(self, method: str, path_regex: str, status: int, body: Any) -> None:
        self.faults.append((method, path_regex, status, body))

    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.method != "GET"]

    def calls_to(self, method: str, path_regex: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and re.search(path_regex, c.path)]

    # -- seeding -------------------------------------------------------------------------------
    def add_user(self, user_id: int, email: str, name: str, role: str = "end-user") -> None:
        self.users[user_id] = {"id": user_id, "email": email, "name": name, "role": role,
                               "created_at": T0}

    def add_ticket(self, ticket_id: int, subject: str, requester_id: int, *,
                   tags: tuple[str, ...] = (), custom_fields: list[dict[str, Any]] | None = None,
                   status: str = "open") -> None:
        self.tickets[ticket_id] = {"id": ticket_id, "created_at": T0, "updated_at": T0,
                                   "subject": subject, "status": status,
                                   "requester_id": requester_id, "tags": list(tags),
                                   "custom_fields": custom_fields or []}
        self.comments.setdefault(ticket_id, [])

    def add_comment(self, ticket_id: int, author_id: int, text: str, *, html: str | None = None,
                    public: bool = True,
                    files: tuple[tuple[str, str, bytes], ...] = ()) -> int:
        comment_id = next(self._ids)
        attachments = []
        for name, ctype, data in files:
            token = f"tok{next(self._ids)}"
            self.files[token] = data
            attachments.append({"id": next(self._ids), "file_name": name, "content_type": ctype,
                                "size": len(data), "token": token})
        self.comments[ticket_id].append({
            "id": comment_id, "author_id": author_id, "plain_body": text,
            "html_body": html or f"<div class=\"zd-comment\"><p>{text}</p></div>",
            "public": public, "audit_id": next(self._ids), "created_at": T0 + comment_id,
            "attachments": attachments})
        return comment_id

    def notes(self, ticket_id: int) -> list[dict[str, Any]]:
        return [c for c in self.comments.get(ticket_id, []) if not c["public"]]

    def ticket_tags(self, ticket_id: int) -> list[str]:
        return list(self.tickets[ticket_id]["tags"])

    # -- tickets -------------------------------------------------------------------------------
    def _ticket_or_404(self, tid: str) -> dict[str, Any] | None:
        return self.tickets.get(int(tid))

    def _get_ticket(self, tid: str, *, query: Any, body: Any) -> tuple[int, Any]:
        ticket = self._ticket_or_404(tid)
        if ticket is None:
            return 404, {"error": "RecordNotFound", "description": "Not found"}
        answer: dict[str, Any] = {"ticket": ticket_resource(ticket, BASE)}
        if "users" in (query.get("include") or [""])[0]:
            user = self.users.get(ticket["requester_id"])
            answer["users"] = [user_resource(user, BASE)] if user else []
        return 200, answer

    def _put_ticket(self, tid: str, *, query: Any, body: Any) -> tuple[int, Any]:
        ticket = self.tickets[int(tid)]
        update = body["ticket"]
        if update.get("safe_update") and update.get("updated_stamp") != iso(ticket["updated_at"]):
            return 409, {"error": "UpdateConflict", "description": "stale"}
        comment = update.get("comment") or {}
        if comment:
            comment_id = next(self._ids)
            text = comment.get("body") or re.sub(r"<[^>]+>", "", comment.get("html_body", ""))
            self.comments[int(tid)].append({
                "id": comment_id, "author_id": 100, "plain_body": text,
                "html_body": comment.get("html_body") or f"<p>{text}</p>",
                "public": bool(comment.get("public", True)), "audit_id": next(self._ids),
                "created_at": T0 + comment_id, "attachments": [],
                "metadata": update.get("metadata") or {}})
        if "tags" in update:
            ticket["tags"] = list(update["tags"])
        ticket["updated_at"] += 1
        audit = {"id": next(self._ids), "ticket_id": int(tid), "author_id": 100,
                 "created_at": iso(ticket["updated_at"]),
                 "metadata": {"custom": update.get("metadata") or {}, "system": {}},
                 "events": []}
        return 200, {"ticket": ticket_resource(ticket, BASE), "audit": audit}

    def _get_comments(self, tid: str, *, query: Any, body: Any) -> tuple[int, Any]:
        items = list(self.comments.get(int(tid), []))
        if (query.get("sort_order") or ["asc"])[0] == "desc":
            items.reverse()
        authors = {c["author_id"] for c in items}
        answer: dict[str, Any] = {
            "comments": [comment_resource(c, BASE) for c in items],
            "next_page": None, "previous_page": None, "count": len(items)}
        if "users" in (query.get("include") or [""])[0]:
            answer["users"] = [user_resource(self.users[a], BASE) for a in sorted(authors)
                               if a in self.users]
        return 200, answer

    def _get_audits(self, tid: str, *, query: Any, body: Any) -> tuple[int, Any]:
        audits = [{"id": c["audit_id"], "ticket_id": int(tid), "author_id": c["author_id"],
                   "created_at": iso(c["created_at"]),
                   "metadata": {"custom": c.get("metadata") or {}, "system": {}},
                   "events": []} for c in self.comments.get(int(tid), [])]
        return 200, {"audits": audits, "next_page": None, "previous_page": None,
                     "count": len(audits)}

    def _get_user(self, uid: str, *, query: Any, body: Any) -> tuple[int, Any]:
        user = self.users.get(int(uid))
        if user is None:
            return 404, {"error": "RecordNotFound", "description": "Not found"}
        return 200, {"user": user_resource(user, BASE)}

    def _search(self, *, query: Any, body: Any) -> tuple[int, Any]:
        text = (query.get("query") or [""])[0]
        match = re.search(r"tags:(\S+)", text)
        tag = match.group(1) if match else ""
        hits = [{"id": t["id"], "result_type": "ticket", "updated_at": iso(t["updated_at"]),
                 "url": f"{BASE}/api/v2/tickets/{t['id']}.json"}
                for t in self.tickets.values() if tag in t["tags"] and t["status"] != "closed"]
        return 200, {"results": hits, "count": len(hits), "next_page": None,
                     "previous_page": None, "facets": None}

    def _attachment_redirect(self, request: Any) -> tuple[int, dict[str, str], bytes]:
        token = urlsplit(request.url).path.split("/")[3]
        self.calls.append(Call("GET", urlsplit(request.url).path, {}, dict(request.headers),
                               None))
        return 302, {"Location": f"{FILES}/{token}/{quote('file')}"}, b""

    def _file(self, request: Any) -> tuple[int, dict[str, str], bytes]:
        token = urlsplit(request.url).path.split("/")[1]
        self.calls.append(Call("GET", urlsplit(request.url).path, {}, dict(request.headers),
                               None))
        if token not in self.files:
            return 404, {}, b""
        return 200, {"Content-Type": "application/octet-stream"}, self.files[token]

    # -- webhooks ------------------------------------------------------------------------------
    def _webhook(self, hook: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in hook.items() if k != "signing_secret"}

    def _list_webhooks(self, *, query: Any, body: Any) -> tuple[int, Any]:
        needle = (query.get("filter[name_contains]") or [""])[0]
        items = [self._webhook(h) for h in self.webhooks.values() if needle in h["name"]]
        return 200, {"webhooks": items, "meta": {"has_more": False}, "links": {}}

    def _create_webhook(self, *, query: Any, body: Any) -> tuple[int, Any]:
        hook_id = f"01HWEBHOOK{next(self._ids):016d}"
        hook = dict(body["webhook"])
        secret = (hook.pop("signing_secret", None) or {}).get("secret")
        self.secrets[hook_id] = self.own_secret or secret or "zendesk-made-secret-0000"
        hook.update({"id": hook_id, "created_at": iso(T0), "updated_at": iso(T0),
                     "created_by": "100", "updated_by": "100"})
        self.webhooks[hook_id] = hook
        return 201, {"webhook": self._webhook(hook)}

    def _patch_webhook(self, hook_id: str, *, query: Any, body: Any) -> tuple[int, Any]:
        self.webhooks[hook_id].update(body["webhook"])
        return 204, None

    def _delete_webhook(self, hook_id: str, *, query: Any, body: Any) -> tuple[int, Any]:
        if any(hook_id in json.dumps(t["actions"]) for t in self.triggers.values()):
            return 400, {"errors": [{"code": "WebhookInUse", "title": "used by a trigger"}]}
        self.webhooks.pop(hook_id, None)
        return 204, None

    def _get_secret(self, hook_id: str, *, query: Any, body: Any) -> tuple[int, Any]:
        return 200, {"signing_secret": {"algorithm": "SHA256", "secret": self.secrets[hook_id]}}

    # -- categories, triggers, macros ----------------------------------------------------------
    def _list_categories(self, *, query: Any, body: Any) -> tuple[int, Any]:
        return 200, {"trigger_categories": list(self.categories.values()),
                     "meta": {"has_more": False}, "links": {}}

    def _create_category(self, *, query: Any, body: Any) -> tuple[int, Any]:
        cid = str(next(self._ids))
        self.categories[cid] = {"id": cid, "name": body["trigger_category"]["name"],
                                "position": len(self.categories), "created_at": iso(T0),
                                "updated_at": iso(T0)}
        return 200, {"trigger_category": self.categories[cid]}

    def _delete_category(self, cid: str, *, query: Any, body: Any) -> tuple[int, Any]:
        if any(str(t.get("category_id")) == cid for t in self.triggers.values()):
            return 400, {"errors": [{"code": "TriggerCategoryNotEmpty", "title": "not empty"}]}
        self.categories.pop(cid, None)
        return 204, None

    def _rule(self, rule_id: int, data: dict[str, Any], kind: str) -> dict[str, Any]:
        out = {"id": rule_id, "url": f"{BASE}/api/v2/{kind}/{rule_id}.json",
               "created_at": iso(T0), "updated_at": iso(T0), "position": rule_id % 1000,
               "active": True, "default": False, "description": None}
        out.update(data)
        if kind == "triggers":
            out.setdefault("raw_title", out.get("title"))
            if out.get("description") is None:
                out["description"] = ""
        return out

    def add_trigger(self, data: dict[str, Any]) -> int:
        tid = next(self._ids)
        self.triggers[tid] = self._rule(tid, data, "triggers")
        return tid

    def _list_triggers(self, *, query: Any, body: Any) -> tuple[int, Any]:
        return 200, {"triggers": list(self.triggers.values()), "count": len(self.triggers),
                     "next_page": None, "previous_page": None}

    def _create_trigger(self, *, query: Any, body: Any) -> tuple[int, Any]:
        tid = self.add_trigger(body["trigger"])
        return 201, {"trigger": self.triggers[tid]}

    def _update_trigger(self, tid: str, *, query: Any, body: Any) -> tuple[int, Any]:
        self.triggers[int(tid)].update(body["trigger"])
        return 200, {"trigger": self.triggers[int(tid)]}

    def _delete_trigger(self, tid: str, *, query: Any, body: Any) -> tuple[int, Any]:
        self.triggers.pop(int(tid), None)
        return 204, None

    def _list_macros(self, *, query: Any, body: Any) -> tuple[int, Any]:
        return 200, {"macros": list(self.macros.values()), "count": len(self.macros),
                     "next_page": None, "previous_page": None}

    def _create_macro(self, *, query: Any, body: Any) -> tuple[int, Any]:
        mid = next(self._ids)
        self.macros[mid] = self._rule(mid, body["macro"], "macros")
        return 200, {"macro": self.macros[mid]}

    def _update_macro(self, mid: str, *, query: Any, body: Any) -> tuple[int, Any]:
        self.macros[int(mid)].update(body["macro"])
        return 200, {"macro": self.macros[int(mid)]}

    def _delete_macro(self, mid: str, *, query: Any, body: Any) -> tuple[int, Any]:
        self.macros.pop(int(mid), None)
        return 204, None


__all__ = ["BASE", "FILES", "FakeZendesk", "attachment_resource", "validate_webhook_request",
           "validate_webhook_response"]
