"""What the outbound worker knows about a ticket, read from the helpdesk API.

Plain frozen dataclasses, filled by a host's outbound API (``zendesk_api``, ``otobo_api``) and
read by the pure modules (templates, compose), so those never see HTTP answers; and
``OutboundAPI``, what the worker asks of any host.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from connector.errors import PermanentHostError

if TYPE_CHECKING:
    from connector.outbound.webhook import HostHook


class AttachmentTooLarge(PermanentHostError):
    """A comment attachment is over the size the message may have."""


@dataclass(frozen=True)
class AttachmentRef:
    """A file on a helpdesk comment: where to download it, not its bytes."""

    id: int
    filename: str
    content_type: str
    size: int
    content_url: str


@dataclass(frozen=True)
class CommentView:
    """One ticket comment. ``text`` is the plain body, ``html`` the HTML body."""

    id: int
    public: bool
    text: str
    html: str
    author_id: int | None = None
    author_name: str = ""
    author_email: str = ""
    created_at: str = ""
    attachments: tuple[AttachmentRef, ...] = ()


@dataclass(frozen=True)
class TicketView:
    """The ticket fields the outbound path uses. ``fields`` maps custom field id to value."""

    id: str  # opaque, as connector.hosts.base.TicketId
    title: str
    status: str
    requester_name: str = ""
    requester_email: str = ""
    external_id: str = ""
    url: str = ""
    updated_at: str = ""
    tags: tuple[str, ...] = ()
    fields: Mapping[int, str] = field(default_factory=dict)

    def has_tag(self, tag: str) -> bool:
        return tag.lower() in (t.lower() for t in self.tags)


@dataclass(frozen=True)
class TaggedTicket:
    """A search hit for the sweep: a ticket carrying a reply or pending tag."""

    id: str
    updated_at: str


class OutboundAPI(Protocol):
    """What the outbound worker asks of a helpdesk (Zendesk's and OTOBO's outbound APIs)."""

    def webhook(self) -> HostHook:
        """How the bridge's webhook verifies and reads this host's reply requests."""
        ...

    def ticket(self, ticket_id: str) -> TicketView: ...

    def comments(self, ticket_id: str, *, max_pages: int = 5) -> Iterator[CommentView]:
        """The ticket's comments, newest first."""
        ...

    def download(self, attachment: AttachmentRef, *, limit: int) -> bytes:
        """The attachment's bytes (at most ``limit``, else AttachmentTooLarge)."""
        ...

    def tagged_tickets(self, tag: str) -> list[TaggedTicket]:
        """Open tickets asking for a reply by this tag (the sweep's look-up)."""
        ...

    def add_note(self, ticket_id: str, text: str, *, add_tags: tuple[str, ...] = (),
                 remove_tags: tuple[str, ...] = (), dedupe_key: str | None = None) -> None:
        """An internal note with tag changes, in one ticket update."""
        ...
