"""The Zendesk calls the outbound path needs, on top of the ZendeskAdapter's authenticated,
retrying request method.

Reading: a ticket with its requester, its comments (newest first) with their authors, a
comment attachment's bytes, a tag search for the sweep. Writing: the result note (through the
adapter's ``add_comment``, which deduplicates by audit metadata), and the install objects:
webhooks (Webhooks API), trigger categories, triggers and macros (Support API).

Attachment ``content_url`` links may redirect to another host (Zendesk's file storage): the
redirect target is fetched without credentials, which never leave the Zendesk host.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from connector.errors import HostError, PermanentHostError, TransientHostError
from connector.hosts.base import Comment
from connector.hosts.zendesk import ZendeskAdapter, certificate_error, zendesk_ticket_id
from connector.outbound.model import (
    AttachmentRef,
    AttachmentTooLarge,
    CommentView,
    TaggedTicket,
    TicketView,
)
from connector.outbound.zendesk_hook import ZendeskHook
from connector.tls import is_loopback

log = logging.getLogger(__name__)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_PAGES = 50


class ZendeskOutboundAPI:
    """Outbound-specific Zendesk calls. Raises HostError subclasses like the adapter."""

    def __init__(self, adapter: ZendeskAdapter, *,
                 download_session: requests.Session | None = None) -> None:
        self.adapter = adapter
        self.base_url = adapter.settings.base_url
        self._origin = urlsplit(self.base_url)[:2]
        self._download = download_session or requests.Session()
        self._users: dict[int, tuple[str, str]] = {}

    def webhook(self) -> ZendeskHook:
        """How the bridge's webhook reads this host's signed trigger deliveries."""
        return ZendeskHook()

    # -- plumbing ------------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, operation: str,
                 params: Mapping[str, str] | None = None, body: Any = None,
                 allow: frozenset[int] = frozenset(), ticket_id: str | None = None,
                 retry_ambiguous: bool = True) -> requests.Response:
        # The adapter's authenticated call with retries and the per-ticket update limit.
        call = self.adapter.request
        data = json.dumps(body, ensure_ascii=False).encode("utf-8") if body is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else None
        return call(method, path, operation=operation, params=params, data=data,
                    headers=headers, allow=allow, ticket_id=ticket_id,
                    retry_ambiguous=retry_ambiguous)

    @staticmethod
    def _json(resp: requests.Response, operation: str) -> dict[str, Any]:
        try:
            data = resp.json()
        except ValueError as exc:
            raise TransientHostError(f"{operation}: HTTP {resp.status_code} answer is not JSON",
                                     status=resp.status_code) from exc
        if not isinstance(data, dict):
            raise TransientHostError(f"{operation}: unexpected answer shape")
        return data

    def _pages(self, path: str, params: Mapping[str, str] | None,
               operation: str) -> Iterator[dict[str, Any]]:
        """Offset (``next_page``) or cursor (``meta.has_more`` + ``links.next``) pages, at
        most _MAX_PAGES of them."""
        for number, page in enumerate(self.adapter.pages(path, params, operation)):
            if number >= _MAX_PAGES:
                log.warning("%s: stopped after %d pages", operation, _MAX_PAGES)
                return
            yield page

    # -- tickets ------------------------------------------------------------------------------
    def ticket(self, ticket_id: str) -> TicketView:
        op = f"get ticket #{ticket_id}"
        data = self._json(self._request("GET", f"/api/v2/tickets/{zendesk_ticket_id(ticket_id)}",
                                        params={"include": "users"}, operation=op,
                                        ticket_id=ticket_id), op)
        ticket = data.get("ticket") or {}
        if not isinstance(ticket.get("id"), int):
            raise TransientHostError(f"{op}: answer without a ticket")
        users = {u.get("id"): u for u in data.get("users") or [] if isinstance(u, dict)}
        requester = users.get(ticket.get("requester_id")) or {}
        if not requester and ticket.get("requester_id"):
            name, email = self.user(int(ticket["requester_id"]))
            requester = {"name": name, "email": email}
        fields = {}
        for item in ticket.get("custom_fields") or []:
            if isinstance(item, dict) and isinstance(item.get("id"), int) \
                    and item.get("value") not in (None, ""):
                fields[item["id"]] = str(item["value"])
        return TicketView(
            id=str(ticket["id"]),
            title=str(ticket.get("subject") or ticket.get("raw_subject") or ""),
            status=str(ticket.get("status") or ""),
            requester_name=str(requester.get("name") or ""),
            requester_email=str(requester.get("email") or ""),
            external_id=str(ticket.get("external_id") or ""),
            url=f"{self.base_url}/agent/tickets/{int(ticket['id'])}",
            updated_at=str(ticket.get("updated_at") or ""),
            tags=tuple(str(t) for t in ticket.get("tags") or ()),
            fields=fields,
        )

    def user(self, user_id: int) -> tuple[str, str]:
        """(name, email) of a user, cached."""
        if user_id in self._users:
            return self._users[user_id]
        op = f"get user {user_id}"
        resp = self._request("GET", f"/api/v2/users/{int(user_id)}", operation=op,
                             allow=frozenset({404}))
        user: dict[str, Any] = {}
        if resp.status_code != 404:
            user = self._json(resp, op).get("user") or {}
        found = (str(user.get("name") or ""), str(user.get("email") or ""))
        self._users[user_id] = found
        return found

    def comments(self, ticket_id: str, *, max_pages: int = 5) -> Iterator[CommentView]:
        """The ticket's comments, newest first, authors filled in."""
        op = f"comments of ticket #{ticket_id}"
        pages = self._pages(f"/api/v2/tickets/{zendesk_ticket_id(ticket_id)}/comments",
                            {"sort_order": "desc", "include": "users"}, op)
        for number, page in enumerate(pages):
            for user in page.get("users") or []:
                if isinstance(user, dict) and isinstance(user.get("id"), int):
                    self._users[user["id"]] = (str(user.get("name") or ""),
                                               str(user.get("email") or ""))
            for raw in page.get("comments") or []:
                if isinstance(raw, dict) and isinstance(raw.get("id"), int):
                    yield self._comment(raw)
            if number + 1 >= max_pages:
                return

    def _comment(self, raw: Mapping[str, Any]) -> CommentView:
        author_id = raw.get("author_id") if isinstance(raw.get("author_id"), int) else None
        name, email = self.user(author_id) if author_id else ("", "")
        attachments = tuple(
            AttachmentRef(
                id=int(a.get("id") or 0),
                filename=str(a.get("file_name") or "attachment"),
                content_type=str(a.get("content_type") or "application/octet-stream"),
                size=int(a.get("size") or 0),
                content_url=str(a.get("content_url") or ""),
            )
            for a in raw.get("attachments") or [] if isinstance(a, dict) and a.get("content_url")
        )
        return CommentView(
            id=int(raw["id"]),
            public=bool(raw.get("public", True)),
            text=str(raw.get("plain_body") or raw.get("body") or ""),
            html=str(raw.get("html_body") or ""),
            author_id=author_id,
            author_name=name,
            author_email=email,
            created_at=str(raw.get("created_at") or ""),
            attachments=attachments,
        )

    def download(self, attachment: AttachmentRef, *, limit: int) -> bytes:
        """The attachment's bytes (at most ``limit``, else AttachmentTooLarge)."""
        op = f"download {attachment.filename}"
        if attachment.size and attachment.size > limit:
            raise AttachmentTooLarge(f"{op}: {attachment.size} bytes, over {limit}")
        url = attachment.content_url
        if urlsplit(url)[:2] == self._origin:
            resp = self._request("GET", url, operation=op, allow=_REDIRECTS)
            if resp.status_code not in _REDIRECTS:
                if len(resp.content) > limit:
                    raise AttachmentTooLarge(f"{op}: over {limit} bytes")
                return resp.content
            url = urljoin(url, resp.headers.get("Location", ""))
        return self._download_anonymous(url, op, limit)

    def _download_anonymous(self, url: str, op: str, limit: int) -> bytes:
        parts = urlsplit(url)
        if parts.scheme != "https" and not (parts.scheme == "http"
                                            and is_loopback(parts.hostname or "")):
            raise PermanentHostError(f"{op}: refusing to download from {url}")
        settings = self.adapter.settings
        verify: bool | str = settings.ca_file or settings.verify_tls
        try:
            with self._download.get(url, stream=True, timeout=settings.timeout,
                                    verify=verify) as resp:
                if resp.status_code >= 500 or resp.status_code == 429:
                    raise TransientHostError(f"{op}: HTTP {resp.status_code}",
                                             status=resp.status_code)
                if resp.status_code >= 400:
                    raise PermanentHostError(f"{op}: HTTP {resp.status_code}",
                                             status=resp.status_code)
                chunks, size = [], 0
                for chunk in resp.iter_content(64 * 1024):
                    size += len(chunk)
                    if size > limit:
                        raise AttachmentTooLarge(f"{op}: over {limit} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
        except requests.RequestException as exc:
            permanent = certificate_error(exc, op, parts.hostname or "")
            if permanent is not None:
                raise permanent from exc
            raise TransientHostError(f"{op}: {type(exc).__name__}") from exc

    def tagged_tickets(self, tag: str) -> list[TaggedTicket]:
        """Open tickets carrying ``tag`` (the search index lags by minutes)."""
        op = f"search tickets tagged {tag}"
        found: list[TaggedTicket] = []
        for page in self._pages("/api/v2/search",
                                {"query": f"type:ticket tags:{tag} status<closed"}, op):
            for item in page.get("results") or []:
                if isinstance(item, dict) and item.get("result_type", "ticket") == "ticket" \
                        and isinstance(item.get("id"), int):
                    found.append(TaggedTicket(str(item["id"]), str(item.get("updated_at") or "")))
        return found

    def add_note(self, ticket_id: str, text: str, *, add_tags: tuple[str, ...] = (),
                 remove_tags: tuple[str, ...] = (), dedupe_key: str | None = None) -> None:
        """An internal note with tag changes, in one ticket update."""
        self.adapter.add_comment(Comment(ticket_id=ticket_id, body_text=text, public=False,
                                         add_tags=add_tags, remove_tags=remove_tags,
                                         dedupe_key=dedupe_key))

    # -- webhooks (Webhooks API) ---------------------------------------------------------------
    def webhooks(self, name_contains: str) -> list[dict[str, Any]]:
        op = "list webhooks"
        found: list[dict[str, Any]] = []
        for page in self._pages("/api/v2/webhooks", {"filter[name_contains]": name_contains,
                                                      "page[size]": "100"}, op):
            found.extend(w for w in page.get("webhooks") or [] if isinstance(w, dict))
        return found

    def create_webhook(self, webhook: Mapping[str, Any]) -> dict[str, Any]:
        op = f"create webhook {webhook.get('name')!r}"
        resp = self._request("POST", "/api/v2/webhooks", operation=op,
                             body={"webhook": dict(webhook)}, retry_ambiguous=False)
        created = self._json(resp, op).get("webhook") or {}
        if not created.get("id"):
            raise TransientHostError(f"{op}: answer without a webhook id")
        return created

    def patch_webhook(self, webhook_id: str, changes: Mapping[str, Any]) -> None:
        self._request("PATCH", f"/api/v2/webhooks/{webhook_id}",
                      operation=f"update webhook {webhook_id}", body={"webhook": dict(changes)})

    def delete_webhook(self, webhook_id: str) -> None:
        self._request("DELETE", f"/api/v2/webhooks/{webhook_id}",
                      operation=f"delete webhook {webhook_id}", allow=frozenset({404}))

    def webhook_signing_secret(self, webhook_id: str) -> str | None:
        """The webhook's signing secret, or None when Zendesk will not show it."""
        op = f"signing secret of webhook {webhook_id}"
        resp = self._request("GET", f"/api/v2/webhooks/{webhook_id}/signing_secret",
                             operation=op, allow=frozenset({403, 404}))
        if resp.status_code != 200:
            return None
        secret = (self._json(resp, op).get("signing_secret") or {}).get("secret")
        return str(secret) if secret else None

    # -- trigger categories, triggers, macros (Support API) ------------------------------------
    def trigger_categories(self) -> list[dict[str, Any]]:
        op = "list trigger categories"
        found: list[dict[str, Any]] = []
        for page in self._pages("/api/v2/trigger_categories", {"page[size]": "100"}, op):
            found.extend(c for c in page.get("trigger_categories") or [] if isinstance(c, dict))
        return found

    def create_trigger_category(self, name: str) -> dict[str, Any]:
        op = f"create trigger category {name!r}"
        resp = self._request("POST", "/api/v2/trigger_categories", operation=op,
                             body={"trigger_category": {"name": name}}, retry_ambiguous=False)
        category = self._json(resp, op).get("trigger_category") or {}
        if not category.get("id"):
            raise TransientHostError(f"{op}: answer without a category id")
        return category

    def delete_trigger_category(self, category_id: str) -> None:
        self._request("DELETE", f"/api/v2/trigger_categories/{category_id}",
                      operation=f"delete trigger category {category_id}",
                      allow=frozenset({404}))

    def triggers(self) -> list[dict[str, Any]]:
        op = "list triggers"
        found: list[dict[str, Any]] = []
        for page in self._pages("/api/v2/triggers", None, op):
            found.extend(t for t in page.get("triggers") or [] if isinstance(t, dict))
        return found

    def create_trigger(self, trigger: Mapping[str, Any]) -> dict[str, Any]:
        op = f"create trigger {trigger.get('title')!r}"
        resp = self._request("POST", "/api/v2/triggers", operation=op,
                             body={"trigger": dict(trigger)}, retry_ambiguous=False)
        return self._json(resp, op).get("trigger") or {}

    def update_trigger(self, trigger_id: int, trigger: Mapping[str, Any]) -> dict[str, Any]:
        op = f"update trigger {trigger_id}"
        resp = self._request("PUT", f"/api/v2/triggers/{int(trigger_id)}", operation=op,
                             body={"trigger": dict(trigger)})
        return self._json(resp, op).get("trigger") or {}

    def delete_trigger(self, trigger_id: int) -> None:
        self._request("DELETE", f"/api/v2/triggers/{int(trigger_id)}",
                      operation=f"delete trigger {trigger_id}", allow=frozenset({404}))

    def macros(self) -> list[dict[str, Any]]:
        op = "list macros"
        found: list[dict[str, Any]] = []
        for page in self._pages("/api/v2/macros", None, op):
            found.extend(m for m in page.get("macros") or [] if isinstance(m, dict))
        return found

    def create_macro(self, macro: Mapping[str, Any]) -> dict[str, Any]:
        op = f"create macro {macro.get('title')!r}"
        resp = self._request("POST", "/api/v2/macros", operation=op,
                             body={"macro": dict(macro)}, retry_ambiguous=False)
        return self._json(resp, op).get("macro") or {}

    def update_macro(self, macro_id: int, macro: Mapping[str, Any]) -> dict[str, Any]:
        op = f"update macro {macro_id}"
        resp = self._request("PUT", f"/api/v2/macros/{int(macro_id)}", operation=op,
                             body={"macro": dict(macro)})
        return self._json(resp, op).get("macro") or {}

    def delete_macro(self, macro_id: int) -> None:
        self._request("DELETE", f"/api/v2/macros/{int(macro_id)}",
                      operation=f"delete macro {macro_id}", allow=frozenset({404}))


__all__ = ["AttachmentTooLarge", "HostError", "ZendeskOutboundAPI"]
