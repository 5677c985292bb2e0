"""Decide: follow-up detection order, public/private comments, fields from controls."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import pytest

from connector.config import AccountConfig, FollowUpPolicy, HostConfig, TicketDefaults
from connector.decide import Action, Decider, FilterVerdict
from connector.decide.decision import Decision, IgnoredAs
from connector.filters import Classification, CommandDetails, Kind
from connector.filters.verdicts import Strength
from connector.hosts.vocabulary import vocabulary_for
from connector.mail.model import Address, ParsedMessage


@dataclass(frozen=True)
class Ticket:
    id: str
    status: str = "open"
    requester_email: str | None = "mario@example.it"
    cc_emails: tuple[str, ...] = ()


class Lookup:
    def __init__(self, tickets: Sequence[Ticket] = (), ids: dict[str, str] | None = None,
                 users: Sequence[str] = ()) -> None:
        self.tickets = {t.id: t for t in tickets}
        self.ids = ids or {}
        self.users = set(users)
        self.asked: list[str] = []

    def get_ticket(self, ticket_id: str) -> Ticket | None:
        self.asked.append(ticket_id)
        return self.tickets.get(ticket_id)

    def ticket_for_message_ids(self, message_ids: Sequence[str]) -> str | None:
        for mid in message_ids:
            if mid in self.ids:
                return self.ids[mid]
        return None

    def user_exists(self, email: str) -> bool:
        return email in self.users


ACCOUNT = AccountConfig(name="support", protocol="imap", host="127.0.0.1", port=143,
                        security="none", username="support@acme.example", password="x",
                        own_addresses=("support@acme.example",),
                        new_ticket=TicketDefaults(group_id=7, priority="normal", tags=("email",)))
HOST = HostConfig(type="dry-run", groups={"Billing": 99}, custom_fields={"CustomerNo": 555})
#: Decide speaks the control vocabulary; the host's translation says what Zendesk gets.
VOCABULARY = vocabulary_for(HOST)


def fields(d: Decision) -> dict[str, object]:
    """The Zendesk ticket fields a decision's defaults and controls become."""
    return dict(VOCABULARY.translate(d.defaults, d.controls,
                                     follow_up=d.action != Action.NEW_TICKET).fields)


def message(**kw: object) -> ParsedMessage:
    base = dict(raw=b"x", subject="Stampante guasta", message_id="m1@example.it",
                from_=Address("Mario Rossi", "mario@example.it"),
                to=(Address("", "support@acme.example"),), text_body="ciao")
    base.update(kw)
    return ParsedMessage(**base)  # type: ignore[arg-type]


def test_new_ticket_with_defaults_and_ccs() -> None:
    msg = message(to=(Address("", "support@acme.example"), Address("Anna", "anna@example.it")),
                  cc=(Address("", "Mario@Example.it"), Address("", "luca@example.it")),
                  subject="Re: Fwd: Stampante guasta")
    d = Decider(ACCOUNT, VOCABULARY, Lookup()).decide(msg, FilterVerdict())
    assert d.action == Action.NEW_TICKET
    assert d.subject == "Stampante guasta"
    assert d.requester == Address("Mario Rossi", "mario@example.it")
    assert (fields(d)["group_id"], fields(d)["priority"]) == (7, "normal")
    assert d.tags == ("email", "pmb_support")
    assert d.email_ccs == ("anna@example.it", "luca@example.it")


def test_subject_reference_checked_against_host_all_candidates() -> None:
    lookup = Lookup([Ticket("12")])
    msg = message(subject="Re: [#999] old and [#12] current")
    d = Decider(ACCOUNT, VOCABULARY, lookup).decide(msg, FilterVerdict())
    assert d.action == Action.FOLLOW_UP and d.ticket_id == "12" and d.public
    assert lookup.asked == ["999", "12"]


def test_references_map_used_when_subject_has_no_ticket() -> None:
    lookup = Lookup([Ticket("5")], ids={"root@x": "5"})
    msg = message(subject="Re: hello", in_reply_to=("unknown@x",), references=("root@x",))
    d = Decider(ACCOUNT, VOCABULARY, lookup).decide(msg, FilterVerdict())
    assert d.action == Action.FOLLOW_UP and d.ticket_id == "5"


def test_subject_wins_over_references() -> None:
    lookup = Lookup([Ticket("5"), Ticket("6")], ids={"root@x": "5"})
    msg = message(subject="Re: [#6]", references=("root@x",))
    assert Decider(ACCOUNT, VOCABULARY, lookup).decide(msg, FilterVerdict()).ticket_id == "6"


