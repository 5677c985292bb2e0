"""What the outbound worker knows about a ticket, read from the helpdesk API.

Plain frozen dataclasses, filled by ``zendesk_api`` and read by the pure modules (templates,
compose), so those never see HTTP answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


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
