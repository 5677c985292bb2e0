"""The host adapter interface: what the bridge asks of any helpdesk.

Requests are plain dataclasses built by the service from a decision; an adapter turns them into
its API's calls. Adapters raise ``TransientHostError`` (retry later) or ``PermanentHostError``
(the message goes to the error folder) from ``connector.errors``.

What is host-neutral and what each host reads:

- Ticket ids are opaque strings (``TicketId``) the host chooses and the bridge only stores,
  compares and shows: Zendesk's ticket id (``"4711"``), OTOBO's TicketNumber
  (``"2026112310000012"``; the adapter finds the internal TicketID itself). Only an adapter
  turns them into what its API wants.
- Ticket attributes travel in one vocabulary, OTOBO's PostMaster control headers
  (``X-OTOBO-Queue``, ``-Priority``, ``-State``, ``-Type``, ``-Brand``, ``-DynamicField-*``,
  their ``FollowUp-`` twins): ``defaults`` (the account's, in those words) then ``controls``
  (what the filters set). Each host has a pure ``Vocabulary`` (``translate``) that turns them
  into its own fields and names what it cannot take; the decide stage asks it before a mail is
  pushed (``Decision.problems``, shown by ``filters test``), the adapter sends what it gives.
  OTOBO/Znuny take the words natively; Zendesk maps them (connector.hosts.zendesk_fields).
  Why a pure translation rather than a typed error from the adapter: a problem is a warning
  (the mail still reaches the helpdesk with the default), and ``filters test`` must show it
  without any helpdesk call.
- Capabilities are declared by each host's vocabulary (an adapter's ``vocabulary``), not by
  the configuration: ``keeps_tags`` (Zendesk tags; OTOBO only with a ``tags_field``, a text
  dynamic field); dynamic fields go by name natively (OTOBO) or through the host's mapping to
  its field ids (Zendesk ``custom_fields``), which ``translate`` applies.
- Exactly-once: ``idempotency_key`` where the host has one (Zendesk), ``external_id`` searched
  before a create where it does not (OTOBO's ``PMBMessageID``); ``Comment.dedupe_key`` is read
  back by ``comment_exists`` on both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeAlias, runtime_checkable

from connector.cached import cached_property

#: A helpdesk ticket as the bridge knows it: opaque, compared as text (see the module doc).
TicketId: TypeAlias = str


@dataclass(frozen=True)
class Translation:
    """The control vocabulary as one host takes it: ``fields`` in the host's own names (no
    I/O needed to make them), ``problems`` the values it cannot take, one line each."""

    fields: Mapping[str, object]
    problems: tuple[str, ...] = ()


class Vocabulary(Protocol):
    """How a host takes the control vocabulary. Pure: the decide stage may call it."""

    @property
    def keeps_tags(self) -> bool:
        """The host keeps the bridge's tags on its tickets."""
        ...

    def translate(self, defaults: Iterable[tuple[str, object]],
                  controls: Iterable[tuple[str, object]], *,
                  follow_up: bool = False) -> Translation:
        """``defaults`` then ``controls`` (later values win; a value the host cannot take is a
        problem and leaves the earlier one), for a new ticket or a follow-up."""
        ...


@dataclass(frozen=True)
class Upload:
    """A file to attach to a ticket comment."""

    filename: str
    content_type: str
    data: bytes = field(repr=False)
    content_id: str | None = None  # set for inline images referenced from the HTML body
    # SHA-256 of ``data`` when the caller has it already (the parsed message hashes its
    # attachments for the dedupe key); computed on first use otherwise.
    known_sha256: str | None = field(default=None, repr=False, compare=False)
    # Evidence (the signed PEC envelope, the original message): always attached on its own,
    # never packed into an archive by the per-mail attachment limit (connector.hosts.bounded).
    pinned: bool = False

    @cached_property
    def sha256(self) -> str:
        """Hex digest of ``data``, computed once (requests are fingerprinted more than once)."""
        return self.known_sha256 or hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class NewTicket:
    """Everything needed to open a ticket. ``external_id`` is stable for the message."""

    subject: str
    requester_email: str
    requester_name: str
    body_text: str
    body_html: str | None = None
    public: bool = True
    uploads: tuple[Upload, ...] = ()
    tags: tuple[str, ...] = ()
    recipient: str | None = None  # the support address the mail reached; replies go out from it
    email_ccs: tuple[str, ...] = ()
    external_id: str | None = None
    idempotency_key: str | None = None
    # The closed ticket this one follows up (a reply to a closed ticket; Zendesk links them).
    follows_up: TicketId | None = None
    # The ticket's attributes in the control vocabulary (see the module doc): the account's
    # defaults, then what the filters set; the adapter's Vocabulary translates both.
    defaults: tuple[tuple[str, object], ...] = ()
    controls: tuple[tuple[str, str], ...] = ()
    to: tuple[str, ...] = ()  # the mail's To and Cc, for hosts whose articles show them
    cc: tuple[str, ...] = ()


