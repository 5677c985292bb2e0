"""Decide what a message does on the helpdesk: new ticket, follow-up, internal note or ignore.

Pure logic: the facts it needs from the host and the store come through ``ThreadLookup``.
Follow-up detection order (issue 2): a ticket reference in the subject (every candidate,
each checked against the host), then In-Reply-To/References against every Message-ID the
bridge has seen or sent, otherwise a new ticket.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

from connector.cached import cached_property
from connector.config import AccountConfig
from connector.decide.recipient import mail_recipient
from connector.decide.sender import Requester, resolve_requester
from connector.decide.subject import clean_subject, ticket_refs
from connector.filters.controls import canonical_control
from connector.filters.verdicts import BounceDetails, Classification, CommandDetails, Kind
from connector.hosts.base import Vocabulary
from connector.mail.model import Address, ParsedMessage


class Action(StrEnum):
    NEW_TICKET = "new_ticket"
    FOLLOW_UP = "follow_up"  # a comment (public or private) on an existing ticket
    INTERNAL_NOTE = "internal_note"  # private comment, the sender is not the customer
    IGNORE = "ignore"
    HOLD = "hold"  # over the per-sender daily cap: kept in the held folder for `held release`


class IgnoredAs(StrEnum):
    """Why a mail was ignored, in words summaries and metrics count by."""

    FILTER = "filter"  # a filter or a trusted mail set X-OTOBO-Ignore
    LOOP = "loop"  # our own mail came back
    AUTO_REPLY = "auto_reply"  # an auto-reply that matches no open ticket
    BOUNCE = "bounce"  # a bounce that matches no open ticket
    CLOSED_TICKET = "closed_ticket"  # a reply to a closed ticket, follow-ups off
    NO_SENDER = "no_sender"  # no usable address anywhere and unknown_sender: ignore
    UNKNOWN_USER = "unknown_user"  # not a helpdesk user and allow_unknown_senders off
    PEC_RECEIPT = "pec_receipt"  # a PEC receipt that matches nothing, policy ignore


class TicketView(Protocol):
    """The little the decision needs to know about an existing ticket."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def requester_email(self) -> str | None: ...
    @property
    def cc_emails(self) -> tuple[str, ...]: ...


class ThreadLookup(Protocol):
    def get_ticket(self, ticket_id: str) -> TicketView | None: ...

    def ticket_for_message_ids(self, message_ids: Sequence[str]) -> str | None: ...

    def user_exists(self, email: str) -> bool: ...


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    ticket_id: str | None = None  # opaque, as the host names its tickets
    subject: str = ""
    requester: Address | None = None
    public: bool = True
    recipient: str | None = None  # the own address the mail reached (replies go out from it)
    tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()
    email_ccs: tuple[str, ...] = ()
    followup_of_closed: str | None = None  # a reply to this closed ticket opens a new one
    problems: tuple[str, ...] = field(default=())  # control values the host cannot take
    ignored_as: IgnoredAs | None = None  # set on every IGNORE
    original_sender: str | None = None  # shown in the ticket when the requester stands in
    # The ticket's attributes in the control vocabulary (connector.filters.controls), host-
    # neutral: the account's defaults (new_ticket, follow_up), then what the filters (and the
    # PEC facts, a staff command) set. The host's vocabulary translates both.
    defaults: tuple[tuple[str, object], ...] = ()
    controls: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "reason": self.reason,
            "ticket_id": self.ticket_id,
            "subject": self.subject,
            "requester": str(self.requester) if self.requester else None,
            "public": self.public,
            "recipient": self.recipient,
            "defaults": dict(self.defaults),
            "controls": dict(self.controls),
            "tags": list(self.tags),
            "remove_tags": list(self.remove_tags),
            "email_ccs": list(self.email_ccs),
            "followup_of_closed": self.followup_of_closed,
            "problems": list(self.problems),
            "ignored_as": str(self.ignored_as) if self.ignored_as else None,
            "original_sender": self.original_sender,
        }

    @classmethod
    def ignore(cls, reason: str, ignored_as: IgnoredAs, **fields: Any) -> Decision:
        return cls(Action.IGNORE, reason, ignored_as=ignored_as, **fields)


