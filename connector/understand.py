"""What a mail is and what it should do: the one path every command takes.

``understand(raw, account, rules, lookups)`` parses the mail, unwraps PEC, runs the
classifiers and YAML filters, resolves the requester and decides, and returns a frozen
:class:`Understanding` with the trace of every step. ``run``, ``import``, ``deliver``,
``errors replay``, ``held release`` and ``filters test`` all call it; the effects (ledger,
helpdesk calls, mailbox moves) come after, in :mod:`connector.service.pipeline`. It is pure
apart from ``lookups`` (read-only questions to the ledger and the helpdesk), so its CPU-heavy
first half (parse and PEC) may run ahead in a worker process (:mod:`connector.service.parsing`
hands the result over as :class:`Prepared`).

Classifiers run before anyone asks who the sender is: a bounce from ``<>`` or a bare
``MAILER-DAEMON`` is a bounce. Only mail the bridge cannot understand raises
(:class:`connector.errors.UnreadableMail`: input that is not a mail, a classifier that fails
on it); the pipeline sends it to the error folder at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from connector.cached import cached_property
from connector.config import AccountConfig, HostConfig
from connector.decide.certified import ReceiptLookup, certify, decide_receipt
from connector.decide.decision import Action, Decider, Decision, FilterVerdict
from connector.decide.pec import PecPlan, nested_original, plan_pec
from connector.decide.sender import Requester
from connector.filters.authentication import DnsLookup, SenderAuthentication, authenticate_sender
from connector.filters.chain import FilterChain
from connector.filters.engine import run_filters
from connector.filters.lookups import FilterLookups
from connector.filters.outcome import FilterOutcome
from connector.filters.settings import FilterSettings
from connector.hosts.base import Vocabulary
from connector.hosts.vocabulary import vocabulary_for
from connector.mail.model import ParsedMessage
from connector.mail.parse import parse_message
from connector.pec import PecInfo, PecKind, find_pec, looks_like_pec_subject, with_trust


class Lookups(FilterLookups, ReceiptLookup, Protocol):
    """The read-only questions understanding asks: the filter stage's (own Message-IDs, a
    sender's mails on a day, known tickets) and the decide stage's (tickets, users, the
    ticket of mail this account sent)."""


@dataclass(frozen=True)
class Rules:
    """What the configuration says about understanding mail: the YAML filter chain, each
    account's filter settings and the host's mappings (queues, fields). ``dnsfunc`` looks up
    DKIM keys for staff senders the account's MTA results do not vouch for (None: no lookup,
    as ``filters test`` does; only staff mail acts in its sender's name)."""

    chain: FilterChain
    settings: Mapping[str, FilterSettings]
    host: HostConfig
    dnsfunc: DnsLookup | None = None

    def for_account(self, account: AccountConfig) -> FilterSettings:
        return self.settings.get(account.name) or FilterSettings()

    @cached_property
    def vocabulary(self) -> Vocabulary:
        """How the host takes the controls (pure): decide asks it what it cannot take."""
        return vocabulary_for(self.host)


@dataclass(frozen=True)
class Prepared:
    """The parse done ahead (in a worker): the message, and for mail that may be PEC
    ``find_pec``'s answer and the parsed certified original."""

    message: ParsedMessage
    pec: PecInfo | None = None
    original: ParsedMessage | None = None


@dataclass(frozen=True)
class Understanding:
    """One mail understood. ``message`` is the mail as fetched (the PEC envelope), ``outcome``
    holds what the classifiers and filters read (``outcome.message``: the certified original,
    else the mail), ``content`` what the ticket shows (that, or the original a staff member
    forwarded); ``trace`` is plain JSON: filters, PEC, requester and decision."""

    message: ParsedMessage
    content: ParsedMessage
    plan: PecPlan | None
    verdict: FilterVerdict
    requester: Requester
    decision: Decision
    trace: Mapping[str, Any] = field(repr=False)
    outcome: FilterOutcome = field(repr=False)

    @property
    def is_receipt(self) -> bool:
        return self.plan is not None and self.plan.is_receipt

    @property
    def filtered(self) -> ParsedMessage:
        """What the classifiers and filters read (the per-sender cap counted its sender)."""
        return self.outcome.message


def may_be_pec(message: ParsedMessage) -> bool:
    """Cheap look for PEC on an ordinary account: provider headers, the envelope subject, or
    an attached message that might be a forwarded envelope."""
    if message.header("X-Trasporto") or message.header("X-Ricevuta"):
        return True
    return looks_like_pec_subject(message.subject) or bool(message.nested_messages)


#: The identity PEC log lines carry, from the mail's Message-ID (known once parsed).
Context = Callable[[str | None], str]


def _no_context(message_id: str | None) -> str:
    return f"message-id=<{message_id}>" if message_id else "message"


def prepare(raw: bytes, *, account_is_pec: bool, context: Context = _no_context) -> Prepared:
    """The CPU-heavy, state-free first half: parse, and for mail that may be PEC find the
    certification and parse the certified original. Raises ParseError for what is not a mail."""
    message = parse_message(raw)
    if not (account_is_pec or may_be_pec(message)):
        return Prepared(message)
    pec = find_pec(raw, context=context(message.message_id))
    original = None
    if pec.is_pec and pec.kind is not PecKind.RECEIPT and pec.original_raw:  # as plan_pec
        try:
            original = (nested_original(message, pec.original_raw)
                        or parse_message(pec.original_raw))
        except Exception:  # plan_pec parses it again, and raises there
            original = None
    return Prepared(message, pec, original)


