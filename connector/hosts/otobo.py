"""OTOBO 10/11 and Znuny 6.5/7 as the helpdesk, through the GenericInterface REST web service.

Ticket identity: the bridge knows a ticket by its **TicketNumber** (``2026112310000012``), the
number agents see and the one OTOBO's ``Ticket#`` hook puts in subjects, so a subject reference
``[Ticket#2026112310000012]`` finds its ticket the way PostMaster's
``Kernel/System/PostMaster/FollowUpCheck/Subject.pm`` does. Operations that need the internal
TicketID (TicketGet, the ``/Ticket/:TicketID`` route) get it from TicketSearch on
``TicketNumber`` once; the pair never changes, so it is cached.

Exactly once without an idempotency key. ``TicketCreate`` has none and is not atomic
(``Kernel/GenericInterface/Operation/Ticket/TicketCreate.pm``, ``_TicketCreate``: the ticket is
created, then its ticket-level dynamic fields are set, then the article, its dynamic fields and
attachments). The bridge writes its external id into the ticket dynamic field
``PMBMessageID`` in that same request, so the id is on the ticket before the article is
attempted; every create (first try, retry, resume after a crash) first runs TicketSearch on that
field. A ticket found without the bridge's article (the create stopped between ticket and
article) is completed with TicketUpdate instead of being created again. Comments carry their
dedupe key in the article dynamic field ``PMBArticleKey``; ``comment_exists`` reads it back
with TicketGet. (TicketUpdate sets an article's dynamic fields after creating the article; an
update failing inside OTOBO between the two would leave an article without its key, which a
retry writes again. That window lies inside one OTOBO request, not between the bridge's calls.)

Tags are a host capability OTOBO lacks: with ``tags_field`` set they go into that text dynamic
field, space-separated (a multiselect would need every tag configured in advance), otherwise
they are not sent (logged at debug).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from connector.errors import PermanentHostError
from connector.hosts.base import Comment, CreatedTicket, NewTicket, TicketInfo, Upload
from connector.hosts.otobo_api import GenericInterfaceClient, OtoboOperationError
from connector.hosts.otobo_payload import (
    DEFAULT_PRIORITIES,
    DEFAULT_STATES,
    OtoboVocabulary,
    attachment_entries,
    dynamic_field_list,
    fit_attachments,
    left_out_note,
)
from connector.hosts.retry import RetryPolicy, call_with_retries

log = logging.getLogger(__name__)

#: Receipt tags the PEC stage adds -> the delivery state a receipt leaves in
#: ``receipt_state_field``, with a rank so a late acceptance never hides a delivery or a failure.
RECEIPT_STATES: Mapping[str, tuple[int, str]] = {
    "pec_accepted": (1, "accepted"), "pec_taken_in_charge": (2, "taken in charge"),
    "pec_delivered": (3, "delivered"), "pec_delivery_warning": (3, "delivery warning"),
    "pec_delivery_failed": (4, "delivery failed"),
}
#: TicketGet's ``StateType`` values that make a ticket closed for the bridge.
CLOSED_STATE_TYPES = frozenset({"closed", "merged", "removed"})
#: JSON around the attachments of one request (ticket, article, body) besides the body itself.
_REQUEST_OVERHEAD = 4096


@dataclass(frozen=True)
class OtoboSettings:
    base_url: str  # https://host/otobo/nph-genericinterface.pl/Webservice/PostmasterBridge
    user: str
    password: str = field(repr=False)
    queue: str = "Raw"
    state: str = "new"
    priority: str = "3 normal"
    ticket_type: str | None = None
    message_id_field: str = "PMBMessageID"
    article_key_field: str = "PMBArticleKey"
    tags_field: str | None = None
    receipt_state_field: str | None = None  # where PEC receipts leave the delivery state
    max_length: int = 100_000_000  # the web service's MaxLength (bytes of request body)
    states: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_STATES))
    priorities: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PRIORITIES))
    timeout: float | tuple[float, float] = 30.0
    max_attempts: int = 5
    max_backoff: float = 30.0
    verify: bool | str = True

    @classmethod
    def from_host_config(cls, cfg: Any) -> OtoboSettings:
        o = cfg.otobo
        verify: bool | str = cfg.ca_file if (cfg.verify_tls and cfg.ca_file) else cfg.verify_tls
        return cls(base_url=cfg.url, user=o.user, password=o.password, queue=o.queue,
                   state=o.state, priority=o.priority, ticket_type=o.ticket_type,
                   message_id_field=o.message_id_field, article_key_field=o.article_key_field,
                   tags_field=o.tags_field, receipt_state_field=o.receipt_state_field,
                   max_length=o.max_length,
                   states={**DEFAULT_STATES, **o.states},
                   priorities={**DEFAULT_PRIORITIES, **o.priorities},
                   timeout=cfg.timeout, max_attempts=cfg.max_attempts, verify=verify)


class OtoboAdapter:
    """The HostAdapter for OTOBO and Znuny (same GenericInterface)."""

    name = "otobo"

    def __init__(self, settings: OtoboSettings, *, session: requests.Session | None = None,
                 sleep: Callable[[float], object] = time.sleep) -> None:
        self.settings = settings
        self.api = GenericInterfaceClient(session or requests.Session(), settings.base_url,
                                          user=settings.user, password=settings.password,
                                          timeout=settings.timeout, verify=settings.verify)
        self.vocabulary = OtoboVocabulary(settings.states, settings.priorities,
                                          keeps_tags=bool(settings.tags_field))
        self._policy = RetryPolicy(max_attempts=settings.max_attempts,
                                   max_backoff=settings.max_backoff)
        self._sleep = sleep
        self._ids: dict[str, int] = {}  # TicketNumber -> TicketID, immutable pairs
        self._lock = threading.Lock()
        self.on_retry: Callable[[], None] | None = None

    @property
    def on_response(self) -> Callable[[str, int | str], None] | None:
        return self.api.on_response

    @on_response.setter
    def on_response(self, hook: Callable[[str, int | str], None] | None) -> None:
        self.api.on_response = hook

    # -- HostAdapter ----------------------------------------------------------------------
    def check_credentials(self) -> str:
        self.retry("SessionCreate", self.api.session_id)
        return f"OTOBO/Znuny agent {self.settings.user} at {self.settings.base_url}"

    def create_ticket(self, ticket: NewTicket) -> CreatedTicket:
        """Search first, then create: a retry after an ambiguous failure (timeout, dropped
        answer, a 500 after the ticket was made) finds the ticket instead of duplicating it."""
        return self.retry("TicketCreate", lambda: self._create_once(ticket))

    def add_comment(self, comment: Comment) -> None:
        self.retry("TicketUpdate", lambda: self._comment_once(comment))

    def get_ticket(self, ticket_id: str) -> TicketInfo | None:
        raw = self.retry("TicketGet", lambda: self._ticket(ticket_id, articles=False))
        return self.ticket_info(raw) if raw is not None else None

    def find_tickets_by_external_id(self, external_id: str) -> list[TicketInfo]:
        if not external_id:
            return []
        found = self.retry("TicketSearch", lambda: self._search_external_id(external_id))
        tickets = [self.get_raw(tid, articles=True) for tid in found]
        # A ticket whose create stopped before its article is not done: it is left for
        # create_ticket, which completes it (a resumed create then finds it there).
        return [self.ticket_info(t) for t in tickets if t is not None and t.get("Article")]

    def comment_exists(self, ticket_id: str, dedupe_key: str) -> bool:
        raw = self.retry("TicketGet", lambda: self._ticket(ticket_id, articles=True))
        if raw is None:
            return False
        return any(_dynamic_field(article, self.settings.article_key_field) == dedupe_key
                   for article in raw.get("Article") or [])

    def user_exists(self, email: str) -> bool:
        """True when OTOBO has a ticket of this customer. The stock GenericInterface has no
        customer-user look-up, and TicketCreate accepts any valid address as CustomerUser
        (TicketCreate.pm, ``_TicketCreate``), so "known" means "has written before"
        (``allow_unknown_senders: false`` then lets only returning customers open tickets)."""
        if not email:
            return False

        def search() -> bool:
            answer = self.api.call("TicketSearch", "POST", "/TicketSearch",
                                   {"CustomerUserLogin": email, "Limit": 1})
            return bool(id_list(answer.get("TicketID")))

        return bool(self.retry("TicketSearch", search))

    def add_tags(self, ticket_id: str, tags: list[str]) -> None:
        self._retag(ticket_id, add=tags, remove=())

    def remove_tags(self, ticket_id: str, tags: list[str]) -> None:
        self._retag(ticket_id, add=(), remove=tags)

    # -- create ---------------------------------------------------------------------------
    def _create_once(self, ticket: NewTicket) -> CreatedTicket:
        external_id = ticket.external_id
        if external_id:
            for ticket_id in self._search_external_id(external_id):
                raw = self.get_raw(ticket_id, articles=True)
                if raw is None:
                    continue
                number = str(raw["TicketNumber"])
                if not raw.get("Article"):
                    # TicketCreate stopped after the ticket and its dynamic fields: the article
                    # is added now (TicketUpdate), so the ticket is whole and single.
                    log.warning("ticket %s exists without its article (an earlier create "
                                "stopped half-way); adding the article", number)
                    self._update(ticket_id, self._article_request(ticket), {})
                return CreatedTicket(id=number, replayed=True)
        payload = self.create_request(ticket)
        answer = self.api.call("TicketCreate", "POST", "/Ticket", payload)
        number, ticket_id = str(answer["TicketNumber"]), int(answer["TicketID"])
        with self._lock:
            self._ids[number] = ticket_id
        return CreatedTicket(id=number)

    def create_request(self, ticket: NewTicket) -> dict[str, Any]:
        """TicketCreate's parameters for a ticket (no I/O; the dry run shows them)."""
        s = self.settings
        native = self.vocabulary.native(ticket.defaults, ticket.controls, follow_up=False)
        fields: dict[str, Any] = dict(native.dynamic_fields)
        if ticket.external_id:
            fields[s.message_id_field] = ticket.external_id
        if s.tags_field and ticket.tags:
            fields[s.tags_field] = " ".join(ticket.tags)
        body = dict(self._ticket_defaults(ticket))
        body.update(native.ticket)
        article, attachments = self._article_request(ticket)
        article.update(native.article)
        payload: dict[str, Any] = {"Ticket": body, "Article": article,
                                   "DynamicField": dynamic_field_list(fields)}
        if attachments:
            payload["Attachment"] = attachments
        return payload

    def _ticket_defaults(self, ticket: NewTicket) -> dict[str, Any]:
        s = self.settings
        out: dict[str, Any] = {
            "Title": ticket.subject or "(no subject)",
            "Queue": s.queue,
            "State": s.state,
            "Priority": s.priority,
            "CustomerUser": ticket.requester_email,
        }
        if s.ticket_type:
            out["Type"] = s.ticket_type
        return out

    def _article_request(self, ticket: NewTicket) -> tuple[dict[str, Any], list[dict[str, str]]]:
        """The first article: the customer's e-mail (or, for a ticket a PEC receipt opens, an
        internal note of the system), with what fits of the attachments."""
        text, content_type = _body(ticket.body_text, ticket.body_html)
        attachments, note = self._attachments(ticket.uploads, len(text.encode()))
        if note:
            text = _with_note(text, note, content_type)
        article: dict[str, Any] = {
            **_visibility(ticket.public),
            "From": _mailbox(ticket.requester_name, ticket.requester_email),
            "Subject": ticket.subject or "(no subject)",
            "Body": text,
            "ContentType": content_type,
        }
        if ticket.to:
            article["To"] = ", ".join(ticket.to)
        if ticket.cc or ticket.email_ccs:
            article["Cc"] = ", ".join(dict.fromkeys((*ticket.cc, *ticket.email_ccs)))
        return article, attachments

    # -- comments -------------------------------------------------------------------------
    def _comment_once(self, comment: Comment) -> None:
        ticket_id = self.internal_id(comment.ticket_id)
        if ticket_id is None:
            raise PermanentHostError(f"TicketUpdate: ticket {comment.ticket_id} does not exist")
        s = self.settings
        needs_current = bool(s.tags_field and (comment.add_tags or comment.remove_tags)) or \
            bool(s.receipt_state_field and any(t in RECEIPT_STATES for t in comment.add_tags))
        current = self.get_raw(ticket_id) if needs_current else None
        payload, changes = self.comment_request(comment, current)
        self._update(ticket_id, payload, changes)

    def comment_request(self, comment: Comment, current: Mapping[str, Any] | None
                        ) -> tuple[dict[str, Any], dict[str, Any]]:
        """TicketUpdate's ``Article``/``DynamicField``/``Attachment`` and its ``Ticket``
        changes for a comment; ``current`` is the ticket as TicketGet shows it (for tags and
        the receipt state), None when not read. No I/O: the dry run shows it as it is."""
        s = self.settings
        native = self.vocabulary.native(comment.defaults, comment.controls, follow_up=True)
        text, content_type = _body(comment.body_text, comment.body_html)
        attachments, note = self._attachments(comment.uploads, len(text.encode()))
        if note:
            text = _with_note(text, note, content_type)
        article: dict[str, Any] = {
            **_visibility(comment.public),
            "Subject": comment.subject or ("Note" if not comment.public else "Follow-up"),
            "Body": text,
            "ContentType": content_type,
        }
        if comment.public and comment.author_email:
            article["From"] = _mailbox(comment.author_name, comment.author_email)
        elif not comment.public:
            article["From"] = "postmaster-bridge"
        article.update(native.article)
        changes: dict[str, Any] = dict(native.ticket)
        if native.keep_state:
            changes.pop("State", None)
        fields: dict[str, Any] = dict(native.dynamic_fields)
        if comment.dedupe_key:
            fields[s.article_key_field] = comment.dedupe_key
        if s.tags_field and (comment.add_tags or comment.remove_tags):
            tags = _tags(current, s.tags_field)
            fields[s.tags_field] = " ".join(_changed(tags, comment.add_tags, comment.remove_tags))
        receipt = max((RECEIPT_STATES[t] for t in comment.add_tags if t in RECEIPT_STATES),
                      default=None)
        if receipt is not None and s.receipt_state_field:
            now = _dynamic_field(current or {}, s.receipt_state_field)
            ranks = {state: rank for rank, state in RECEIPT_STATES.values()}
            if ranks.get(str(now), 0) <= receipt[0]:
                fields[s.receipt_state_field] = receipt[1]
        payload: dict[str, Any] = {"Article": article, "DynamicField": dynamic_field_list(fields)}
        if attachments:
            payload["Attachment"] = attachments
        return payload, changes

    def _update(self, ticket_id: int, request: dict[str, Any] | tuple[dict[str, Any], list[Any]],
                changes: Mapping[str, Any]) -> None:
        if isinstance(request, tuple):
            article, attachments = request
            request = {"Article": article}
            if attachments:
                request["Attachment"] = attachments
        payload = {"TicketID": ticket_id, **request}
        if changes:
            payload["Ticket"] = dict(changes)
        self.api.call("TicketUpdate", "PATCH", f"/Ticket/{ticket_id}", payload)

    def _retag(self, ticket_id: str, add: Iterable[str], remove: Iterable[str]) -> None:
        s = self.settings
        if not s.tags_field:
            log.debug("ticket %s: tags not kept (host.otobo.tags_field is not set)", ticket_id)
            return

        def once() -> None:
            tid = self.internal_id(ticket_id)
            current = self.get_raw(tid) if tid is not None else None
            if current is None or tid is None:
                raise PermanentHostError(f"TicketUpdate: ticket {ticket_id} does not exist")
            tags = _changed(_tags(current, s.tags_field or ""), tuple(add), tuple(remove))
            self.api.call("TicketUpdate", "PATCH", f"/Ticket/{tid}", {
                "TicketID": tid,
                "DynamicField": [{"Name": s.tags_field, "Value": " ".join(tags)}]})

        self.retry("TicketUpdate", once)

    # -- reading --------------------------------------------------------------------------
    def _search_external_id(self, external_id: str) -> list[int]:
        answer = self.api.call("TicketSearch", "POST", "/TicketSearch", {
            f"DynamicField_{self.settings.message_id_field}": {"Equals": external_id},
            "SortBy": "Age", "OrderBy": "Up"})
        return [int(t) for t in id_list(answer.get("TicketID"))]

    def internal_id(self, number: str) -> int | None:
        with self._lock:
            known = self._ids.get(number)
        if known is not None:
            return known
        answer = self.api.call("TicketSearch", "POST", "/TicketSearch",
                               {"TicketNumber": str(number)})
        ids = id_list(answer.get("TicketID"))
        if not ids:
            return None
        with self._lock:
            self._ids[number] = int(ids[0])
        return int(ids[0])

    def _ticket(self, number: str, *, articles: bool) -> dict[str, Any] | None:
        ticket_id = self.internal_id(number)
        return self.get_raw(ticket_id, articles=articles) if ticket_id is not None else None

    def get_raw(self, ticket_id: int, *, articles: bool = False) -> dict[str, Any] | None:
        params: dict[str, Any] = {"DynamicFields": 1}
        if articles:
            params["AllArticles"] = 1
        try:
            answer = self.api.call("TicketGet", "GET", f"/Ticket/{ticket_id}", params)
        except OtoboOperationError as exc:
            if exc.code in ("TicketGet.NotValidTicketID", "TicketGet.AccessDenied"):
                return None
            raise
        tickets = answer.get("Ticket") or []
        if not tickets:
            return None
        raw: dict[str, Any] = tickets[0]
        with self._lock:
            self._ids[str(raw["TicketNumber"])] = int(raw["TicketID"])
        return raw

    def ticket_info(self, raw: Mapping[str, Any]) -> TicketInfo:
        closed = str(raw.get("StateType") or "").lower() in CLOSED_STATE_TYPES
        return TicketInfo(
            id=str(raw["TicketNumber"]),
            status="closed" if closed else str(raw.get("State") or ""),
            subject=str(raw.get("Title") or ""),
            requester_email=raw.get("CustomerUserID") or None,
            tags=tuple(_tags(raw, self.settings.tags_field or "")),
            external_id=_dynamic_field(raw, self.settings.message_id_field),
        )

    # -- helpers --------------------------------------------------------------------------
    def _attachments(self, uploads: Iterable[Upload],
                     body_bytes: int) -> tuple[list[dict[str, str]], str | None]:
        budget = self.settings.max_length - body_bytes * 2 - _REQUEST_OVERHEAD
        kept, left = fit_attachments(uploads, budget)
        note = None
        if left:
            note = left_out_note(left, self.settings.max_length)
            log.warning("%d attachment(s) left out: larger than the web service's MaxLength "
                        "(%s)", len(left), ", ".join(u.filename for u in left))
        return attachment_entries(kept), note

    def retry(self, operation: str, send: Callable[[], Any]) -> Any:
        def once() -> Any:
            try:
                return send()
            except OtoboOperationError as exc:
                if exc.code.endswith(".AuthFail"):
                    raise PermanentHostError(
                        f"{operation}: the agent {self.settings.user} cannot log in "
                        f"({exc.code}); check host.otobo.user and its password") from exc
                raise
        return call_with_retries(self._policy, self._sleep, operation, once, self.on_retry)