def test_stranger_on_thread_is_internal_note_cc_is_public() -> None:
    lookup = Lookup([Ticket("5", cc_emails=("anna@example.it",))], ids={"root@x": "5"})
    stranger = message(from_=Address("", "eve@evil.example"), in_reply_to=("root@x",))
    d = Decider(ACCOUNT, VOCABULARY, lookup).decide(stranger, FilterVerdict())
    assert d.action == Action.INTERNAL_NOTE and not d.public
    cc = message(from_=Address("", "Anna@example.it"), in_reply_to=("root@x",))
    assert Decider(ACCOUNT, VOCABULARY, lookup).decide(cc, FilterVerdict()).public


def test_follow_up_policy_and_controls() -> None:
    account = replace(ACCOUNT, follow_up=FollowUpPolicy(status="open", priority="high"))
    lookup = Lookup([Ticket("5")], ids={"root@x": "5"})
    msg = message(in_reply_to=("root@x",))
    d = Decider(account, VOCABULARY, lookup).decide(msg, FilterVerdict())
    assert (fields(d)["status"], fields(d)["priority"]) == ("open", "high")
    verdict = FilterVerdict(controls={"X-OTRS-FollowUp-State": "pending reminder",
                                      "X-OTOBO-FollowUp-Priority": "5 very high"})
    d = Decider(account, VOCABULARY, lookup).decide(msg, verdict)
    assert (fields(d)["status"], fields(d)["priority"]) == ("pending", "urgent")


def test_closed_ticket_reply_opens_follow_up_ticket() -> None:
    lookup = Lookup([Ticket("5", status="closed")], ids={"root@x": "5"})
    reply = message(in_reply_to=("root@x",))
    d = Decider(ACCOUNT, VOCABULARY, lookup).decide(reply, FilterVerdict())
    assert d.action == Action.NEW_TICKET and d.followup_of_closed == "5"
    account = replace(ACCOUNT, follow_up=FollowUpPolicy(reopen_closed=False))
    d = Decider(account, VOCABULARY, lookup).decide(reply, FilterVerdict())
    assert d.action == Action.IGNORE


def test_controls_map_onto_host_fields() -> None:
    verdict = FilterVerdict(controls={
        "X-OTOBO-Queue": "Billing", "X-OTOBO-Priority": "4 high", "X-OTOBO-State": "open",
        "X-OTOBO-Type": "incident", "X-OTOBO-DynamicField-CustomerNo": "C-42",
        "X-OTOBO-Title": "Fattura marzo", "X-Bridge-Tags": "vip, billing",
        "X-OTOBO-DynamicField-Unknown": "x"}, add_tags=("filtered",), remove_tags=("email",))
    d = Decider(ACCOUNT, VOCABULARY, Lookup()).decide(message(), verdict)
    got = fields(d)
    assert (got["group_id"], got["priority"], got["status"]) == (99, "high", "open")
    assert got["type"] == "incident" and d.subject == "Fattura marzo"
    assert got["custom_fields"] == [{"id": 555, "value": "C-42"}]
    assert set(d.tags) == {"pmb_support", "filtered", "vip", "billing"}
    assert any("Unknown" in p for p in d.problems)


def test_unknown_queue_reported_not_guessed() -> None:
    verdict = FilterVerdict(controls={"X-OTOBO-Queue": "Nowhere"})
    d = Decider(ACCOUNT, VOCABULARY, Lookup()).decide(message(), verdict)
    assert fields(d)["group_id"] == 7 and "Nowhere" in d.problems[0]  # the default kept


def test_bridge_group_wins_over_the_queue_mapping() -> None:
    """filters/README.md: X-Bridge-Group, a helpdesk group the filter names itself, wins over
    X-OTOBO-Queue set with it (whichever filter set which); an unmapped one is a problem and
    the Queue's group stays. The account's default group still loses to either."""
    both = {"X-OTOBO-Queue": "Billing", "X-Bridge-Group": "12"}
    for controls in (both, dict(reversed(both.items()))):
        d = Decider(ACCOUNT, VOCABULARY, Lookup()).decide(message(),
                                                          FilterVerdict(controls=controls))
        assert fields(d)["group_id"] == 12 and d.problems == ()
    d = Decider(ACCOUNT, VOCABULARY, Lookup()).decide(message(), FilterVerdict(
        controls={"X-OTOBO-Queue": "Billing", "X-Bridge-Group": "Nowhere"}))
    assert fields(d)["group_id"] == 99 and "Nowhere" in d.problems[0]
    d = Decider(ACCOUNT, VOCABULARY, Lookup()).decide(message(), FilterVerdict(
        controls={"X-Bridge-Group": "Billing"}))
    assert fields(d)["group_id"] == 99  # a name from host.groups, as for the Queue


@pytest.mark.parametrize("value", ["yes", "1", "true", "Yes"])
def test_ignore_control(value: str) -> None:
    d = Decider(ACCOUNT, VOCABULARY, Lookup()).decide(
        message(), FilterVerdict(controls={"X-OTOBO-Ignore": value}))
    assert d.action == Action.IGNORE