def unwrap_pec(raw: bytes, prepared: Prepared, account: AccountConfig,
               context: Context = _no_context) -> PecPlan | None:
    """The PEC plan: on PEC accounts always; elsewhere when the mail shows PEC signs."""
    message = prepared.message
    if not (account.pec or may_be_pec(message)):
        return None
    info = prepared.pec
    if info is None:
        info = find_pec(raw, context=context(message.message_id), trust=account.pec_trust)
    else:  # a worker judged the signature with the shipped anchors; the account may add its own
        info = with_trust(info, account.pec_trust)
    ahead = prepared.original

    def parse(original_raw: bytes) -> ParsedMessage:
        if ahead is not None and ahead.raw == original_raw:
            return ahead
        return parse_message(original_raw)

    return plan_pec(message, info, account_is_pec=account.pec, parse=parse)


def pec_controls(plan: PecPlan | None, account: AccountConfig) -> dict[str, str]:
    """What unwrapping found, for filters to match: filters see the certified original (its
    sender, subject, body), so the envelope's facts reach them as computed controls."""
    if plan is None:
        return {}
    return {"X-Bridge-PEC": plan.kind.value,
            "X-Bridge-PEC-Mailbox": "pec" if account.pec else "ordinary"}


def authenticate(message: ParsedMessage, account: AccountConfig, settings: FilterSettings,
                 dnsfunc: DnsLookup | None) -> SenderAuthentication:
    """What is proven about the From address, once per mail. The bridge checks a DKIM
    signature itself (a DNS query) only for a staff address: only staff mail acts in its
    sender's name."""
    sender = message.from_.email if message.from_ else None
    check_dkim = account.verify_dkim and settings.is_staff(sender)
    return authenticate_sender(message, trusted=account.trusted,
                               authserv_ids=account.authserv_ids,
                               dnsfunc=dnsfunc if check_dkim else None)


def to_verdict(outcome: FilterOutcome) -> FilterVerdict:
    """The filter outcome in the terms of the decide stage."""
    message = outcome.effective_message
    return FilterVerdict(
        controls=dict(outcome.controls),
        add_tags=outcome.add_tags,
        remove_tags=outcome.remove_tags,
        classification=outcome.classification,
        message=message if message is not outcome.message else None,
        control_sources=dict(outcome.control_sources),
    )


def understand(raw: bytes, account: AccountConfig, rules: Rules, lookups: Lookups, *,
               prepared: Prepared | None = None, context: Context = _no_context,
               release_held: bool = False, evaluate_all: bool = False) -> Understanding:
    """Understand one mail for ``account``. ``prepared`` is the parse done ahead (when it is
    the parse of these very bytes); ``release_held`` lifts the per-sender cap (``held
    release``); ``evaluate_all`` evaluates every filter condition for the trace (``filters
    test``: the outcome is the same)."""
    if prepared is None or prepared.message.raw is not raw:
        prepared = prepare(raw, account_is_pec=account.pec, context=context)
    message = prepared.message
    plan = unwrap_pec(raw, prepared, account, context)
    content = plan.content if plan is not None else message
    settings = rules.for_account(account)
    if release_held:
        settings = replace(settings, sender_cap_per_day=0)
    outcome = run_filters(content, account=account.name, trusted=account.trusted,
                          chain=rules.chain, settings=settings, lookups=lookups,
                          evaluate_all=evaluate_all, computed=pec_controls(plan, account),
                          authentication=authenticate(content, account, settings, rules.dnsfunc))
    verdict = to_verdict(outcome)
    shown = verdict.message or content
    decider = Decider(account, rules.vocabulary, lookups)
    requester = decider.requester(shown, verdict)
    if plan is not None and plan.is_receipt:
        decision = decide_receipt(plan, message, account, lookups)
    else:
        # Mail that only looks like PEC evidence opens its own ticket (never threads).
        standalone = plan is not None and plan.standalone
        decision = decider.decide(shown, verdict, plan.lookup_ids if plan is not None else (),
                                  thread=not standalone, requester=requester)
        if plan is not None:
            decision = certify(decision, plan, shown, account)
    trace: dict[str, Any] = dict(outcome.trace)
    if plan is not None:
        trace["pec"] = plan.trace
    if release_held:
        trace["released"] = "held mail released: the per-sender cap does not apply"
    trace["requester"] = requester.to_json()
    host_fields = None
    if decision.action in (Action.NEW_TICKET, Action.FOLLOW_UP, Action.INTERNAL_NOTE):
        # The ticket fields as the host takes them (Zendesk: group_id, status ...; OTOBO:
        # its Ticket/DynamicField parameters), and what it cannot take: asked once the
        # decision is whole (the PEC facts included).
        translation = rules.vocabulary.translate(
            decision.defaults, decision.controls,
            follow_up=decision.action != Action.NEW_TICKET)
        host_fields = dict(translation.fields)
        decision = replace(decision, problems=translation.problems)
    trace["decision"] = decision.as_dict()
    if host_fields is not None:
        trace["decision"]["host_fields"] = host_fields
    return Understanding(message, shown, plan, verdict, requester, decision, trace, outcome)