# -- pure helpers -------------------------------------------------------------------------
def _visibility(public: bool) -> dict[str, Any]:
    """A customer e-mail article, or an internal note of the system (receipts, bounces,
    third-party mail): TicketCreate.pm / TicketUpdate.pm ``_CheckArticle`` values."""
    if public:
        return {"CommunicationChannel": "Email", "SenderType": "customer",
                "IsVisibleForCustomer": 1}
    return {"CommunicationChannel": "Internal", "SenderType": "system",
            "IsVisibleForCustomer": 0}


def _body(text: str, html: str | None) -> tuple[str, str]:
    if html:
        return html, "text/html; charset=utf-8"
    return text, "text/plain; charset=utf-8"


def _with_note(body: str, note: str, content_type: str) -> str:
    if content_type.startswith("text/html"):
        from html import escape

        return f"{body}<p><em>{escape(note)}</em></p>"
    return f"{body}\n\n{note}"


def _mailbox(name: str | None, email: str) -> str:
    if name and name != email:
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{email}>'
    return email


def id_list(value: Any) -> list[str]:
    """TicketSearch answers ``{"TicketID": [..]}``, a single id as a scalar once the JSON
    layer flattened a one-element list, and ``{}`` for no match (TicketSearch.pm)."""
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def _dynamic_field(raw: Mapping[str, Any], name: str) -> Any:
    for item in raw.get("DynamicField") or []:
        if isinstance(item, Mapping) and item.get("Name") == name:
            return item.get("Value")
    return raw.get(f"DynamicField_{name}")


def _tags(raw: Mapping[str, Any] | None, name: str) -> list[str]:
    if raw is None or not name:
        return []
    value = _dynamic_field(raw, name)
    if isinstance(value, list):
        return [str(v) for v in value]
    return str(value).split() if value else []


def _changed(tags: list[str], add: Iterable[str], remove: Iterable[str]) -> list[str]:
    removed = set(remove)
    return [t for t in dict.fromkeys((*tags, *add)) if t not in removed]