@dataclass(frozen=True)
class FilterVerdict:
    """What the filter stage concluded, in the terms decide needs."""

    controls: Mapping[str, str] = field(default_factory=dict)
    add_tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()
    classification: Classification | None = None
    message: ParsedMessage | None = None  # what to ticket instead (a staff forward's original)
    control_sources: Mapping[str, str] = field(default_factory=dict)  # who set each control

    @property
    def kind(self) -> Kind | None:
        return self.classification.kind if self.classification is not None else None

    @property
    def note(self) -> str | None:
        """Text for an internal note: the bounce summary, else the classifier's reason."""
        if self.classification is None:
            return None
        details = self.classification.details
        if isinstance(details, BounceDetails):
            return details.note()
        return self.classification.reason

    @property
    def ticket_hint(self) -> str | None:
        """A ticket the classifier already tied the mail to (our bounced mail, a thread)."""
        details = self.classification.details if self.classification is not None else None
        if isinstance(details, BounceDetails):
            return details.ticket_id
        return getattr(details, "thread_ticket_id", None)

    @property
    def commands(self) -> tuple[str, ...]:
        details = self.classification.details if self.classification is not None else None
        return details.commands if isinstance(details, CommandDetails) else ()

    def control(self, name: str) -> str | None:
        """A control by its X-OTOBO- name, accepting the X-OTRS- alias and the X-Bridge-
        spelling; stripped, None when unset or blank."""
        lowered = self._controls_by_lowered_name
        for prefix in ("x-otobo-", "x-otrs-", "x-bridge-"):
            value = lowered.get(prefix + name.lower())
            if value is not None and value.strip() != "":
                return value.strip()
        return None

    @cached_property
    def _controls_by_lowered_name(self) -> dict[str, str]:
        # Deciding one mail asks for half a dozen controls: lower the names once.
        return {k.lower(): v for k, v in self.controls.items()}


_TRUE = {"yes", "true", "1", "on"}
#: The state a staff member's ``#close#`` command leaves (OTOBO's name; Zendesk: solved).
CLOSED_STATE = "closed successful"

#: The X-Bridge-* controls that are ticket attributes (the rest steer the bridge itself).
_BRIDGE_ATTRIBUTES = ("X-Bridge-Group", "X-Bridge-Brand")


