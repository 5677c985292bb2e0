"""The chain runner: trust, captures, order, stop_after_match, tags, trace, error policy."""

from __future__ import annotations

import json
import textwrap

import pytest

from connector.filters import (
    FilterError,
    FilterSettings,
    Kind,
    NullLookups,
    load_text,
    run_filters,
)
from connector.filters.settings import ClassifierSwitches
from connector.mail.parse import parse_message

CUSTOMER_MAIL = """\
From: Eve Customer <eve@customer.example>
To: support@example.com
Subject: Please help, invoice 42 and order 77
Message-ID: <eve-1@customer.example>
X-OTOBO-Queue: Management
X-OTOBO-Priority: 5 very high
X-OTRS-Ignore: yes
X-OTOBO-Loop: yes
X-Bridge-Tags: vip,free-upgrade
X-Bridge-Requester: ceo@example.com
"""


def mail(headers: str, body: str = "Hello, something is broken.\n"):
    raw = (headers.rstrip("\n") + "\n\n" + body).replace("\n", "\r\n").encode()
    return parse_message(raw)


def chain(text: str = ""):
    return load_text(textwrap.dedent(text), "test.yaml")


def run(message, *, trusted=False, filters="", settings=None, lookups=None, **kw):
    return run_filters(
        message,
        account="support",
        trusted=trusted,
        chain=chain(filters),
        settings=settings or FilterSettings(),
        lookups=lookups or NullLookups(),
        **kw,
    )


# --- trust -----------------------------------------------------------------------------

def test_untrusted_customer_cannot_route_prioritise_or_suppress_their_own_mail():
    outcome = run(mail(CUSTOMER_MAIL), trusted=False)
    assert outcome.control("X-OTOBO-Queue") is None
    assert outcome.control("X-OTOBO-Priority") is None
    assert outcome.control("X-OTOBO-Ignore") is None
    assert outcome.ignored is False
    assert outcome.classification is None  # X-OTOBO-Loop did not make it a loop
    assert outcome.control("X-Bridge-Requester") is None
    assert "vip" not in outcome.add_tags
    assert [name for name, _ in outcome.stripped_headers] == [
        "X-OTOBO-Queue",
        "X-OTOBO-Priority",
        "X-OTRS-Ignore",
        "X-OTOBO-Loop",
        "X-Bridge-Tags",
        "X-Bridge-Requester",
    ]
    trace = json.loads(outcome.trace_json())
    stripped = [h["name"] for h in trace["stripped_headers"]]
    assert stripped[:2] == ["X-OTOBO-Queue", "X-OTOBO-Priority"]


def test_untrusted_mail_headers_are_invisible_to_filter_conditions():
    outcome = run(
        mail(CUSTOMER_MAIL),
        filters="""\
        - name: honour-queue
          match: [{header: X-OTOBO-Queue, exists: true}]
          add_tags: [saw-queue]
        """,
    )
    assert outcome.add_tags == ()


def test_filters_may_still_set_controls_on_untrusted_accounts():
    outcome = run(
        mail(CUSTOMER_MAIL),
        filters="""\
        - name: admin-rule
          match: [{header: From, address: true, ends_with: "@customer.example"}]
          set:
            X-OTOBO-Queue: Customers
            X-OTOBO-Ignore: "no"
        """,
    )
    assert outcome.control("X-OTOBO-Queue") == "Customers"
    assert outcome.control_sources["X-OTOBO-Queue"] == "filter:admin-rule"
    assert outcome.ignored is False


def test_trusted_account_honours_the_mails_own_controls():
    outcome = run(mail(CUSTOMER_MAIL), trusted=True)
    assert outcome.stripped_headers == ()
    assert outcome.control("X-OTOBO-Queue") == "Management"
    assert outcome.control_sources["X-OTOBO-Queue"] == "mail"
    assert outcome.control("X-OTOBO-Ignore") == "yes"  # the X-OTRS alias, canonicalised
    assert outcome.ignored is True
    assert outcome.classification is not None and outcome.classification.kind is Kind.LOOP
    assert "vip" in outcome.add_tags and "free-upgrade" in outcome.add_tags


def test_trusted_mail_cannot_set_bridge_computed_controls_or_unknown_ones():
    message = mail(
        "From: monitor@example.net\nTo: support@example.com\nSubject: alert\n"
        "X-OTOBO-AttachmentCount: 99\nX-OTOBO-Frobnicate: 1\nX-OTOBO-Lock: maybe\n"
    )
    outcome = run(message, trusted=True)
    assert outcome.control("X-OTOBO-AttachmentCount") == "0"
    assert outcome.control("X-OTOBO-Lock") is None
    assert len(outcome.warnings) == 3


def test_filters_override_trusted_mail_controls():
    outcome = run(
        mail(CUSTOMER_MAIL.replace("X-OTOBO-Loop: yes\n", "").replace("X-OTRS-Ignore: yes\n", "")),
        trusted=True,
        filters="""\
        - name: override
          match: [{header: X-OTOBO-Queue, is: Management}]
          set: {X-OTOBO-Queue: Triage}
        """,
    )
    assert outcome.control("X-OTOBO-Queue") == "Triage"


# --- captures --------------------------------------------------------------------------

def test_capture_comes_from_the_first_declared_condition_and_replaces_every_occurrence():
    outcome = run(
        mail(CUSTOMER_MAIL),
        filters="""\
        - name: capture
          match:
            - header: Subject
              regex: 'invoice (\\d+)'
            - header: Subject
              regex: 'order (?P<order>\\d+)'
            - header: From
              regex: '(\\w+)@'
          set:
            X-OTOBO-Title: "[***]-[***] order [***order] from [***]"
            X-OTOBO-DynamicField-Order: "[***order]"
        """,
    )
    assert outcome.control("X-OTOBO-Title") == "42-42 order 77 from 42"
    assert outcome.control("X-OTOBO-DynamicField-Order") == "77"


