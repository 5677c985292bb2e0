"""A Zendesk Support test double: an HTTP server in its own process, with persistent state.

Run it as::

    python tests/zendesk_double.py --port 0 --state /tmp/zd.json --port-file /tmp/zd.port

(``--background``: return once it listens, leaving it running; README "Try it locally"), or
from pytest through :class:`ZendeskDouble` (start/stop/kill/restart, ``.url``, ``.tickets()``,
``.inject(...)``). State (users, tickets, comments, audits, uploads, idempotency keys, OAuth
tokens) is written to the ``--state`` JSON file after every change, so the double survives
restarts of the bridge and of itself. Uploaded bytes go to ``<state>.blobs/``.

What it implements, with Zendesk's response shapes (its tests validate them against the OAS):

- ``POST /oauth/tokens`` (client_credentials), Bearer and legacy Basic ``email/token:token``.
- ``GET /api/v2/users/me``, ``GET /api/v2/users/search?query=email:x`` (or ``external_id=``).
- ``POST /api/v2/uploads?filename=&token=`` (raw body), ``DELETE /api/v2/uploads/{token}``,
  ``GET /attachments/token/{token}/?name=`` (the ``content_url``). Tokens expire (60 min).
- ``POST /api/v2/tickets`` with ``Idempotency-Key`` as Zendesk documents: first use ``miss``;
  same key and same body, the cached answer with ``x-idempotency-lookup: hit``; same key and
  another body, 400 ``IdempotentRequestError``; keys expire (2 h). Only successful creates are
  remembered. Bodies are compared byte for byte, which is stricter than Zendesk (it compares the
  parameters) and so proves the adapter's retries are byte-identical.
- ``GET /api/v2/tickets?external_id=``, ``GET|PUT /api/v2/tickets/{id}`` (comment, status,
  priority, tags, additional_tags/remove_tags, custom_fields, metadata into the audit,
  ``safe_update`` + ``updated_stamp`` giving 409), closed tickets refusing updates with 422,
  the per-ticket limit of 30 updates in 10 minutes (429 + Retry-After), follow-ups via
  ``via_followup_source_id``.
- ``GET /api/v2/tickets/{id}/audits`` and ``/comments`` (offset pagination, ``--page-size``),
  ``GET|PUT|POST|DELETE /api/v2/tickets/{id}/tags``.

Deviations, on purpose: ``updated_at`` moves by at least one second per update so that
``safe_update`` stamps always differ; tag changes appear as audit events in ``/audits`` but not in
the PUT answer's ``audit`` (the OAS's AuditObject allows only string/integer event values).

Test controls under ``/_test``: ``GET state``, ``GET|DELETE requests`` (request log),
``POST|GET|DELETE faults``, ``POST clock`` (``{"advance": seconds}``), ``POST config``,
``POST users``, ``POST tickets/{id}/status``, ``POST revoke_tokens``, ``POST reset``,
``GET health``.

A fault is ``{"path_regex", "method"?, "status"?, "count"? (default 1, -1 = always),
"delay"?, "headers"?, "body"?, "when": "before"|"after", "drop"?}``. ``before`` answers
without touching state; ``after`` performs the request and then answers with the fault (or
sleeps ``delay`` first, so a client timeout hides a success); ``drop`` closes the connection
without an answer.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

DEFAULT_CLIENT_ID = "pmb-double-client"
DEFAULT_CLIENT_SECRET = "double-client-secret-3f9a"
DEFAULT_EMAIL = "integration@example.com"
DEFAULT_API_TOKEN = "double-api-token-77c1"
INTEGRATION_USER_ID = 100

# -- Zendesk-shaped resources (also used by the `responses` tests to build their mocks) -------


def iso(ts: float) -> str:
    """Zendesk's timestamp format: UTC, seconds, trailing Z."""
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def user_resource(user: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": user["id"],
        "url": f"{base_url}/api/v2/users/{user['id']}.json",
        "name": user["name"],
        "email": user["email"],
        "created_at": iso(user["created_at"]),
        "updated_at": iso(user["created_at"]),
        "time_zone": "Rome",
        "iana_time_zone": "Europe/Rome",
        "locale": "it",
        "locale_id": 22,
        "role": user.get("role", "end-user"),
        "verified": bool(user.get("verified", True)),
        "active": True,
        "shared": False,
        "shared_agent": False,
        "suspended": False,
        "tags": [],
        "user_fields": {},
        "external_id": user.get("external_id"),
        "organization_id": None,
        "phone": None,
        "photo": None,
    }
    return out


