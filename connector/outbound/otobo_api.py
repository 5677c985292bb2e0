"""The outbound worker's view of OTOBO / Znuny: the same calls as ``zendesk_api``, made with
GenericInterface operations through the inbound adapter's session.

OTOBO has no ticket tags. The request to send is the ticket dynamic field ``PECReply`` (its
value is the account that should send, set by the agent from a dropdown); this module shows it
to the worker as that account's reply tag, so the worker's checks (``asked_to_send``) and the
sweep are the ones Zendesk uses. Writing the result removes the reply tag: here that empties
``PECReply``. The other outcome tags (``pec_sent`` ...) go where the adapter keeps tags
(``host.otobo.tags_field``).

Reading: ``TicketGet`` with ``AllArticles``, ``ArticleSenderType=agent``, ``ArticleOrder=DESC``
and ``Attachments`` / ``GetAttachmentContents`` (RotherOSS/otobo
``Kernel/GenericInterface/Operation/Ticket/TicketGet.pm``): the agent's latest article first,
its files in the same answer (kept until the worker downloads them).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator, Mapping
from html import unescape
from typing import Any

from connector.errors import PermanentHostError
from connector.hosts.base import Comment
from connector.hosts.otobo import OtoboAdapter, id_list
from connector.mail.html import html_to_text
from connector.outbound.model import (
    AttachmentRef,
    AttachmentTooLarge,
    CommentView,
    TaggedTicket,
    TicketView,
)
from connector.outbound.otobo_hook import OtoboInvokerHook

#: The ticket dynamic field whose value names the account asked to send.
DEFAULT_REPLY_FIELD = "PECReply"


class OtoboOutboundAPI:
    """``reply_tags`` maps each outbound account's reply tag to the account name."""

    def __init__(self, adapter: OtoboAdapter, reply_tags: Mapping[str, str], *,
                 reply_field: str = DEFAULT_REPLY_FIELD) -> None:
        self.adapter = adapter
        self.reply_field = reply_field
        self.reply_tags = dict(reply_tags)
        self._tag_of = {account: tag for tag, account in self.reply_tags.items()}
        self._files: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def webhook(self) -> OtoboInvokerHook:
        """How the bridge's webhook reads this host's invoker (it sends the TicketID)."""
        return OtoboInvokerHook(self.ticket_number)

    def ticket_number(self, internal_id: int) -> str | None:
        """The TicketNumber of an internal TicketID (what OTOBO's invoker sends)."""
        raw = self._retry("TicketGet", lambda: self.adapter.get_raw(internal_id))
        return str(raw["TicketNumber"]) if raw is not None else None

    def _raw(self, ticket_id: str, **params: Any) -> dict[str, Any]:
        internal = self.adapter.internal_id(ticket_id)
        if internal is None:
            raise PermanentHostError(f"TicketGet: ticket {ticket_id} does not exist")
        answer = self.adapter.api.call("TicketGet", "GET", f"/Ticket/{internal}",
                                       {"DynamicFields": 1, **params})
        tickets = answer.get("Ticket") or []
        if not tickets:
            raise PermanentHostError(f"TicketGet: ticket {ticket_id} does not exist")
        return dict(tickets[0])

    def ticket(self, ticket_id: str) -> TicketView:
        raw = self._retry("TicketGet", lambda: self._raw(ticket_id))
        fields = {str(f.get("Name")): f.get("Value") for f in raw.get("DynamicField") or []}
        info = self.adapter.ticket_info(raw)
        tags = list(info.tags)
        asked = str(fields.get(self.reply_field) or "")
        if asked in self._tag_of:
            tags.append(self._tag_of[asked])
        return TicketView(id=info.id, title=info.subject, status=info.status,
                          requester_email=info.requester_email or "",
                          external_id=info.external_id or "",
                          updated_at=str(raw.get("Changed") or ""), tags=tuple(tags))

    def comments(self, ticket_id: str, *, max_pages: int = 5) -> Iterator[CommentView]:
        """The agents' articles, newest first (internal notes too: the worker decides)."""
        raw = self._retry("TicketGet", lambda: self._raw(
            ticket_id, AllArticles=1, ArticleSenderType="agent", ArticleOrder="DESC",
            Attachments=1, GetAttachmentContents=1))
        for article in raw.get("Article") or []:
            yield self._comment(article)

    def _comment(self, article: Mapping[str, Any]) -> CommentView:
        body = str(article.get("Body") or "")
        is_html = str(article.get("ContentType") or "").startswith("text/html")
        refs = []
        for n, att in enumerate(article.get("Attachment") or []):
            url = f"otobo:article/{article.get('ArticleID')}/{n}"
            data = base64.b64decode(att.get("Content") or "")
            with self._lock:
                self._files[url] = data
            refs.append(AttachmentRef(id=n, filename=str(att.get("Filename") or "file"),
                                      content_type=str(att.get("ContentType") or
                                                       "application/octet-stream"),
                                      size=len(data), content_url=url))
        sender = str(article.get("From") or "")
        name, _, email = sender.rpartition("<")
        return CommentView(
            id=int(article.get("ArticleID") or 0),
            public=int(article.get("IsVisibleForCustomer") or 0) == 1,
            text=html_to_text(body) if is_html else body,
            html=body if is_html else "",
            author_name=unescape(name.strip().strip('"')),
            author_email=email.rstrip(">").strip() if email else sender,
            created_at=str(article.get("CreateTime") or ""),
            attachments=tuple(refs))

    def download(self, attachment: AttachmentRef, *, limit: int) -> bytes:
        with self._lock:
            data = self._files.pop(attachment.content_url, None)
        if data is None:
            raise PermanentHostError(f"attachment {attachment.filename} is no longer at hand")
        if len(data) > limit:
            raise AttachmentTooLarge(f"attachment {attachment.filename} ({len(data)} bytes) is "
                                     f"over the remaining message budget of {limit} bytes")
        return data

    def tagged_tickets(self, tag: str) -> list[TaggedTicket]:
        """Tickets whose ``PECReply`` names the tag's account (the sweep's look-up)."""
        account = self.reply_tags.get(tag)
        if account is None:
            return []  # the pending tag: OTOBO's invoker changes nothing on the ticket

        def search() -> list[int]:
            answer = self.adapter.api.call("TicketSearch", "POST", "/TicketSearch", {
                f"DynamicField_{self.reply_field}": {"Equals": account},
                "StateType": "Open"})
            return [int(t) for t in id_list(answer.get("TicketID"))]

        found = []
        for internal in self._retry("TicketSearch", search):
            raw = self.adapter.get_raw(internal)
            if raw is not None:
                found.append(TaggedTicket(str(raw["TicketNumber"]), str(raw.get("Changed") or "")))
        return found

    def add_note(self, ticket_id: str, text: str, *, add_tags: tuple[str, ...] = (),
                 remove_tags: tuple[str, ...] = (), dedupe_key: str | None = None) -> None:
        """An internal note; a removed reply tag empties ``PECReply`` in the same update."""
        controls: tuple[tuple[str, str], ...] = ()
        if any(tag in self.reply_tags for tag in remove_tags):
            controls = ((f"X-OTOBO-FollowUp-DynamicField-{self.reply_field}", ""),)
        self.adapter.add_comment(Comment(
            ticket_id=ticket_id, body_text=text, public=False, subject="PEC reply",
            add_tags=add_tags,
            remove_tags=tuple(t for t in remove_tags if t not in self.reply_tags),
            dedupe_key=dedupe_key, controls=controls))

    def _retry(self, operation: str, send: Any) -> Any:
        return self.adapter.retry(operation, send)