def _native(controls: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The controls that are ticket attributes, canonically spelled, in a stable order: what
    the host's vocabulary translates (X-OTOBO-*, X-OTRS-* as their alias, X-Bridge-Group and
    -Brand)."""
    out: dict[str, str] = {}
    for name, value in controls.items():
        canonical = canonical_control(name) or name
        if canonical.startswith("X-OTOBO-") or canonical in _BRIDGE_ATTRIBUTES:
            out[canonical] = value
    return tuple(sorted(out.items()))


def _split_tags(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(t for t in re.split(r"[\s,]+", value.strip()) if t)


class Decider:
    """Turns a parsed message plus the filter verdict into a Decision for one account."""

    def __init__(self, account: AccountConfig, vocabulary: Vocabulary,
                 lookup: ThreadLookup) -> None:
        self.account = account
        self.vocabulary = vocabulary  # how the host takes controls: asked for problems only
        self.lookup = lookup

    def deciding_kind(self, verdict: FilterVerdict) -> Kind | None:
        """The classification the decision acts on. A forward is ticketed like any mail (its
        original replaces it); a weak sign only tags unless the account says ``weak_signals:
        ignore``."""
        classification = verdict.classification
        if classification is None or classification.kind is Kind.FORWARDED:
            return None
        if classification.weak and self.account.weak_signals != "ignore":
            return None
        return classification.kind

    def _own_addresses(self) -> tuple[str, ...]:
        """The account's addresses, its own listed first, then its login if that is one."""
        return tuple(dict.fromkeys((*self.account.own_addresses,
                                    self.account.username.lower())))

    # -- follow-up detection ------------------------------------------------------------
    def find_ticket(self, message: ParsedMessage,
                    extra_ids: Sequence[str] = ()) -> tuple[TicketView | None, str]:
        for ticket_id in ticket_refs(message.subject, self.account.subject_ticket_pattern):
            ticket = self.lookup.get_ticket(ticket_id)
            if ticket is not None:
                return ticket, f"subject names ticket #{ticket_id}"
        thread_ids = tuple(message.thread_ids) + tuple(extra_ids)
        threaded = self.lookup.ticket_for_message_ids(thread_ids)
        if threaded is not None:
            ticket = self.lookup.get_ticket(threaded)
            if ticket is not None:
                return ticket, f"In-Reply-To/References point at ticket #{threaded}"
        return None, "no ticket reference and no known Message-ID"

    # -- the decision ---------------------------------------------------------------------
    def decide(self, message: ParsedMessage, verdict: FilterVerdict,
               extra_thread_ids: Sequence[str] = (), *, thread: bool = True,
               requester: Requester | None = None) -> Decision:
        """``thread=False``: the message may not reach an existing ticket (mail that only
        looks like PEC evidence); it opens its own or is ignored. ``requester``: this
        message's, when the caller resolved it already (``self.requester``)."""
        controls = verdict.controls
        kind = self.deciding_kind(verdict)
        if kind is Kind.LOOP:  # it sets X-OTOBO-Ignore too; say why
            return Decision.ignore(verdict.note or "classified as loop", IgnoredAs.LOOP)
        ignore = verdict.control("Ignore")
        if ignore and ignore.lower() in _TRUE:
            source = verdict.control_sources.get("X-OTOBO-Ignore")
            return Decision.ignore(f"X-OTOBO-Ignore set by {source}" if source else
                                   "a filter set X-OTOBO-Ignore", IgnoredAs.FILTER)
        if kind is Kind.STORM:
            return Decision(Action.HOLD, verdict.note or "over the per-sender daily cap")

        ticket, why = self.find_ticket(message, extra_thread_ids) if thread else \
            (None, "not threaded: it may not touch an existing ticket")
        if ticket is None and verdict.ticket_hint is not None and thread:
            ticket = self.lookup.get_ticket(verdict.ticket_hint)
            why = f"the {kind or 'classifier'} refers to ticket #{verdict.ticket_hint}"
        if requester is None:
            requester = self.requester(message, verdict)
        tags = tuple(dict.fromkeys((self.account.tag, *verdict.add_tags,
                                    *_split_tags(verdict.control("Tags")))))

        if kind in (Kind.AUTO_REPLY, Kind.BOUNCE):
            assert kind is not None
            word = kind.value.replace("_", "-")
            ignored_as = IgnoredAs.BOUNCE if kind is Kind.BOUNCE else IgnoredAs.AUTO_REPLY
            if ticket is None:
                return Decision.ignore(f"{word} that matches no ticket", ignored_as)
            if ticket.status == "closed":
                return Decision.ignore(f"{word} for closed ticket #{ticket.id}", ignored_as)
            what = f"{word}: {verdict.note}" if verdict.note else word
            return Decision(Action.INTERNAL_NOTE, f"{what}; {why}",
                            ticket_id=ticket.id, public=False, tags=tags,
                            remove_tags=verdict.remove_tags)

        if ticket is not None and not ticket.status == "closed":
            commands = verdict.commands if kind is Kind.COMMAND else ()
            return self._follow_up(message, ticket, why, requester.address, controls, tags,
                                   verdict.remove_tags, commands)
        if ticket is not None and not self.account.follow_up.reopen_closed:
            return Decision.ignore(f"reply to closed ticket #{ticket.id}; "
                                   "follow_up.reopen_closed is off", IgnoredAs.CLOSED_TICKET,
                                   ticket_id=ticket.id)

        return self.new_ticket(message, verdict, closed=ticket.id if ticket else None,
                               requester=requester)

    def new_ticket(self, message: ParsedMessage, verdict: FilterVerdict,
                   closed: str | None = None, *, requester: Requester | None = None) -> Decision:
        """A new ticket for the message (``closed``: the closed ticket it follows up;
        ``requester``: the message's, when the caller resolved it already)."""
        controls = verdict.controls
        if requester is None:
            requester = self.requester(message, verdict)
        sender = requester.address
        if sender is None:
            return Decision.ignore(f"no usable sender address (From: {requester.shown}); the "
                                   "account's unknown_sender is ignore", IgnoredAs.NO_SENDER)
        if (requester.found and not self.account.allow_unknown_senders
                and not self.lookup.user_exists(sender.email)):
            return Decision.ignore(f"sender {sender.email} is not known to the helpdesk and "
                                   "allow_unknown_senders is off", IgnoredAs.UNKNOWN_USER)
        tags = tuple(dict.fromkeys((self.account.tag, *verdict.add_tags,
                                    *_split_tags(verdict.control("Tags")))))
        decision = self._new_ticket(message, sender, controls, tags, verdict, closed=closed)
        if not requester.found:
            decision = replace(decision, original_sender=requester.shown,
                               tags=tuple(dict.fromkeys((*decision.tags, "unknown_sender"))))
        return decision

    def requester(self, message: ParsedMessage, verdict: FilterVerdict) -> Requester:
        """Who ``message`` is from for the ticket: a trusted control, else its headers."""
        override = verdict.control("Requester") or verdict.control("CustomerUser")
        return resolve_requester(message, override=override,
                                 unknown_sender=self.account.unknown_sender)

    def _follow_up(self, message: ParsedMessage, ticket: TicketView, why: str,
                   sender: Address | None, controls: Mapping[str, str], tags: tuple[str, ...],
                   remove_tags: tuple[str, ...], commands: tuple[str, ...]) -> Decision:
        participants = {e.lower() for e in (ticket.requester_email, *ticket.cc_emails) if e}
        from_customer = sender is not None and sender.normalized in participants
        native = dict(_native(controls))
        # The first command decides the comment; "unsubscribe" is only a tag.
        if "close" in commands:
            native["X-OTOBO-FollowUp-State"] = CLOSED_STATE
        public = from_customer and ("close" in commands or "tech" not in commands)
        action = Action.FOLLOW_UP if public else Action.INTERNAL_NOTE
        reason = why + ("" if public else "; sender is not the requester or a CC: internal note")
        defaults = self.account.follow_up.controls()
        problems = self.vocabulary.translate(defaults, native.items(), follow_up=True).problems
        return Decision(action, reason, ticket_id=ticket.id, public=public,
                        defaults=defaults, controls=tuple(sorted(native.items())),
                        problems=problems, tags=tags, remove_tags=remove_tags,
                        requester=sender, subject=message.subject)

    def _new_ticket(self, message: ParsedMessage, sender: Address, controls: Mapping[str, str],
                    tags: tuple[str, ...], verdict: FilterVerdict,
                    closed: str | None) -> Decision:
        recipient = mail_recipient(message, self._own_addresses())
        defaults = self.account.new_ticket.controls(recipient)
        native = _native(controls)
        problems = self.vocabulary.translate(defaults, native).problems
        subject = verdict.control("Title") or clean_subject(message.subject) or "(no subject)"
        ccs: tuple[str, ...] = ()
        if self.account.email_ccs:
            own = set(self._own_addresses())
            seen = {sender.normalized}
            out: list[str] = []
            for addr in message.to + message.cc:
                if addr.valid and addr.normalized not in own and addr.normalized not in seen:
                    seen.add(addr.normalized)
                    out.append(addr.email)
            ccs = tuple(out)
        reason = "no existing ticket"
        if closed is not None:
            reason = f"reply to closed ticket #{closed}: a follow-up ticket"
        all_tags = tuple(t for t in dict.fromkeys((*self.account.new_ticket.tags, *tags))
                         if t not in verdict.remove_tags)
        return Decision(Action.NEW_TICKET, reason, subject=subject, requester=sender,
                        public=True, recipient=recipient, tags=all_tags,
                        remove_tags=verdict.remove_tags, email_ccs=ccs,
                        followup_of_closed=closed, defaults=defaults, controls=native,
                        problems=problems)
