"""Decisions for PEC mail: a receipt's note, and what a certified message adds to a decision.

Pure like the rest of decide: the ticket a receipt certifies for is asked through
``ThreadLookup``; recording the receipt's ids on that ticket is the pipeline's effect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from connector.config import AccountConfig
from connector.decide.decision import Action, Decision, IgnoredAs, ThreadLookup
from connector.decide.pec import PecPlan
from connector.mail.model import ParsedMessage


class ReceiptLookup(ThreadLookup, Protocol):
    def ticket_for_sent_message_ids(self, message_ids: Sequence[str],
                                    account: str) -> str | None:
        """The ticket of mail sent from ``account`` with one of ``message_ids``."""
        ...


def decide_receipt(plan: PecPlan, message: ParsedMessage, account: AccountConfig,
                   lookup: ReceiptLookup) -> Decision:
    """A certified PEC receipt: an internal note on the ticket of the message it certifies,
    when this account sent it (a receipt certifies mail sent from the mailbox that receives
    it); otherwise what pec_unmatched_receipts says."""
    tags = tuple(dict.fromkeys((account.tag, *plan.tags)))
    ticket_id = lookup.ticket_for_sent_message_ids(plan.lookup_ids, account.name)
    ticket = lookup.get_ticket(ticket_id) if ticket_id is not None else None
    if ticket is not None and ticket.status != "closed":
        return Decision(Action.INTERNAL_NOTE, f"PEC receipt for a message of ticket "
                        f"#{ticket.id}", ticket_id=ticket.id, public=False, tags=tags)
    closed = ticket.id if ticket is not None else None
    policy = account.pec_unmatched_receipts
    if closed is None and policy == "ignore":
        return Decision.ignore("PEC receipt that matches no message the bridge sent",
                               IgnoredAs.PEC_RECEIPT)
    if closed is None and policy == "catch_all" and account.pec_catch_all_ticket is not None:
        return Decision(Action.INTERNAL_NOTE, "PEC receipt that matches nothing: "
                        "catch-all ticket", ticket_id=account.pec_catch_all_ticket,
                        public=False, tags=tags)
    # Like the Zendesk PEC connector, but never public: the first comment is internal, so
    # nobody is mailed; the requester is the provider's certifying address. A receipt for
    # a closed ticket becomes a follow-up of it, so it is not lost.
    reason = (f"PEC receipt for closed ticket #{closed}: a follow-up ticket" if closed
              else "PEC receipt that matches no message the bridge sent")
    return Decision(Action.NEW_TICKET, reason, subject=message.subject or "PEC receipt",
                    requester=message.from_, public=False, tags=tags,
                    followup_of_closed=closed)


def certify(decision: Decision, plan: PecPlan, content: ParsedMessage,
            account: AccountConfig) -> Decision:
    """A certified message's decision: its PEC tags; a new ticket shows the subject exactly as
    certified and carries the PEC facts in the custom fields the account maps them to."""
    if decision.action in (Action.IGNORE, Action.HOLD):
        return decision
    decision = replace(decision, tags=tuple(dict.fromkeys(decision.tags + plan.tags)))
    if decision.action != Action.NEW_TICKET:
        return decision
    controls = dict(decision.controls)
    for fact, field_id in account.pec_custom_fields.items():
        if fact in plan.facts:
            # Zendesk custom field ids or OTOBO dynamic field names: the host's vocabulary maps.
            controls[f"X-OTOBO-DynamicField-{field_id}"] = str(plan.facts[fact])
    return replace(decision, subject=content.subject or decision.subject,
                   controls=tuple(sorted(controls.items())))
