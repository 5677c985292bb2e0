"""A Microsoft Graph double (mail only) on 127.0.0.1, following Graph's documented shapes:

- ``GET /v1.0/users/{id}/mailFolders/{well-known name or id}``, ``.../mailFolders`` and
  ``.../childFolders`` with ``$filter=displayName eq '...'``, folder creation (201; 409
  ``ErrorFolderExists``);
- ``GET .../mailFolders/{id}/messages/delta``: pages of ``value`` linked by
  ``@odata.nextLink`` (``Prefer: odata.maxpagesize`` honoured up to ``page_size``), the
  last page carrying ``@odata.deltaLink``; later rounds report changes only, a message gone
  from the folder as ``{"id": ..., "@removed": {"reason": "deleted"}}``;
- ``GET .../messages/{id}/$value`` (the MIME), ``POST .../messages/{id}/move`` (201 with the
  moved message; a new id unless the request said ``Prefer: IdType="ImmutableId"``),
  ``DELETE .../messages/{id}`` (204), ``POST .../sendMail`` with base64 MIME (202);
- ``POST /v1.0/$batch`` with up to 20 of those, each answered on its own;
- errors as ``{"error": {"code", "message", "innerError"}}``; 401
  ``InvalidAuthenticationToken`` unless the bearer token is active at the OAuth2 double; 429
  ``TooManyRequests`` with ``Retry-After`` when a test asks for throttling.

State lives in this process, so a bridge killed and restarted finds its mailbox as it left it.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from dovecot import HOST
from oauth_double import OAuthDouble, QuietServer

ROOT_ID = "AAMkAGI2TAAA="


def _new_id() -> str:
    return "AAMkAD" + base64.urlsafe_b64encode(secrets.token_bytes(48)).decode().rstrip("=")


@dataclass
class Folder:
    id: str
    name: str
    parent: str | None
    well_known: str | None = None


@dataclass
class Message:
    id: str
    folder: str
    raw: bytes
    received: str
    internet_message_id: str | None


class _Error(Exception):
    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = {"error": {"code": code, "message": message, "innerError": {
            "date": "2026-12-02T04:00:00", "request-id": str(uuid.uuid4()),
            "client-request-id": str(uuid.uuid4())}}}
        self.headers = headers or {}


class GraphDouble:
    def __init__(self, oauth: OAuthDouble, mailbox: str, *, page_size: int = 10) -> None:
        self.oauth = oauth
        self.mailbox = mailbox.lower()
        self.page_size = page_size
        self.lock = threading.RLock()
        self.folders: dict[str, Folder] = {ROOT_ID: Folder(ROOT_ID, "Top of Information Store",
                                                           None, "msgfolderroot")}
        for name, well_known in (("Inbox", "inbox"), ("Sent Items", "sentitems"),
                                 ("Deleted Items", "deleteditems"), ("Archive", "archive")):
            self._add_folder(name, ROOT_ID, well_known)
        self.messages: dict[str, Message] = {}
        self.events: list[tuple[int, str, str]] = []  # (seq, folder id, message id)
        self.seq = 0
        self.snapshots: dict[str, tuple[list[dict[str, Any]], int, str]] = {}
        self.sent: list[bytes] = []
        self.requests: Counter[str] = Counter()
        self.throttle_left = 0
        self.throttle_seconds = 1
        self.throttle_batch_items = 0
        self.moves_without_immutable = 0
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> GraphDouble:
        double = self

        class Handler(_Handler):
            owner = double

        self._server = QuietServer((HOST, 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> GraphDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests arrange and look at ----------------------------------------------------
    def _add_folder(self, name: str, parent: str, well_known: str | None = None) -> Folder:
        folder = Folder(_new_id(), name, parent, well_known)
        self.folders[folder.id] = folder
        return folder

    def folder_named(self, path: str) -> Folder | None:
        parent = ROOT_ID
        found = None
        for name in path.split("/"):
            found = next((f for f in self.folders.values()
                          if f.parent == parent and f.name.lower() == name.lower()), None)
            if found is None:
                return None
            parent = found.id
        return found

    def deliver(self, raw: bytes, folder: str = "Inbox") -> str:
        with self.lock:
            target = self.folder_named(folder)
            assert target is not None
            self.seq += 1
            header = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
            mid = next((line.split(":", 1)[1].strip() for line in header.splitlines()
                        if line.lower().startswith("message-id:")), None)
            message = Message(_new_id(), target.id, raw,
                              f"2026-12-01T{(self.seq // 3600) % 24:02d}:"
                              f"{(self.seq // 60) % 60:02d}:{self.seq % 60:02d}Z", mid)
            self.messages[message.id] = message
            self.events.append((self.seq, target.id, message.id))
            return message.id

    def raws(self, folder: str) -> list[bytes]:
        with self.lock:
            target = self.folder_named(folder)
            if target is None:
                return []
            return [m.raw for m in self.messages.values() if m.folder == target.id]

    def count(self, folder: str) -> int:
        return len(self.raws(folder))

    def throttle(self, requests: int, retry_after: int = 1) -> None:
        with self.lock:
            self.throttle_left = requests
            self.throttle_seconds = retry_after

    # -- request handling ------------------------------------------------------------------
    def authorize(self, header: str | None) -> None:
        token = (header or "").removeprefix("Bearer ")
        answer = self.oauth.introspect(token) if header else {"active": False}
        if not answer.get("active"):
            raise _Error(401, "InvalidAuthenticationToken",
                         "Access token has expired or is not yet valid.",
                         {"WWW-Authenticate": 'Bearer realm="", error="invalid_token"'})
        scope = str(answer.get("scope") or "")
        if "graph.microsoft.com" not in scope and answer.get("username") != self.mailbox:
            raise _Error(403, "ErrorAccessDenied", "Access is denied. Check credentials and "
                         "try again.")

    def folder(self, key: str) -> Folder:
        key = unquote(key)
        found = self.folders.get(key) or next(
            (f for f in self.folders.values() if f.well_known == key.lower()), None)
        if found is None:
            raise _Error(404, "ErrorItemNotFound", "The specified object was not found in the "
                         "store.")
        return found

    def folder_json(self, folder: Folder) -> dict[str, Any]:
        count = sum(1 for m in self.messages.values() if m.folder == folder.id)
        return {"id": folder.id, "displayName": folder.name, "parentFolderId": folder.parent,
                "childFolderCount": sum(1 for f in self.folders.values()
                                        if f.parent == folder.id),
                "unreadItemCount": count, "totalItemCount": count, "isHidden": False}

    def message(self, message_id: str) -> Message:
        found = self.messages.get(unquote(message_id))
        if found is None:
            raise _Error(404, "ErrorItemNotFound", "The specified object was not found in the "
                         "store.")
        return found

    @staticmethod
    def message_json(message: Message) -> dict[str, Any]:
        return {"@odata.type": "#microsoft.graph.message", "id": message.id,
                "receivedDateTime": message.received,
                "internetMessageId": message.internet_message_id,
                "parentFolderId": message.folder}

    def delta(self, folder: Folder, query: dict[str, str], page_size: int,
              base: str) -> dict[str, Any]:
        if "$skiptoken" in query:
            items, token, _ = self.snapshots[query["$skiptoken"]]
        else:
            if "$deltatoken" in query:
                since = int(query["$deltatoken"])
                changed = dict.fromkeys(mid for seq, fid, mid in self.events
                                        if seq > since and fid == folder.id)
                items = []
                for mid in changed:
                    message = self.messages.get(mid)
                    if message is not None and message.folder == folder.id:
                        items.append(self.message_json(message))
                    else:
                        items.append({"id": mid, "@removed": {"reason": "deleted"}})
            else:
                items = [self.message_json(m) for m in self.messages.values()
                         if m.folder == folder.id]
            token = self.seq
        page, rest = items[:page_size], items[page_size:]
        body: dict[str, Any] = {
            "@odata.context": f"{base}/$metadata#Collection(message)", "value": page}
        path = f"{base}/users/{self.mailbox}/mailFolders/{folder.id}/messages/delta"
        if rest:
            skip = secrets.token_urlsafe(16)
            self.snapshots[skip] = (rest, token, folder.id)
            body["@odata.nextLink"] = f"{path}?$skiptoken={skip}"
        else:
            body["@odata.deltaLink"] = f"{path}?$deltatoken={token}"
        return body

    def move(self, message: Message, destination: str, immutable: bool) -> dict[str, Any]:
        target = self.folder(destination)
        source = message.folder
        self.seq += 1
        self.events.append((self.seq, source, message.id))
        del self.messages[message.id]
        if not immutable:
            self.moves_without_immutable += 1
            message.id = _new_id()
        message.folder = target.id
        self.messages[message.id] = message
        self.events.append((self.seq, target.id, message.id))
        return self.message_json(message)

    def delete(self, message: Message) -> None:
        self.seq += 1
        self.events.append((self.seq, message.folder, message.id))
        del self.messages[message.id]


class _Handler(BaseHTTPRequestHandler):
    owner: GraphDouble
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any = None, *, raw: bytes | None = None,
              headers: dict[str, str] | None = None) -> None:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else b"")
        self.send_response(status)
        if raw is not None:
            self.send_header("Content-Type", "text/plain")
        elif body is not None:
            self.send_header("Content-Type", "application/json;odata.metadata=minimal")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        owner = self.owner
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        segments = [unquote(s) for s in parts.path.strip("/").split("/")]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            with owner.lock:
                owner.requests[method] += 1
                if owner.throttle_left > 0:
                    owner.throttle_left -= 1
                    raise _Error(429, "TooManyRequests", "Please retry again later.",
                                 {"Retry-After": str(owner.throttle_seconds)})
                owner.authorize(self.headers.get("Authorization"))
                if segments == ["v1.0", "$batch"] and method == "POST":
                    answer = self._batch(json.loads(body or b"{}"))
                    self._send(200, answer)
                    return
                if segments[:2] != ["v1.0", "users"] or len(segments) < 4:
                    raise _Error(400, "BadRequest", "Resource not found for the segment.")
                if segments[2].lower() != owner.mailbox:
                    raise _Error(404, "ErrorInvalidUser", f"The requested user "
                                 f"'{segments[2]}' is invalid.")
                status, answer, extra = self._route(
                    method, segments[3:], query, body, self.headers.get("Prefer", ""),
                    self.headers.get("Content-Type", ""))
            if isinstance(answer, bytes):
                self._send(status, raw=answer)
            else:
                self._send(status, answer, headers=extra)
        except _Error as exc:
            self._send(exc.status, exc.body, headers=exc.headers)

    def _batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """JSON batching: each request answered on its own (``id``, ``status``, ``headers``,
        ``body``); ``throttle_batch_items`` makes that many items answer 429 + Retry-After."""
        owner = self.owner
        items = batch.get("requests") or []
        if len(items) > 20:
            raise _Error(400, "BadRequest", "The number of requests in a batch exceeds 20.")
        responses = []
        for item in items:
            url = str(item.get("url", ""))
            segments = [unquote(s) for s in urlsplit(url).path.strip("/").split("/")]
            headers = item.get("headers") or {}
            try:
                if owner.throttle_batch_items > 0:
                    owner.throttle_batch_items -= 1
                    raise _Error(429, "ApplicationThrottled", "Application is over its "
                                 "MailboxConcurrency limit.", {"Retry-After": "1"})
                if segments[:1] != ["users"] or len(segments) < 3 or \
                        segments[1].lower() != owner.mailbox:
                    raise _Error(404, "ErrorInvalidUser", "The requested user is invalid.")
                body = json.dumps(item["body"]).encode() if "body" in item else b""
                status, answer, extra = self._route(
                    str(item.get("method", "GET")), segments[2:], {}, body,
                    str(headers.get("Prefer", "")), str(headers.get("Content-Type", "")))
                responses.append({"id": item.get("id"), "status": status, "headers": extra,
                                  **({"body": answer} if answer is not None else {})})
            except _Error as exc:
                responses.append({"id": item.get("id"), "status": exc.status,
                                  "headers": exc.headers, "body": exc.body})
        return {"responses": responses}

    def _route(self, method: str, rest: list[str], query: dict[str, str],
               body: bytes, prefer: str, content_type: str) -> tuple[int, Any, dict[str, str]]:
        owner = self.owner
        base = f"http://{HOST}:{owner.port}/v1.0"
        if rest[0] == "sendMail" and method == "POST":
            if not content_type.startswith("text/plain"):
                raise _Error(400, "ErrorInvalidRequest", "This sample expects MIME.")
            owner.sent.append(base64.b64decode(body))
            return 202, None, {}
        if rest[0] == "messages" and len(rest) >= 2:
            message = owner.message(rest[1])
            if len(rest) == 3 and rest[2] == "$value" and method == "GET":
                return 200, message.raw, {}
            if len(rest) == 3 and rest[2] == "move" and method == "POST":
                destination = json.loads(body or b"{}").get("destinationId", "")
                moved = owner.move(message, destination, 'IdType="ImmutableId"' in prefer)
                return 201, moved, {}
            if len(rest) == 2 and method == "DELETE":
                owner.delete(message)
                return 204, None, {}
            if len(rest) == 2 and method == "GET":
                return 200, owner.message_json(message), {}
        if rest[0] == "mailFolders":
            if len(rest) == 1:
                parent = ROOT_ID
            else:
                folder = owner.folder(rest[1])
                parent = folder.id
                if len(rest) == 2 and method == "GET":
                    return 200, owner.folder_json(folder), {}
                if len(rest) == 4 and rest[2:] == ["messages", "delta"] and method == "GET":
                    # odata.maxpagesize is a preference: the server may send fewer.
                    size = owner.page_size
                    if "odata.maxpagesize=" in prefer:
                        asked = int(prefer.split("odata.maxpagesize=")[1].split(",")[0])
                        size = min(size, asked)
                    return 200, owner.delta(folder, query, size, base), {}
                if rest[2:] != ["childFolders"]:
                    raise _Error(400, "BadRequest", "Unsupported segment.")
            children = [f for f in owner.folders.values() if f.parent == parent]
            if method == "GET":
                wanted = query.get("$filter", "")
                if wanted.startswith("displayName eq "):
                    name = wanted[len("displayName eq "):].strip("'").replace("''", "'")
                    children = [f for f in children if f.name.lower() == name.lower()]
                return 200, {"value": [owner.folder_json(f) for f in children]}, {}
            if method == "POST":
                name = json.loads(body or b"{}").get("displayName", "")
                if any(f.name.lower() == name.lower() for f in children):
                    raise _Error(409, "ErrorFolderExists", "A folder with the specified name "
                                 "already exists.")
                return 201, owner.folder_json(owner._add_folder(name, parent)), {}
        raise _Error(400, "BadRequest", "Resource not found for the segment.")
