"""What the classifiers conclude about a message: one classification with typed details.

The decide stage reads ``FilterOutcome.classification``:

- ``loop`` / ``storm``: never ticketed (our own mail came back, or a sender over the daily cap).
- ``bounce``: a delivery failure report. ``details.ticket_id`` is set when the bounced mail was
  one the bridge sent: add ``details.note()`` as an internal note there; otherwise ignore + log.
- ``auto_reply``: out-of-office, auto-responder, list or receipt mail. To an existing ticket
  it becomes an internal note; one that would open a ticket is ignored and logged. Never
  answered automatically.
- ``forwarded``: a staff member forwarded a customer's mail; open the ticket for
  ``details.original_sender`` using ``details.message``.
- ``command``: a staff member's subject/top-line commands (close, tech, unsubscribe).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from enum import StrEnum
from typing import Any

from connector.mail.model import Address, ParsedMessage


class Strength(StrEnum):
    """How sure a classification is. A STRONG signal (Auto-Submitted other than ``no``,
    X-Autoreply and kin, an RFC 3464/3798 report, a vendor auto-responder form) may keep a mail
    from becoming a ticket; a WEAK one (``Precedence: bulk|junk|list``, List-* headers, a
    subject phrase) only tags it unless the account's ``weak_signals`` policy says ``ignore``."""

    STRONG = "strong"
    WEAK = "weak"


class Kind(StrEnum):
    LOOP = "loop"
    STORM = "storm"
    BOUNCE = "bounce"
    AUTO_REPLY = "auto_reply"
    FORWARDED = "forwarded"
    COMMAND = "command"


@dataclass(frozen=True)
class LoopDetails:
    """``signal``: own_address, own_message_id, loop_header or sender_cap."""

    signal: str
    sender: str | None = None
    count_today: int | None = None
    cap: int | None = None


@dataclass(frozen=True)
class BounceDetails:
    """A delivery status notification, standard (RFC 3464) or recognised by heuristics."""

    action: str  # failed | delayed
    status: str | None  # enhanced status code, e.g. "5.1.1"
    permanent: bool
    failed_recipients: tuple[str, ...]
    original_message_id: str | None
    diagnostic: str | None
    standard: bool  # parsed from a multipart/report; False when found by heuristics
    ours: bool = False  # the bounced mail is one the bridge sent
    ticket_id: str | None = None  # the ticket of the bounced mail, when known

    def note(self) -> str:
        """The internal note text: ``delivery to x@y failed: 5.1.1 user unknown``."""
        who = ", ".join(self.failed_recipients) or "a recipient"
        verb = "failed" if self.action == "failed" else "is delayed"
        parts = [p for p in (self.status, self.diagnostic) if p]
        return f"delivery to {who} {verb}" + (f": {' '.join(parts)}" if parts else "")


@dataclass(frozen=True)
class AutoReplyDetails:
    """``kind``: out_of_office, auto_reply, receipt, feedback_report (ARF), challenge
    (challenge-response services), list or bulk; ``signals`` say why."""

    kind: str
    signals: tuple[str, ...]
    thread_ticket_id: str | None = None  # a ticket its References point at, when known


@dataclass(frozen=True)
class ForwardDetails:
    """The original of a mail forwarded by staff. ``message`` replaces the wrapper."""

    original_sender: Address
    subject: str
    text_body: str
    html_body: str | None
    message: ParsedMessage
    forwarded_by: Address
    forwarder_text: str  # what the staff member wrote above the forwarded part
    source: str  # attachment (message/rfc822) or inline (quoted header block)


@dataclass(frozen=True)
class CommandDetails:
    """Commands from a staff sender; ``subject``/``text_body`` have them removed."""

    commands: tuple[str, ...]  # close | tech | unsubscribe
    subject: str
    text_body: str
    issued_by: Address


Details = LoopDetails | BounceDetails | AutoReplyDetails | ForwardDetails | CommandDetails


@dataclass(frozen=True)
class Classification:
    kind: Kind
    reason: str
    classifier: str
    details: Details | None = None
    strength: Strength = Strength.STRONG

    @property
    def weak(self) -> bool:
        return self.strength is Strength.WEAK

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "reason": self.reason,
            "classifier": self.classifier,
            "strength": str(self.strength),
            "details": jsonable(self.details, limit=1000),
        }


def jsonable(value: Any, *, limit: int | None = None) -> Any:
    """Plain JSON data from details: addresses as strings, messages as a short summary,
    strings cut at ``limit`` characters when given (traces stay small)."""
    if isinstance(value, ParsedMessage):
        return {
            "message_id": value.message_id,
            "from": str(value.from_) if value.from_ else None,
            "subject": value.subject,
        }
    if isinstance(value, Address):
        return str(value)
    if isinstance(value, StrEnum):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name), limit=limit) for f in fields(value)}
    if isinstance(value, tuple | list):
        return [jsonable(v, limit=limit) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v, limit=limit) for k, v in value.items()}
    if isinstance(value, str) and limit is not None and len(value) > limit:
        return value[:limit] + "..."
    return value