def test_auto_reply_note_on_ticket_or_ignored() -> None:
    verdict = FilterVerdict(classification=Classification(Kind.AUTO_REPLY, "auto-reply",
                                                          "auto_reply"))
    d = Decider(ACCOUNT, VOCABULARY, Lookup()).decide(message(), verdict)
    assert d.action == Action.IGNORE
    lookup = Lookup([Ticket("5")], ids={"root@x": "5"})
    d = Decider(ACCOUNT, VOCABULARY, lookup).decide(message(in_reply_to=("root@x",)), verdict)
    assert d.action == Action.INTERNAL_NOTE and d.ticket_id == "5" and not d.public


def test_unknown_sender_policy() -> None:
    account = replace(ACCOUNT, allow_unknown_senders=False)
    d = Decider(account, VOCABULARY, Lookup()).decide(message(), FilterVerdict())
    assert d.action == Action.IGNORE and "allow_unknown_senders" in d.reason
    d = Decider(account, VOCABULARY, Lookup(users=["mario@example.it"])).decide(message(),
                                                                          FilterVerdict())
    assert d.action == Action.NEW_TICKET


def test_a_mail_without_a_usable_sender_is_ticketed_for_the_unknown_sender() -> None:
    msg = message(from_=Address("", "not an address", valid=False))
    account = replace(ACCOUNT, unknown_sender="nobody@acme.example")
    d = Decider(account, VOCABULARY, Lookup()).decide(msg, FilterVerdict())
    assert d.action == Action.NEW_TICKET
    assert d.requester is not None and d.requester.email == "nobody@acme.example"
    assert d.original_sender == "not an address"
    assert "unknown_sender" in d.tags


def test_a_mail_without_a_usable_sender_is_ignored_visibly_when_the_account_says_so() -> None:
    msg = message(from_=Address("", "not an address", valid=False))
    account = replace(ACCOUNT, unknown_sender="ignore")
    d = Decider(account, VOCABULARY, Lookup()).decide(msg, FilterVerdict())
    assert d.action == Action.IGNORE and d.ignored_as is IgnoredAs.NO_SENDER
    assert "not an address" in d.reason


@pytest.mark.parametrize(("header", "expected"), [
    ("sender", "secretary@example.it"),
    ("reply_to", "replies@example.it"),
])
def test_the_requester_comes_from_sender_or_reply_to_when_from_is_unusable(header, expected):
    fields = {"sender": Address("", "secretary@example.it"),
              "reply_to": (Address("", "replies@example.it"),)}
    msg = message(from_=Address("", "MAILER-DAEMON", valid=False),
                  **{header: fields[header]})
    d = Decider(ACCOUNT, VOCABULARY, Lookup()).decide(msg, FilterVerdict())
    assert d.action == Action.NEW_TICKET and d.requester.email == expected
    assert d.original_sender is None


def test_the_requester_comes_from_return_path_last() -> None:
    msg = message(from_=None, headers=(("Return-Path", "<bounces@lists.example.it>"),))
    d = Decider(ACCOUNT, VOCABULARY, Lookup()).decide(msg, FilterVerdict())
    assert d.requester.email == "bounces@lists.example.it"


def test_a_weak_sign_only_tags_unless_the_account_ignores_weak_signals() -> None:
    weak = FilterVerdict(add_tags=("list_mail",), classification=Classification(
        Kind.AUTO_REPLY, "Precedence: list", "auto_reply", strength=Strength.WEAK))
    d = Decider(ACCOUNT, VOCABULARY, Lookup()).decide(message(), weak)
    assert d.action == Action.NEW_TICKET and "list_mail" in d.tags
    strict = replace(ACCOUNT, weak_signals="ignore")
    d = Decider(strict, VOCABULARY, Lookup()).decide(message(), weak)
    assert d.action == Action.IGNORE and d.ignored_as is IgnoredAs.AUTO_REPLY


def test_a_storm_is_held_not_ignored() -> None:
    verdict = FilterVerdict(classification=Classification(Kind.STORM, "over the cap", "loop"))
    assert Decider(ACCOUNT, VOCABULARY, Lookup()).decide(message(), verdict).action == Action.HOLD