def attachment_resource(att: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    content_url = f"{base_url}/attachments/token/{att['token']}/?name={quote(att['file_name'])}"
    return {
        "id": att["id"],
        "url": f"{base_url}/api/v2/attachments/{att['id']}.json",
        "file_name": att["file_name"],
        "content_url": content_url,
        "mapped_content_url": content_url,
        "content_type": att["content_type"],
        "size": att["size"],
        "inline": bool(att.get("inline", False)),
        "deleted": False,
        "malware_access_override": False,
        "malware_scan_result": "malware_not_found",
        "thumbnails": [],
    }


def ticket_resource(t: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """A TicketObject as Zendesk answers it (properties that would be null are left out when
    the OAS does not mark them nullable)."""
    out: dict[str, Any] = {
        "id": t["id"],
        "url": f"{base_url}/api/v2/tickets/{t['id']}.json",
        "external_id": t.get("external_id"),
        "via": {"channel": "api", "source": {"from": {}, "to": {}, "rel": None}},
        "created_at": iso(t["created_at"]),
        "updated_at": iso(t["updated_at"]),
        "generated_timestamp": int(t["updated_at"]),
        "subject": t.get("subject") or "",
        "raw_subject": t.get("subject") or "",
        "description": t.get("description") or "",
        "status": t["status"],
        "requester_id": t["requester_id"],
        "submitter_id": t.get("submitter_id", t["requester_id"]),
        "collaborator_ids": list(t.get("email_cc_ids") or []),
        "follower_ids": [],
        "email_cc_ids": list(t.get("email_cc_ids") or []),
        "has_incidents": False,
        "is_public": bool(t.get("is_public", True)),
        "due_at": None,
        "tags": list(t.get("tags") or []),
        "custom_fields": list(t.get("custom_fields") or []),
        "sharing_agreement_ids": [],
        "followup_ids": list(t.get("followup_ids") or []),
        "allow_channelback": False,
        "allow_attachments": True,
        "from_messaging_channel": False,
    }
    if out["external_id"] is None:
        del out["external_id"]
    for key in ("priority", "type", "group_id", "brand_id", "assignee_id",
                "via_followup_source_id"):
        if t.get(key) is not None:
            out[key] = t[key]
    return out


def comment_resource(c: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    return {
        "id": c["id"],
        "type": "Comment",
        "author_id": c["author_id"],
        "body": c["plain_body"],
        "html_body": c["html_body"],
        "plain_body": c["plain_body"],
        "public": c["public"],
        "audit_id": c["audit_id"],
        "created_at": iso(c["created_at"]),
        "attachments": [attachment_resource(a, base_url) for a in c.get("attachments") or []],
        "via": {"channel": "api", "source": {"from": {}, "to": {}, "rel": None}},
        "metadata": {"system": {"client": "postmaster-bridge"}, "custom": {}},
    }


def error_body(error: str, description: str,
               details: Mapping[str, list[dict[str, str]]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": error, "description": description}
    if details:
        body["details"] = dict(details)
    return body


def closed_ticket_error() -> dict[str, Any]:
    return error_body("RecordInvalid", "Record validation errors", {
        "status": [{"description": "Status: closed prevents ticket update",
                    "error": "InvalidValue"}],
    })


def _html_to_plain(text: str) -> str:
    text = re.sub(r"(?is)<(script|style).*?</\1>", "", text)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>", "\n", text)
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"[ \t]+", " ", text).strip()


def _plain_to_html(text: str) -> str:
    from html import escape

    return "".join(f"<p>{escape(p)}</p>" for p in text.split("\n\n") if p) or "<p></p>"


# -- the server -------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def _empty_state() -> dict[str, Any]:
    return {
        "next_id": 1000,
        "clock_offset": 0.0,
        "users": {},
        "tickets": {},
        "uploads": {},
        "attachments": {},
        "idempotency": {},
        "tokens": {},
        "update_log": {},
    }


def _import_stamp(value: Any, default: float) -> float:
    """An import's ISO 8601 UTC stamp as epoch seconds."""
    if value is None:
        return default
    try:
        stamp = datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise ApiError(422, error_body("RecordInvalid", "Record validation errors", {
            "created_at": [{"description": f"{value!r} is not a time", "error": "InvalidValue"}]
        })) from None
    return stamp.replace(tzinfo=UTC).timestamp()


class DoubleConfig:
    def __init__(self, args: argparse.Namespace) -> None:
        self.client_id: str = args.client_id
        self.client_secret: str = args.client_secret
        self.email: str = args.email
        self.api_token: str = args.api_token
        self.idempotency_ttl: float = args.idempotency_ttl
        self.upload_ttl: float = args.upload_ttl
        self.page_size: int = args.page_size
        self.ticket_update_limit: int = args.ticket_update_limit
        self.ticket_update_window: float = 600.0


class ZendeskState:
    """All state and behaviour; the HTTP handler only parses and serializes."""

    def __init__(self, path: Path, config: DoubleConfig) -> None:
        self.path = path
        self.blobs = path.with_name(path.name + ".blobs")
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.lock = threading.RLock()
        self.faults: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.next_fault_id = 1
        if path.exists() and path.stat().st_size:
            self.data = json.loads(path.read_text("utf-8"))
        else:
            self.data = _empty_state()
        self._ensure_integration_user()
        self.save()

    # -- persistence / clock ----------------------------------------------------------------
    def save(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.data, sort_keys=True), "utf-8")
        os.replace(tmp, self.path)

    def now(self) -> float:
        return time.time() + float(self.data["clock_offset"])

    def new_id(self) -> int:
        self.data["next_id"] += 1
        return int(self.data["next_id"])

    def _ensure_integration_user(self) -> None:
        users = self.data["users"]
        if str(INTEGRATION_USER_ID) not in users:
            users[str(INTEGRATION_USER_ID)] = {
                "id": INTEGRATION_USER_ID, "name": "Bridge Integration",
                "email": self.config.email, "role": "admin", "created_at": self.now(),
            }

    # -- auth -------------------------------------------------------------------------------
    def authenticate(self, header: str | None) -> None:
        unauthorized = ApiError(401, {"error": "Couldn't authenticate you"})
        if not header:
            raise unauthorized
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            token = self.data["tokens"].get(value.strip())
            if token is None or token["expires_at"] <= self.now():
                raise ApiError(401, {"error": "invalid_token", "error_description":
                                     "The access token provided is expired, revoked, malformed "
                                     "or invalid for other reasons."})
            return
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip()).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                raise unauthorized from None
            expected = f"{self.config.email}/token:{self.config.api_token}"
            if secrets.compare_digest(decoded, expected):
                return
        raise unauthorized

    def oauth_token(self, body: Mapping[str, Any]) -> dict[str, Any]:
        if body.get("grant_type") != "client_credentials":
            raise ApiError(400, {"error": "unsupported_grant_type", "error_description":
                                 "The authorization grant type is not supported."})
        if body.get("client_id") != self.config.client_id or not secrets.compare_digest(
            str(body.get("client_secret", "")), self.config.client_secret
        ):
            raise ApiError(401, {"error": "invalid_client", "error_description":
                                 "Client authentication failed due to unknown client, no client "
                                 "authentication included, or unsupported authentication "
                                 "method."})
        expires_in = int(body.get("expires_in") or 172_800)
        if not 300 <= expires_in <= 172_800:
            raise ApiError(400, {"error": "invalid_request",
                                 "error_description": "expires_in is out of range"})
        token = secrets.token_hex(20)
        self.data["tokens"][token] = {"expires_at": self.now() + expires_in,
                                      "scope": body.get("scope", "read")}
        return {"access_token": token, "token_type": "bearer",
                "scope": body.get("scope", "read"), "expires_in": expires_in}

    # -- users ------------------------------------------------------------------------------
    def user_by_email(self, email: str) -> dict[str, Any] | None:
        key = email.strip().lower()
        for user in self.data["users"].values():
            if user["email"].lower() == key:
                return user
        return None

    def find_or_create_user(self, email: str, name: str | None) -> dict[str, Any]:
        user = self.user_by_email(email)
        if user is None:
            uid = self.new_id()
            user = {"id": uid, "name": name or email.split("@")[0], "email": email,
                    "role": "end-user", "created_at": self.now()}
            self.data["users"][str(uid)] = user
        return user

    def search_users(self, query: str | None, external_id: str | None) -> list[dict[str, Any]]:
        users = sorted(self.data["users"].values(), key=lambda u: u["id"])
        if external_id is not None:
            return [u for u in users if u.get("external_id") == external_id]
        q = (query or "").strip().strip('"')
        if q.lower().startswith("email:"):
            email = q[6:].strip().strip('"').lower()
            return [u for u in users if u["email"].lower() == email]
        q = q.lower()
        return [u for u in users if q and (q in u["email"].lower() or q in u["name"].lower())]

    # -- uploads ----------------------------------------------------------------------------
    def upload(self, filename: str | None, token: str | None, content_type: str,
               data: bytes) -> dict[str, Any]:
        if not filename:
            raise ApiError(400, error_body("InvalidParameter", "filename parameter is required"))
        now = self.now()
        if token:
            upload = self.data["uploads"].get(token)
            if upload is None or upload["consumed"] or upload["created_at"] + \
                    self.config.upload_ttl <= now:
                raise ApiError(404, error_body("RecordNotFound", "Not found"))
        else:
            token = secrets.token_urlsafe(18)
            upload = {"created_at": now, "attachment_ids": [], "consumed": False}
            self.data["uploads"][token] = upload
        digest = hashlib.sha256(data).hexdigest()
        (self.blobs / digest).write_bytes(data)
        att_id = self.new_id()
        att = {"id": att_id, "file_name": filename, "content_type": content_type or
               "application/octet-stream", "size": len(data), "sha256": digest,
               "token": secrets.token_urlsafe(18), "inline": False}
        self.data["attachments"][str(att_id)] = att
        upload["attachment_ids"].append(att_id)
        return {"token": token, "attachment_ids": list(upload["attachment_ids"])}

    def delete_upload(self, token: str) -> None:
        if self.data["uploads"].pop(token, None) is None:
            raise ApiError(404, error_body("RecordNotFound", "Not found"))

    def attachment_by_token(self, token: str) -> tuple[dict[str, Any], bytes] | None:
        for att in self.data["attachments"].values():
            if att["token"] == token:
                return att, (self.blobs / att["sha256"]).read_bytes()
        return None

    def _consume_uploads(self, tokens: list[Any]) -> list[dict[str, Any]]:
        now = self.now()
        atts: list[dict[str, Any]] = []
        for token in tokens:
            upload = self.data["uploads"].get(str(token))
            if upload is None or upload["consumed"] or \
                    upload["created_at"] + self.config.upload_ttl <= now:
                # [UNVERIFIED] Zendesk's exact wording; the shape is its RecordInvalid.
                raise ApiError(422, error_body("RecordInvalid", "Record validation errors", {
                    "uploads": [{"description": f"Upload token {token} is invalid or expired",
                                 "error": "InvalidValue"}]}))
            atts.extend(self.data["attachments"][str(a)] for a in upload["attachment_ids"])
        for token in tokens:
            self.data["uploads"][str(token)]["consumed"] = True
        return atts

    # -- tickets ----------------------------------------------------------------------------
    def ticket(self, ticket_id: int) -> dict[str, Any]:
        t = self.data["tickets"].get(str(ticket_id))
        if t is None:
            raise ApiError(404, error_body("RecordNotFound", "Not found"))
        return t

    def _check_enums(self, t: Mapping[str, Any]) -> None:
        enums = {"priority": ("urgent", "high", "normal", "low"),
                 "status": ("new", "open", "pending", "hold", "solved", "closed"),
                 "type": ("problem", "incident", "question", "task")}
        for key, allowed in enums.items():
            if key in t and t[key] is not None and t[key] not in allowed:
                raise ApiError(422, error_body("RecordInvalid", "Record validation errors", {
                    key: [{"description": f"{key.capitalize()}: {t[key]} is not valid",
                           "error": "InvalidValue"}]}))

    @staticmethod
    def _norm_tags(tags: Any) -> list[str]:
        out: list[str] = []
        for tag in tags or []:
            for part in str(tag).split():
                if part.lower() not in out:
                    out.append(part.lower())
        return out

    def _add_comment(self, t: dict[str, Any], c: Mapping[str, Any], author_id: int,
                     audit_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
        if "html_body" in c:
            html_body = str(c["html_body"])
            plain = _html_to_plain(html_body)
        else:
            plain = str(c.get("body", ""))
            html_body = _plain_to_html(plain)
        if not plain.strip() and not c.get("uploads"):
            raise ApiError(422, error_body("RecordInvalid", "Record validation errors", {
                "base": [{"description": "Comment: cannot be blank", "error": "BlankValue"}]}))
        author = int(c.get("author_id") or author_id)
        if str(author) not in self.data["users"]:
            raise ApiError(422, error_body("RecordInvalid", "Record validation errors", {
                "author_id": [{"description": "Author: is invalid", "error": "InvalidValue"}]}))
        atts = self._consume_uploads(list(c.get("uploads") or []))
        public = bool(c.get("public", True))
        comment = {"id": self.new_id(), "author_id": author, "plain_body": plain,
                   "html_body": html_body, "public": public, "audit_id": audit_id,
                   "created_at": self.now(), "attachments": atts}
        t.setdefault("comments", []).append(comment)
        if public:
            t["is_public"] = True
        event = {"id": self.new_id(), "type": "Comment", "author_id": author,
                 "body": plain, "html_body": html_body, "plain_body": plain, "public": public,
                 "attachments": [{k: a[k] for k in ("id", "file_name", "content_type", "size")}
                                 for a in atts],
                 "audit_id": audit_id}
        return comment, event

    def _audit(self, t: dict[str, Any], audit_id: int, author_id: int,
               events: list[dict[str, Any]], custom: Any) -> dict[str, Any]:
        audit = {"id": audit_id, "ticket_id": t["id"], "author_id": author_id,
                 "created_at": self.now(), "events": events,
                 "metadata": {"custom": custom if isinstance(custom, dict) else {},
                              "system": {"client": "postmaster-bridge", "ip_address": "127.0.0.1"}}}
        t.setdefault("audits", []).append(audit)
        return audit

    def create_ticket(self, body: Any, raw: bytes, key: str | None,
                      base_url: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        now = self.now()
        if key is not None:
            self._expire_keys(now)
            record = self.data["idempotency"].get(key)
            fingerprint = hashlib.sha256(raw).hexdigest()
            if record is not None:
                if record["fingerprint"] != fingerprint:
                    raise ApiError(400, error_body(
                        "IdempotentRequestError",
                        "Request parameters don't match the given idempotency key"))
                return record["status"], record["body"], {"x-idempotency-lookup": "hit"}
        status, answer = self._create_ticket(body, base_url)
        headers = {"Location": f"{base_url}/api/v2/tickets/{answer['ticket']['id']}.json"}
        if key is not None:
            self.data["idempotency"][key] = {"fingerprint": hashlib.sha256(raw).hexdigest(),
                                             "created_at": now, "status": status,
                                             "body": answer}
            headers["x-idempotency-lookup"] = "miss"
        return status, answer, headers

    def _expire_keys(self, now: float) -> None:
        ttl = self.config.idempotency_ttl
        keys = self.data["idempotency"]
        for k in [k for k, r in keys.items() if r["created_at"] + ttl <= now]:
            del keys[k]

    def _create_ticket(self, body: Any, base_url: str) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict) or not isinstance(body.get("ticket"), dict):
            raise ApiError(400, error_body("InvalidParameter", "ticket parameter is required"))
        req = body["ticket"]
        comment = req.get("comment")
        if not isinstance(comment, dict):
            raise ApiError(422, error_body("RecordInvalid", "Record validation errors", {
                "description": [{"description": "Description: cannot be blank",
                                 "error": "BlankValue"}]}))
        self._check_enums(req)
        self._consume_check(comment)
        source_id = req.get("via_followup_source_id")
        if source_id is not None:
            source = self.data["tickets"].get(str(source_id))
            if source is None or source["status"] != "closed":
                raise ApiError(422, error_body("RecordInvalid", "Record validation errors", {
                    "via_followup_source_id": [{"description": "is not a closed ticket",
                                                "error": "InvalidValue"}]}))
        if isinstance(req.get("requester"), dict) and req["requester"].get("email"):
            requester = self.find_or_create_user(str(req["requester"]["email"]),
                                                 req["requester"].get("name"))
        elif req.get("requester_id") is not None:
            requester = self.data["users"].get(str(req["requester_id"]))
            if requester is None:
                raise ApiError(422, error_body("RecordInvalid", "Record validation errors", {
                    "requester": [{"description": "Requester: is invalid",
                                   "error": "InvalidValue"}]}))
        else:
            requester = self.data["users"][str(INTEGRATION_USER_ID)]
        now = self.now()
        tid = self.new_id()
        t: dict[str, Any] = {
            "id": tid, "subject": req.get("subject") or "", "status": req.get("status") or "new",
            "priority": req.get("priority"), "type": req.get("type"),
            "group_id": req.get("group_id"), "brand_id": req.get("brand_id"),
            "external_id": req.get("external_id"), "requester_id": requester["id"],
            "submitter_id": requester["id"] if source_id is None else INTEGRATION_USER_ID,
            "tags": self._norm_tags(req.get("tags")),
            "custom_fields": list(req.get("custom_fields") or []),
            "email_cc_ids": [], "via_followup_source_id": source_id,
            "created_at": now, "updated_at": now, "comments": [], "audits": [],
            "is_public": bool(comment.get("public", True)),
        }
        for cc in req.get("email_ccs") or []:
            if isinstance(cc, dict) and cc.get("user_email") and cc.get("action", "put") == "put":
                user = self.find_or_create_user(str(cc["user_email"]), cc.get("user_name"))
                if user["id"] not in t["email_cc_ids"]:
                    t["email_cc_ids"].append(user["id"])
        audit_id = self.new_id()
        author = t["submitter_id"]
        first, event = self._add_comment(t, comment, author, audit_id)
        t["description"] = first["plain_body"]
        events = [event] + [
            {"id": self.new_id(), "type": "Create", "field_name": name, "value": t[name]}
            for name in ("subject", "status", "priority", "type") if t.get(name) is not None
        ]
        audit = self._audit(t, audit_id, author, events, req.get("metadata"))
        self.data["tickets"][str(tid)] = t
        if source_id is not None:
            self.data["tickets"][str(source_id)].setdefault("followup_ids", []).append(tid)
        return 201, {"ticket": ticket_resource(t, base_url), "audit": self._audit_out(audit)}

    def import_ticket(self, req: Any, base_url: str, archive: bool) -> dict[str, Any]:
        """The Ticket Import API: a ticket and all its comments with the dates given, made
        without triggers; ``archive`` puts a closed one in the archive (not listed)."""
        if not isinstance(req, dict) or not req.get("comments"):
            raise ApiError(422, error_body("RecordInvalid", "Record validation errors", {
                "comments": [{"description": "Comments: cannot be blank",
                              "error": "BlankValue"}]}))
        comments = [dict(c) for c in req["comments"]]
        dates = [_import_stamp(c.pop("created_at", None), self.now()) for c in comments]
        ticket = {k: v for k, v in req.items()
                  if k not in ("comments", "created_at", "updated_at", "solved_at")}
        _, answer = self._create_ticket({"ticket": {**ticket, "comment": comments[0]}},
                                        base_url)
        t = self.data["tickets"][str(answer["ticket"]["id"])]
        t["comments"][0]["created_at"] = dates[0]
        for comment, date in zip(comments[1:], dates[1:], strict=True):
            added, _ = self._add_comment(t, comment, INTEGRATION_USER_ID, self.new_id())
            added["created_at"] = date
        t["created_at"] = _import_stamp(req.get("created_at"), dates[0])
        t["updated_at"] = _import_stamp(req.get("updated_at"), t["created_at"])
        t["imported"] = True
        t["archived"] = archive and t["status"] == "closed"
        return t

    def import_many(self, body: Any, base_url: str, archive: bool) -> dict[str, Any]:
        tickets = body.get("tickets") if isinstance(body, dict) else None
        if not isinstance(tickets, list) or not 1 <= len(tickets) <= 100:
            raise ApiError(400, error_body("InvalidValue", "between 1 and 100 tickets"))
        results = [{"id": self.import_ticket(t, base_url, archive)["id"], "index": i}
                   for i, t in enumerate(tickets)]
        job_id = hashlib.sha256(f"job{self.new_id()}".encode()).hexdigest()[:32]
        self.data.setdefault("jobs", {})[job_id] = {"results": results}
        return self.job_status(job_id, base_url, "queued")

    def job_status(self, job_id: str, base_url: str, status: str = "completed") -> dict[str, Any]:
        job = self.data.get("jobs", {}).get(job_id)
        if job is None:
            raise ApiError(404, error_body("RecordNotFound", "Not found"))
        done = status == "completed"
        return {"job_status": {
            "id": job_id, "job_type": "bulk_import_tickets", "status": status,
            "total": len(job["results"]), "progress": len(job["results"]) if done else 0,
            "message": "Completed" if done else None,
            "results": job["results"] if done else None,
            "url": f"{base_url}/api/v2/job_statuses/{job_id}.json"}}

    def _consume_check(self, comment: Mapping[str, Any]) -> None:
        # Validate tokens before anything is created, so a refused create changes nothing.
        now = self.now()
        for token in comment.get("uploads") or []:
            upload = self.data["uploads"].get(str(token))
            if upload is None or upload["consumed"] or \
                    upload["created_at"] + self.config.upload_ttl <= now:
                self._consume_uploads([token])  # raises the 422

    def _audit_out(self, audit: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(audit)
        out["created_at"] = iso(audit["created_at"])
        out["via"] = {"channel": "api", "source": {"from": {}, "to": {}, "rel": None}}
        return out

    def _count_update(self, ticket_id: int) -> None:
        now = self.now()
        window = self.config.ticket_update_window
        log = [ts for ts in self.data["update_log"].get(str(ticket_id), []) if ts > now - window]
        if len(log) >= self.config.ticket_update_limit:
            retry_after = max(1, int(log[0] + window - now + 0.999))
            raise ApiError(429, error_body(
                "APIRateLimitExceeded",
                "Number of allowed ticket updates exceeded, please try again later"),
                {"Retry-After": str(retry_after)})
        log.append(now)
        self.data["update_log"][str(ticket_id)] = log

    def _touch(self, t: dict[str, Any]) -> None:
        t["updated_at"] = max(self.now(), float(t["updated_at"]) + 1.0)

    def _check_updatable(self, t: Mapping[str, Any], req: Mapping[str, Any]) -> None:
        if t["status"] == "closed":
            raise ApiError(422, closed_ticket_error())
        if str(req.get("safe_update", "")).lower() == "true":
            if req.get("updated_stamp") != iso(t["updated_at"]):
                raise ApiError(409, error_body(
                    "UpdateConflict",
                    "Safe Update prevented the update due to outdated ticket data. "
                    "Please fetch the latest ticket data and try again."))

    def update_ticket(self, ticket_id: int, body: Any, base_url: str) -> dict[str, Any]:
        t = self.ticket(ticket_id)
        if not isinstance(body, dict) or not isinstance(body.get("ticket"), dict):
            raise ApiError(400, error_body("InvalidParameter", "ticket parameter is required"))
        req = body["ticket"]
        self._check_updatable(t, req)
        self._check_enums(req)
        if isinstance(req.get("comment"), dict):
            self._consume_check(req["comment"])
        self._count_update(ticket_id)
        audit_id = self.new_id()
        events: list[dict[str, Any]] = []
        hidden_events: list[dict[str, Any]] = []
        author = INTEGRATION_USER_ID
        if isinstance(req.get("comment"), dict):
            comment, event = self._add_comment(t, req["comment"], author, audit_id)
            events.append(event)
        for name in ("status", "priority", "subject", "type", "group_id", "external_id"):
            if name in req and req[name] != t.get(name):
                events.append({"id": self.new_id(), "type": "Change", "field_name": name,
                               "value": req[name], "previous_value": t.get(name) or ""})
                t[name] = req[name]
        old_tags = list(t["tags"])
        if "tags" in req:
            t["tags"] = self._norm_tags(req["tags"])
        t["tags"] += [x for x in self._norm_tags(req.get("additional_tags")) if x not in t["tags"]]
        removed = set(self._norm_tags(req.get("remove_tags")))
        t["tags"] = [x for x in t["tags"] if x not in removed]
        if t["tags"] != old_tags:
            hidden_events.append({"id": self.new_id(), "type": "Change", "field_name": "tags",
                                  "value": list(t["tags"]), "previous_value": old_tags})
        for cf in req.get("custom_fields") or []:
            if isinstance(cf, dict) and "id" in cf:
                t["custom_fields"] = [x for x in t["custom_fields"] if x.get("id") != cf["id"]]
                t["custom_fields"].append({"id": cf["id"], "value": cf.get("value")})
        self._touch(t)
        audit = self._audit(t, audit_id, author, events + hidden_events, req.get("metadata"))
        shown = dict(audit, events=events)
        return {"ticket": ticket_resource(t, base_url), "audit": self._audit_out(shown)}

    def tags(self, ticket_id: int, method: str, body: Any) -> tuple[int, dict[str, Any] | None]:
        t = self.ticket(ticket_id)
        if method == "GET":
            return 200, {"tags": list(t["tags"])}
        req = body if isinstance(body, dict) else {}
        self._check_updatable(t, req)
        self._count_update(ticket_id)
        old = list(t["tags"])
        given = self._norm_tags(req.get("tags"))
        if method == "POST":
            t["tags"] = given
        elif method == "PUT":
            t["tags"] += [x for x in given if x not in t["tags"]]
        else:
            t["tags"] = [x for x in t["tags"] if x not in set(given)]
        if t["tags"] != old:
            self._touch(t)
            self._audit(t, self.new_id(), INTEGRATION_USER_ID, [
                {"id": self.new_id(), "type": "Change", "field_name": "tags",
                 "value": list(t["tags"]), "previous_value": old}], None)
        if method == "DELETE":
            return 204, None
        return (201 if method == "POST" else 200), {"tags": list(t["tags"])}

    def page(self, items: list[Any], key: str, query: Mapping[str, list[str]],
             url: str) -> dict[str, Any]:
        per_page = max(1, min(100, int(query.get("per_page", [self.config.page_size])[0])))
        page = max(1, int(query.get("page", ["1"])[0]))
        chunk = items[(page - 1) * per_page: page * per_page]
        rest = {k: v[0] for k, v in query.items() if k not in ("page", "per_page")}

        def link(n: int) -> str:
            params = "&".join(f"{k}={quote(str(v))}" for k, v in
                              {**rest, "page": n, "per_page": per_page}.items())
            return f"{url}?{params}"

        has_next = page * per_page < len(items)
        return {key: chunk, "count": len(items),
                "next_page": link(page + 1) if has_next else None,
                "previous_page": link(page - 1) if page > 1 else None}

    def sideload_users(self, tickets: list[Mapping[str, Any]], base_url: str) -> list[Any]:
        ids: list[int] = []
        for t in tickets:
            for uid in [t["requester_id"], t.get("submitter_id"), *t.get("email_cc_ids", [])]:
                if uid is not None and uid not in ids:
                    ids.append(uid)
        return [user_resource(self.data["users"][str(u)], base_url) for u in ids
                if str(u) in self.data["users"]]


class Handler(BaseHTTPRequestHandler):
    # Headers and body go out as separate writes; with Nagle on, the client's delayed ACK
    # adds ~40 ms to every answer.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server: DoubleServer

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("ZENDESK_DOUBLE_VERBOSE"):
            super().log_message(format, *args)

    # Every verb goes through one dispatcher.
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    @property
    def base_url(self) -> str:
        return f"http://{self.headers.get('Host') or self.server.host_port}"

    def _dispatch(self, method: str) -> None:
        state = self.server.state
        parts = urlsplit(self.path)
        path = parts.path
        query = parse_qs(parts.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        entry = {"method": method, "path": path, "query": {k: v[0] for k, v in query.items()},
                 "idempotency_key": self.headers.get("Idempotency-Key"),
                 "content_type": self.headers.get("Content-Type"),
                 "auth_scheme": (self.headers.get("Authorization") or " ").split(" ")[0],
                 "body_sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw)}
        if "json" in (self.headers.get("Content-Type") or "") and raw:
            try:
                entry["json"] = json.loads(raw)
            except ValueError:
                entry["json"] = None
        fault = None if path.startswith("/_test/") else self._take_fault(method, path)
        if fault is not None:
            # Known while the answer is held back: the client may have several requests in
            # flight, and a test must tell which one the fault holds.
            entry["fault"] = fault["id"]
        if fault is not None and fault.get("when", "before") == "before":
            if fault.get("delay"):
                time.sleep(float(fault["delay"]))
            if self._answer_fault(fault, entry):
                return
        try:
            status, body, headers = self._route(method, path, query, raw)
        except ApiError as err:
            status, body, headers = err.status, err.body, err.headers
        except Exception as exc:  # a bug in the double must show, not hang the client
            status, body, headers = 500, {"error": "DoubleBug", "description": repr(exc)}, {}
        entry["status"] = status
        if not path.startswith("/_test/"):
            with state.lock:
                state.requests.append(entry)
        if fault is not None and fault.get("when") == "after":
            if fault.get("delay"):
                time.sleep(float(fault["delay"]))
            if self._answer_fault(fault, entry, logged=True):
                return
        self._send(status, body, headers)

    def _take_fault(self, method: str, path: str) -> dict[str, Any] | None:
        state = self.server.state
        with state.lock:
            for fault in state.faults:
                if fault["count"] == 0:
                    continue
                if fault.get("method") and fault["method"].upper() != method:
                    continue
                if not re.search(fault["path_regex"], path):
                    continue
                if fault["count"] > 0:
                    fault["count"] -= 1
                fault["hits"] = fault.get("hits", 0) + 1
                return dict(fault)
        return None

    def _answer_fault(self, fault: Mapping[str, Any], entry: dict[str, Any],
                      logged: bool = False) -> bool:
        """Answer with the fault (True), or let the real answer go out (False)."""
        entry["fault"] = fault["id"]
        if fault.get("drop"):
            entry["status"] = None
            self._log(entry, logged)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        status = fault.get("status")
        if not status:
            return False
        body = fault.get("body")
        if body is None:
            reason = HTTPStatus(int(status)).phrase
            body = {"error": reason.replace(" ", ""), "description": reason}
        entry["status"] = status
        self._log(entry, logged)
        self._send(int(status), body, fault.get("headers") or {})
        return True

    def _log(self, entry: dict[str, Any], logged: bool) -> None:
        if not logged:
            with self.server.state.lock:
                self.server.state.requests.append(entry)

    def _send(self, status: int, body: Any, headers: Mapping[str, str]) -> None:
        if isinstance(body, bytes):
            payload = body
            content_type = headers.get("Content-Type", "application/octet-stream")
        elif body is None:
            payload, content_type = b"", ""
        else:
            payload = json.dumps(body).encode("utf-8")
            content_type = "application/json; charset=utf-8"
        try:
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            for name, value in headers.items():
                if name.lower() != "content-type":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _json_body(self, raw: bytes) -> Any:
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(400, error_body("InvalidJSON", "The request body is not JSON")) from None

    def _route(self, method: str, path: str, query: Mapping[str, list[str]],
               raw: bytes) -> tuple[int, Any, Mapping[str, str]]:
        state = self.server.state
        base = self.base_url
        if path.startswith("/_test/"):
            return self._test_route(method, path, query, raw)
        if path == "/oauth/tokens" and method == "POST":
            with state.lock:
                answer = state.oauth_token(self._json_body(raw) or {})
                state.save()
            return 201, answer, {}
        m = re.fullmatch(r"/attachments/token/([^/]+)/?", path)
        if m and method == "GET":
            with state.lock:
                found = state.attachment_by_token(m.group(1))
            if found is None:
                raise ApiError(404, error_body("RecordNotFound", "Not found"))
            att, data = found
            return 200, data, {"Content-Type": att["content_type"]}
        with state.lock:
            state.authenticate(self.headers.get("Authorization"))
            status, body, headers = self._api(method, path, query, raw, base)
            if method != "GET":
                state.save()
            return status, body, headers

    def _api(self, method: str, path: str, query: Mapping[str, list[str]], raw: bytes,
             base: str) -> tuple[int, Any, Mapping[str, str]]:
        state = self.server.state
        path = path[:-5] if path.endswith(".json") else path
        q = {k: v[0] for k, v in query.items()}
        if path == "/api/v2/users/me" and method == "GET":
            user = user_resource(state.data["users"][str(INTEGRATION_USER_ID)], base)
            user["authenticity_token"] = "double-csrf-token"
            return 200, {"user": user}, {}
        if path == "/api/v2/users/search" and method == "GET":
            users = state.search_users(q.get("query"), q.get("external_id"))
            out = state.page([user_resource(u, base) for u in users], "users", query,
                             base + path)
            return 200, out, {}
        if path == "/api/v2/uploads" and method == "POST":
            ctype = self.headers.get("Content-Type") or "application/octet-stream"
            made = state.upload(q.get("filename"), q.get("token"), ctype, raw)
            atts = [attachment_resource(state.data["attachments"][str(a)], base)
                    for a in made["attachment_ids"]]
            return 201, {"upload": {"token": made["token"], "attachment": atts[-1],
                                    "attachments": atts}}, {}
        m = re.fullmatch(r"/api/v2/uploads/([^/]+)", path)
        if m and method == "DELETE":
            state.delete_upload(m.group(1))
            return 204, None, {}
        archive = q.get("archive_immediately") == "true"
        if path == "/api/v2/users/create_or_update" and method == "POST":
            req = (self._json_body(raw) or {}).get("user") or {}
            known = state.user_by_email(str(req.get("email") or "")) is not None
            user = state.find_or_create_user(str(req["email"]), req.get("name"))
            return (200 if known else 201), {"user": user_resource(user, base)}, {}
        if path == "/api/v2/imports/tickets" and method == "POST":
            t = state.import_ticket((self._json_body(raw) or {}).get("ticket"), base, archive)
            return 201, {"ticket": ticket_resource(t, base)}, {}
        if path == "/api/v2/imports/tickets/create_many" and method == "POST":
            return 200, state.import_many(self._json_body(raw), base, archive), {}
        m = re.fullmatch(r"/api/v2/job_statuses/([0-9a-f]+)", path)
        if m and method == "GET":
            return 200, state.job_status(m.group(1), base), {}
        if path == "/api/v2/tickets":
            if method == "POST":
                return state.create_ticket(self._json_body(raw), raw,
                                           self.headers.get("Idempotency-Key"), base)
            if method == "GET":
                tickets = sorted(state.data["tickets"].values(), key=lambda t: t["id"])
                if "external_id" in q:  # archived tickets are not listed
                    tickets = [t for t in tickets if t.get("external_id") == q["external_id"]
                               and not t.get("archived")]
                out = state.page([ticket_resource(t, base) for t in tickets], "tickets", query,
                                 base + path)
                if q.get("include") == "users":
                    out["users"] = state.sideload_users(
                        [t for t in tickets if t["id"] in {x["id"] for x in out["tickets"]}],
                        base)
                return 200, out, {}
        m = re.fullmatch(r"/api/v2/tickets/(\d+)(/[a-z_]+)?", path)
        if m:
            tid, sub = int(m.group(1)), m.group(2) or ""
            if sub == "" and method == "GET":
                t = state.ticket(tid)
                out = {"ticket": ticket_resource(t, base)}
                if q.get("include") == "users":
                    out["users"] = state.sideload_users([t], base)
                return 200, out, {}
            if sub == "" and method == "PUT":
                return 200, state.update_ticket(tid, self._json_body(raw), base), {}
            if sub == "/audits" and method == "GET":
                t = state.ticket(tid)
                return 200, state.page([state._audit_out(a) for a in t.get("audits", [])],
                                       "audits", query, base + path), {}
            if sub == "/comments" and method == "GET":
                t = state.ticket(tid)
                comments = [comment_resource(c, base) for c in t.get("comments", [])]
                if (query.get("sort_order") or ["asc"])[-1] == "desc":
                    comments.reverse()  # List Comments: sort_order asc (default) or desc
                return 200, state.page(comments, "comments", query, base + path), {}
            if sub == "/tags":
                status, body = state.tags(tid, method, self._json_body(raw))
                return status, body, {}
        raise ApiError(404, error_body("InvalidEndpoint", "Not found"))

    def _test_route(self, method: str, path: str, query: Mapping[str, list[str]],
                    raw: bytes) -> tuple[int, Any, Mapping[str, str]]:
        state = self.server.state
        body = self._json_body(raw) or {}
        with state.lock:
            if path == "/_test/health":
                return 200, {"ok": True, "pid": os.getpid()}, {}
            if path == "/_test/state" and method == "GET":
                return 200, state.data, {}
            if path == "/_test/requests":
                if method == "DELETE":
                    state.requests.clear()
                    return 204, None, {}
                return 200, {"requests": state.requests}, {}
            if path == "/_test/faults":
                if method == "POST":
                    fault = {"id": state.next_fault_id, "path_regex": body["path_regex"],
                             "method": body.get("method"), "status": body.get("status"),
                             "count": int(body.get("count", 1)),
                             "delay": float(body.get("delay", 0.0)),
                             "headers": body.get("headers") or {}, "body": body.get("body"),
                             "when": body.get("when", "before"), "drop": bool(body.get("drop")),
                             "hits": 0}
                    state.next_fault_id += 1
                    state.faults.append(fault)
                    return 201, fault, {}
                if method == "DELETE":
                    state.faults.clear()
                    return 204, None, {}
                return 200, {"faults": state.faults}, {}
            if path == "/_test/clock" and method == "POST":
                state.data["clock_offset"] += float(body.get("advance", 0))
                state.save()
                return 200, {"now": state.now(), "offset": state.data["clock_offset"]}, {}
            if path == "/_test/config" and method == "POST":
                for key, value in body.items():
                    if not hasattr(state.config, key):
                        raise ApiError(400, error_body("InvalidParameter", f"unknown {key}"))
                    setattr(state.config, key, type(getattr(state.config, key))(value))
                return 200, vars(state.config) | {"client_secret": "***", "api_token": "***"}, {}
            if path == "/_test/users" and method == "POST":
                user = state.find_or_create_user(body["email"], body.get("name"))
                for key in ("role", "external_id"):
                    if key in body:
                        user[key] = body[key]
                state.save()
                return 201, {"user": user_resource(user, self.base_url)}, {}
            m = re.fullmatch(r"/_test/tickets/(\d+)/status", path)
            if m and method == "POST":
                t = state.ticket(int(m.group(1)))
                t["status"] = body["status"]
                state._touch(t)
                state.save()
                return 200, {"ticket": ticket_resource(t, self.base_url)}, {}
            if path == "/_test/revoke_tokens" and method == "POST":
                state.data["tokens"].clear()
                state.save()
                return 204, None, {}
            if path == "/_test/reset" and method == "POST":
                state.data = _empty_state()
                state._ensure_integration_user()
                state.faults.clear()
                state.requests.clear()
                state.save()
                return 204, None, {}
        raise ApiError(404, error_body("InvalidEndpoint", "Not found"))


class DoubleServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: ZendeskState) -> None:
        super().__init__(address, Handler)
        self.state = state
        self.host_port = f"{address[0]}:{self.server_address[1]}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--state", type=Path, required=True)
    p.add_argument("--port-file", type=Path)
    p.add_argument("--background", action="store_true",
                   help="start the double in its own process and return once it listens")
    p.add_argument("--pid-file", type=Path, help="with --background: where to write its pid")
    p.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    p.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    p.add_argument("--email", default=DEFAULT_EMAIL)
    p.add_argument("--api-token", default=DEFAULT_API_TOKEN)
    p.add_argument("--idempotency-ttl", type=float, default=7200.0)
    p.add_argument("--upload-ttl", type=float, default=3600.0)
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--ticket-update-limit", type=int, default=30)
    return p


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _start_in_background(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the double in a child process of its own, wait until it listens, tell how to use
    it and return: a shell can go on with the next command at once."""
    port_file = Path(tempfile.mkdtemp(prefix="zd-port-")) / "port"
    child_argv = [a for a in argv if a != "--background"] + ["--port-file", str(port_file)]
    child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *child_argv],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if child.poll() is not None:
            print(f"the Zendesk double exited with {child.returncode}", file=sys.stderr)
            return 1
        if time.monotonic() > deadline:
            child.kill()
            print("the Zendesk double did not start", file=sys.stderr)
            return 1
        time.sleep(0.02)
    port = int(port_file.read_text())
    port_file.unlink()
    port_file.parent.rmdir()
    if args.pid_file:
        _write_atomically(args.pid_file, f"{child.pid}\n")
    print(f"Zendesk double on http://{args.host}:{port} (pid {child.pid}); OAuth client "
          f"{args.client_id!r} secret {args.client_secret!r}; API token "
          f"{args.email}/token:{args.api_token}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        print("the double serves loopback only", file=sys.stderr)
        return 2
    if args.background:
        return _start_in_background(args, argv)
    state = ZendeskState(args.state, DoubleConfig(args))
    server = DoubleServer((args.host, args.port), state)
    port = server.server_address[1]
    if args.port_file:
        _write_atomically(args.port_file, str(port))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


# -- pytest helper ------------------------------------------------------------------------------


class DoubleProcess:
    """A helpdesk double served by a subprocess of its own (this script or a sibling's, run as
    ``script --port N --state FILE --port-file FILE [options]``): start, stop, kill (a crash),
    restart on the same port and state. Shared with tests/otobo_double.py; kept here so this
    file still runs alone (tests/test_tryout.py copies it without its siblings)."""

    #: The double's script and its name in errors; set by each double.
    script: Path = Path(__file__).resolve()
    label = "zendesk double"

    def __init__(self, state_path: Path, options: list[str], *, port: int = 0) -> None:
        self.state_path = Path(state_path)
        self.port = port
        self.options = options
        self._proc: subprocess.Popen[bytes] | None = None
        import requests

        self._http = requests.Session()
        self._http.trust_env = False

    def start(self, timeout: float = 15.0) -> Any:
        port_file = Path(tempfile.mkdtemp(prefix="double-port-")) / "port"
        self._proc = subprocess.Popen(
            [sys.executable, str(self.script), "--port", str(self.port),
             "--state", str(self.state_path), "--port-file", str(port_file), *self.options],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if self._proc.poll() is not None:
                raise RuntimeError(f"the {self.label} exited with {self._proc.returncode}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the {self.label} did not start")
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        port_file.unlink()
        port_file.parent.rmdir()
        self.ready()
        return self

    def ready(self) -> None:
        """Raise unless the started double answers."""
        raise NotImplementedError

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def kill(self) -> None:
        """SIGKILL: a crash, for restart tests."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)
        self._proc = None

    def restart(self) -> Any:
        """Stop and start again on the same port with the same state file."""
        self.stop()
        return self.start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ZendeskDouble(DoubleProcess):
    """Runs the double in a subprocess. ``with ZendeskDouble(tmp_path / "zd.json") as zd: ...``"""

    def __init__(self, state_path: Path, *, port: int = 0, page_size: int = 100,
                 idempotency_ttl: float = 7200.0, upload_ttl: float = 3600.0,
                 ticket_update_limit: int = 30) -> None:
        super().__init__(state_path, [
            "--page-size", str(page_size), "--idempotency-ttl", str(idempotency_ttl),
            "--upload-ttl", str(upload_ttl), "--ticket-update-limit", str(ticket_update_limit)],
            port=port)
        self.client_id = DEFAULT_CLIENT_ID
        self.client_secret = DEFAULT_CLIENT_SECRET
        self.email = DEFAULT_EMAIL
        self.api_token = DEFAULT_API_TOKEN

    def ready(self) -> None:
        self._get("/_test/health")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- adapter settings -------------------------------------------------------------------
    def settings(self, kind: str = "oauth", **overrides: Any) -> Any:
        """ZendeskSettings pointing at this double (``kind``: "oauth" or "api_token");
        ``overrides`` replace any field, ``auth`` included."""
        from connector.hosts.zendesk import ApiTokenAuth, OAuthClientCredentials, ZendeskSettings

        creds: Any
        if kind == "oauth":
            creds = OAuthClientCredentials(self.client_id, self.client_secret,
                                           "tickets:read tickets:write users:read", 3600)
        else:
            creds = ApiTokenAuth(self.email, self.api_token)
        values: dict[str, Any] = {"base_url": self.url, "auth": creds, "timeout": (2.0, 5.0),
                                  "max_attempts": 4, "max_backoff": 2.0}
        values.update(overrides)
        return ZendeskSettings(**values)

    # -- test controls ----------------------------------------------------------------------
    def _get(self, path: str) -> Any:
        resp = self._http.get(self.url + path, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def _post(self, path: str, body: Any = None) -> Any:
        resp = self._http.post(self.url + path, json=body or {}, timeout=10)
        resp.raise_for_status()
        return resp.json() if resp.content else None

    def state(self) -> dict[str, Any]:
        return self._get("/_test/state")

    def tickets(self) -> list[dict[str, Any]]:
        """Stored tickets (internal form, with ``comments`` and ``audits``), by id."""
        return sorted(self.state()["tickets"].values(), key=lambda t: t["id"])

    def ticket(self, ticket_id: int) -> dict[str, Any]:
        return self.state()["tickets"][str(ticket_id)]

    def users(self) -> list[dict[str, Any]]:
        return sorted(self.state()["users"].values(), key=lambda u: u["id"])

    def requests_log(self) -> list[dict[str, Any]]:
        return self._get("/_test/requests")["requests"]

    def clear_requests(self) -> None:
        self._http.delete(self.url + "/_test/requests", timeout=10).raise_for_status()

    def inject(self, path_regex: str, status: int | None = 500, *, count: int = 1,
               method: str | None = None, delay: float = 0.0,
               headers: Mapping[str, str] | None = None, body: Any = None,
               when: str = "before", drop: bool = False) -> dict[str, Any]:
        return self._post("/_test/faults", {
            "path_regex": path_regex, "status": status, "count": count, "method": method,
            "delay": delay, "headers": dict(headers or {}), "body": body, "when": when,
            "drop": drop})

    def faults(self) -> list[dict[str, Any]]:
        return self._get("/_test/faults")["faults"]

    def clear_faults(self) -> None:
        self._http.delete(self.url + "/_test/faults", timeout=10).raise_for_status()

    def advance_clock(self, seconds: float) -> None:
        self._post("/_test/clock", {"advance": seconds})

    def configure(self, **values: Any) -> None:
        self._post("/_test/config", values)

    def add_user(self, email: str, name: str = "", role: str = "end-user") -> dict[str, Any]:
        return self._post("/_test/users", {"email": email, "name": name or email, "role": role})[
            "user"]

    def set_status(self, ticket_id: int, status: str) -> None:
        self._post(f"/_test/tickets/{ticket_id}/status", {"status": status})

    def revoke_tokens(self) -> None:
        self._post("/_test/revoke_tokens")

    def reset(self) -> None:
        self._post("/_test/reset")


if __name__ == "__main__":
    sys.exit(main())