@dataclass(frozen=True)
class Comment:
    """A comment appended to an existing ticket, with the ticket changes that go with it."""

    ticket_id: TicketId
    body_text: str
    body_html: str | None = None
    public: bool = True
    author_email: str | None = None  # shown as the comment's author when the host knows them
    author_name: str | None = None
    uploads: tuple[Upload, ...] = ()
    add_tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()
    # A marker the adapter stores with the comment (audit metadata) so a retry after a crash can
    # find out whether the comment already reached the host.
    dedupe_key: str | None = None
    subject: str | None = None  # the mail's subject, for hosts whose articles have one
    # As NewTicket's, the FollowUp-* twins applying (follow_up.status/priority as defaults).
    defaults: tuple[tuple[str, object], ...] = ()
    controls: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TicketInfo:
    """What the bridge needs to know about an existing ticket."""

    id: TicketId
    status: str
    subject: str = ""
    requester_email: str | None = None
    cc_emails: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    external_id: str | None = None

    @property
    def closed(self) -> bool:
        return self.status == "closed"


def first_ticket(tickets: Iterable[TicketInfo]) -> TicketInfo:
    """The oldest of several tickets (one mail found twice on the host): ids of digits in
    number order (Zendesk ids and OTOBO TicketNumbers grow), any others after them by text."""
    return min(tickets, key=lambda t: (not t.id.isdigit(), len(t.id), t.id))


@dataclass(frozen=True)
class CreatedTicket:
    id: TicketId
    replayed: bool = False  # the host said this create was a replay of an earlier one


@runtime_checkable
class HostAdapter(Protocol):
    """What every helpdesk adapter offers. All methods may raise HostError subclasses."""

    name: str
    #: How this host takes the control vocabulary, and what it can keep (``keeps_tags``): the
    #: adapter translates with it; callers ask it for the host's capabilities.
    vocabulary: Vocabulary

    def check_credentials(self) -> str:
        """Authenticate and return a one-line description of who we are on the host."""
        ...

    def create_ticket(self, ticket: NewTicket) -> CreatedTicket: ...

    def add_comment(self, comment: Comment) -> None: ...

    def get_ticket(self, ticket_id: TicketId) -> TicketInfo | None:
        """The ticket, or None when it does not exist (or is not visible to us)."""
        ...

    def find_tickets_by_external_id(self, external_id: str) -> list[TicketInfo]: ...

    def comment_exists(self, ticket_id: TicketId, dedupe_key: str) -> bool:
        """True when a comment carrying ``dedupe_key`` is already on the ticket."""
        ...

    def user_exists(self, email: str) -> bool: ...

    def add_tags(self, ticket_id: TicketId, tags: list[str]) -> None: ...

    def remove_tags(self, ticket_id: TicketId, tags: list[str]) -> None: ...


# -- history import -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DatedComment:
    """A comment of an imported ticket, dated as its mail was (``created_at``, aware UTC)."""

    comment: Comment
    created_at: datetime


@dataclass(frozen=True)
class ImportTicket:
    """A whole conversation of old mail for a helpdesk's import API: the first mail as the
    ticket (``ticket``, dated ``created_at``), its replies as ``comments`` with their own dates.
    Imported tickets keep their dates and run no triggers and send no notifications."""

    ticket: NewTicket
    created_at: datetime
    comments: tuple[DatedComment, ...] = ()
    status: str | None = None  # every imported ticket's status, in the importer's words

    @property
    def updated_at(self) -> datetime:
        return max([self.created_at, *(c.created_at for c in self.comments)])


@dataclass(frozen=True)
class ImportResult:
    """What became of one ImportTicket: its ticket id, or why it was not imported."""

    ticket_id: TicketId | None
    error: str | None = None


@runtime_checkable
class TicketImporter(Protocol):
    """A host that can import history (Zendesk: the Ticket Import API)."""

    #: How many tickets one import call takes at most.
    import_batch_size: int

    def import_tickets(self, tickets: list[ImportTicket], *, archive_closed: bool = False,
                       on_job: Callable[[str], None] | None = None) -> list[ImportResult]:
        """Import ``tickets`` (at most ``import_batch_size``); one result per ticket, in order.
        A host that imports in a background job calls ``on_job`` with the job's id as soon as
        it has one. Raises TransientHostError when the outcome is unknown (then look the
        tickets up by external_id)."""
        ...

    def import_results(self, job_id: str, count: int) -> list[ImportResult] | None:
        """The results of the import job ``job_id`` (of ``count`` tickets), or None when the
        host no longer knows it."""
        ...


class PreparedCreate(Protocol):
    """A ticket create fixed byte for byte (its idempotency key included), storable as JSON."""

    def to_json(self) -> str: ...


@runtime_checkable
class ReplayableCreates(Protocol):
    """An optional host ability: a create prepared first, stored by the caller, then sent and
    replayed byte-identically after a crash (Zendesk's Idempotency-Key). The pipeline checks
    for it once; adapters without it are asked for a plain ``create_ticket``."""

    def prepare_ticket(self, ticket: NewTicket) -> PreparedCreate: ...

    def prepared_from_json(self, text: str) -> PreparedCreate: ...

    def send_prepared(self, prepared: PreparedCreate,
                      ticket: NewTicket | None = None) -> CreatedTicket: ...