def test_commands_are_read_from_the_typed_classification() -> None:
    lookup = Lookup([Ticket("5", requester_email="mario@example.it")], ids={"root@x": "5"})
    staff = Address("", "anna@acme.example")

    def command(*commands: str) -> FilterVerdict:
        details = CommandDetails(commands, "s", "t", staff)
        return FilterVerdict(classification=Classification(Kind.COMMAND, "cmd", "commands",
                                                           details))
    reply = message(in_reply_to=("root@x",), from_=Address("", "mario@example.it"))
    closed = Decider(ACCOUNT, VOCABULARY, lookup).decide(reply, command("close"))
    assert fields(closed)["status"] == "solved" and closed.public
    tech = Decider(ACCOUNT, VOCABULARY, lookup).decide(reply, command("tech"))
    assert tech.action == Action.INTERNAL_NOTE and not tech.public
    both = Decider(ACCOUNT, VOCABULARY, lookup).decide(reply, command("close", "tech"))
    assert fields(both)["status"] == "solved"


def test_requester_override() -> None:
    verdict = FilterVerdict(controls={"X-Bridge-Requester": "Boss <boss@example.it>"})
    d = Decider(ACCOUNT, VOCABULARY, Lookup()).decide(message(), verdict)
    assert d.requester is not None and d.requester.email == "boss@example.it"


def test_controls_are_read_in_any_case_and_spelling() -> None:
    verdict = FilterVerdict(controls={"x-otrs-title": "  Invoice  ", "X-BRIDGE-TAGS": "a, b",
                                      "X-OTOBO-Ignore": " "})
    assert verdict.control("Title") == "Invoice"
    assert verdict.control("Tags") == "a, b"
    assert verdict.control("Ignore") is None  # blank is unset
    assert verdict.control("Queue") is None
    d = Decider(ACCOUNT, VOCABULARY, Lookup()).decide(message(), verdict)
    assert d.subject == "Invoice" and {"a", "b"} <= set(d.tags)


def test_ignores_say_why_and_who() -> None:
    loop = FilterVerdict(controls={"X-OTOBO-Ignore": "yes"}, classification=Classification(
        Kind.LOOP, "sent from our own address support@acme.example", "loop"))
    d = Decider(ACCOUNT, VOCABULARY, Lookup()).decide(message(), loop)
    assert (d.ignored_as, d.reason) == (IgnoredAs.LOOP,
                                        "sent from our own address support@acme.example")
    newsletter = FilterVerdict(controls={"X-OTOBO-Ignore": "yes"},
                               control_sources={"X-OTOBO-Ignore": "filter:newsletter"})
    d = Decider(ACCOUNT, VOCABULARY, Lookup()).decide(message(), newsletter)
    assert (d.ignored_as, d.reason) == (IgnoredAs.FILTER,
                                        "X-OTOBO-Ignore set by filter:newsletter")


# -- recipient and brand -----------------------------------------------------------------------

MULTI = replace(ACCOUNT, own_addresses=("support@acme.example", "billing@acme.example",
                                        "vendite@acme.example"),
                new_ticket=TicketDefaults(brand_id=10, brands={"billing@acme.example": 20}))


def test_the_recipient_is_the_own_address_the_mail_reached() -> None:
    msg = message(to=(Address("Anna", "anna@example.it"), Address("", "Billing@ACME.example")))
    d = Decider(MULTI, VOCABULARY, Lookup()).decide(msg, FilterVerdict())
    assert d.recipient == "billing@acme.example"
    assert fields(d)["brand_id"] == 20  # mapped by the recipient


def test_delivered_to_wins_over_the_visible_to_and_plus_tags_count_as_their_base() -> None:
    msg = message(to=(Address("", "support@acme.example"),),
                  delivered_to=("vendite+offerte@acme.example",))
    d = Decider(MULTI, VOCABULARY, Lookup()).decide(msg, FilterVerdict())
    assert d.recipient == "vendite@acme.example"
    assert fields(d)["brand_id"] == 10  # no mapping for this address: the account's brand


def test_mail_through_an_unlisted_alias_gets_the_mailbox_address() -> None:
    msg = message(to=(Address("", "info@acme.example"),), cc=())
    d = Decider(MULTI, VOCABULARY, Lookup()).decide(msg, FilterVerdict())
    assert d.recipient == "support@acme.example"


def test_a_brand_control_header_beats_the_mapping() -> None:
    msg = message(to=(Address("", "billing@acme.example"),))
    brand = FilterVerdict(controls={"X-OTOBO-Brand": "30"})
    d = Decider(MULTI, VOCABULARY, Lookup()).decide(msg, brand)
    assert fields(d)["brand_id"] == 30


def test_delivered_to_headers_of_a_real_mail_name_the_recipient() -> None:
    from pathlib import Path

    from connector.mail.parse import parse_message

    raw = (Path(__file__).parent / "data" / "mail" / "delivered_to.eml").read_bytes()
    account = replace(ACCOUNT, username="mailbox", own_addresses=("team@example.com",
                                                                  "sales@example.com"))
    d = Decider(account, VOCABULARY, Lookup()).decide(parse_message(raw), FilterVerdict())
    assert d.recipient == "team@example.com"  # Delivered-To: <Team+Sales@Example.com>