def test_capture_that_makes_an_invalid_value_is_rejected_per_message():
    outcome = run(
        mail(CUSTOMER_MAIL),
        filters="""\
        - name: bad-capture
          match: [{header: Subject, regex: '^(\\w+)'}]
          set: {X-OTOBO-Ignore: "[***]"}
        """,
    )
    assert outcome.control("X-OTOBO-Ignore") is None
    assert any("X-OTOBO-Ignore takes one of" in w for w in outcome.warnings)
    step = [s for s in outcome.trace["steps"] if s.get("name") == "bad-capture"][0]
    assert step["sets"]["X-OTOBO-Ignore"]["value"] == "Please"


# --- order, stop, tags -----------------------------------------------------------------

FILTERS = """\
- name: first
  match: [{header: Subject, contains: invoice}]
  set: {X-OTOBO-Queue: Billing}
  add_tags: [billing, triage]
- name: second
  match: [{header: Subject, contains: order}]
  set: {X-OTOBO-Queue: Orders}
  remove_tags: [triage]
  add_tags: [orders]
  stop_after_match: true
- name: third
  match: [{header: Subject, contains: help}]
  set: {X-OTOBO-Queue: Helpdesk}
"""


def test_later_filters_overwrite_and_stop_after_match_ends_the_yaml_filters():
    outcome = run(mail(CUSTOMER_MAIL), filters=FILTERS)
    assert outcome.control("X-OTOBO-Queue") == "Orders"
    assert outcome.add_tags == ("billing", "orders")
    assert outcome.remove_tags == ("triage",)
    third = [s for s in outcome.trace["steps"] if s.get("name") == "third"][0]
    assert third["skipped"] == "not run: stop_after_match of 'second'"
    # stop_after_match does not stop the classifiers after the filters
    assert outcome.trace["steps"][-1]["name"] == "keywords"


def test_conditions_short_circuit_unless_evaluate_all():
    filters = """\
    - name: two
      match:
        - {header: Subject, contains: nothing-like-this}
        - {header: From, contains: eve}
      add_tags: [t]
    """
    quick = run(mail(CUSTOMER_MAIL), filters=filters)
    full = run(mail(CUSTOMER_MAIL), filters=filters, evaluate_all=True)
    quick_conds = [s for s in quick.trace["steps"] if s.get("name") == "two"][0]["conditions"]
    full_conds = [s for s in full.trace["steps"] if s.get("name") == "two"][0]["conditions"]
    assert [c["matched"] for c in quick_conds] == [False, None]
    assert [c["matched"] for c in full_conds] == [False, True]
    assert quick.add_tags == full.add_tags == ()


def test_bridge_tags_control_adds_tags():
    outcome = run(
        mail(CUSTOMER_MAIL),
        filters="""\
        - name: tags
          match: [{header: Subject, contains: help}]
          set: {X-Bridge-Tags: "alpha, beta gamma"}
        """,
    )
    assert outcome.add_tags == ("alpha", "beta", "gamma")


def test_classifier_results_are_visible_to_filters():
    outcome = run(
        mail(CUSTOMER_MAIL),
        settings=FilterSettings(dispatch={"support@example.com": "Front"}),
        filters="""\
        - name: after-dispatch
          match: [{header: X-OTOBO-Queue, is: Front}]
          set: {X-OTOBO-Queue: Front-Italy}
        """,
    )
    assert outcome.control("X-OTOBO-Queue") == "Front-Italy"


def test_switched_off_classifiers_do_not_run():
    settings = FilterSettings(classifiers=ClassifierSwitches(off=frozenset({"attachments"})))
    outcome = run(mail(CUSTOMER_MAIL), settings=settings)
    assert outcome.control("X-OTOBO-AttachmentCount") is None
    step = [s for s in outcome.trace["steps"] if s.get("name") == "attachments"][0]
    assert step["enabled"] is False


# --- trace -----------------------------------------------------------------------------

def test_trace_is_json_and_explains_every_step():
    outcome = run(mail(CUSTOMER_MAIL), filters=FILTERS)
    trace = json.loads(outcome.trace_json())
    assert trace["version"] == 1
    assert trace["account"] == "support" and trace["trusted"] is False
    stages = [(s["stage"], s["name"]) for s in trace["steps"]]
    assert stages[0] == ("trust", "trust")
    assert ("filter", "first") in stages and ("classifier", "bounce") in stages
    first = [s for s in trace["steps"] if s.get("name") == "first"][0]
    assert first["matched"] is True
    assert first["file"] == "test.yaml" and first["line"] == 1
    assert first["conditions"][0]["reason"].startswith("Subject value 'Please help")
    assert trace["controls"]["X-OTOBO-Queue"] == {"value": "Orders", "source": "filter:second"}
    assert trace["tags"] == {"add": ["billing", "orders"], "remove": ["triage"]}


# --- errors ----------------------------------------------------------------------------

class ExplodingLookups(NullLookups):
    def sender_count_on(self, address: str, day, *, proven: bool | None = None) -> int:
        raise RuntimeError("database is locked")


def test_a_failing_classifier_raises_a_typed_error_naming_it():
    with pytest.raises(FilterError) as info:
        run(mail(CUSTOMER_MAIL), lookups=ExplodingLookups())
    assert info.value.stage == "loop"
    assert "database is locked" in str(info.value)
