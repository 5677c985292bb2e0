"""Golden tests of condition semantics: one matcher, every operator, every documented rule."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from connector.filters.conditions import Condition, ConditionError, MatchContext, RegexBudget
from connector.mail.model import Attachment
from connector.mail.parse import parse_message

HEADERS = """\
From: "Rossi, Mario" <Mario.Rossi@Cliente.example.it>
To: Support <support@example.com>, billing@example.com
Cc: boss@cliente.example.it
Subject: Fattura 2024/117 non pagata
Received: from mx1.example.net by mx.example.com
Received: from relay.example.org by mx1.example.net
X-Custom-Ticket: ABC-123
Message-ID: <m1@cliente.example.it>
"""


def mail(headers: str = HEADERS, body: str = "Buongiorno,\nallego la fattura.\n"):
    raw = (headers.rstrip("\n") + "\n\n" + body).replace("\n", "\r\n").encode()
    return parse_message(raw)


def ctx(message=None, controls=None, account="main", budget=None) -> MatchContext:
    return MatchContext(
        message=message or mail(),
        account=account,
        controls=MappingProxyType(controls or {}),
        budget=budget or RegexBudget(0.5, 5.0),
    )


def cond(field: str, operator: str, operand, **kw) -> Condition:
    pseudo = kw.pop("pseudo", field in ("body", "body_html", "attachment_names", "account",
                                        "recipient"))
    return Condition.create(field=field, pseudo=pseudo, operator=operator, operand=operand, **kw)


# --- missing headers -------------------------------------------------------------------

def test_negated_condition_on_missing_header_matches():
    result = cond("X-Not-There", "contains", "foo", negate=True).evaluate(ctx())
    assert result.matched is True
    assert "missing" in result.reason


def test_positive_condition_on_missing_header_does_not_match():
    assert cond("X-Not-There", "contains", "foo").evaluate(ctx()).matched is False


def test_missing_header_reads_as_empty_string_for_is():
    assert cond("X-Not-There", "is", "").evaluate(ctx()).matched is True
    assert cond("X-Not-There", "is", "x").evaluate(ctx()).matched is False


def test_exists_and_negated_exists():
    assert cond("X-Custom-Ticket", "exists", True).evaluate(ctx()).matched is True
    assert cond("X-Not-There", "exists", True).evaluate(ctx()).matched is False
    assert cond("X-Not-There", "exists", True, negate=True).evaluate(ctx()).matched is True
    assert cond("X-Not-There", "exists", False).evaluate(ctx()).matched is True


# --- case and operators ----------------------------------------------------------------

def test_header_names_and_values_are_case_insensitive_by_default():
    assert cond("subject", "contains", "FATTURA").evaluate(ctx()).matched is True
    assert cond("x-custom-ticket", "is", "abc-123").evaluate(ctx()).matched is True


def test_case_sensitive_option():
    c = cond("Subject", "contains", "FATTURA", case_sensitive=True)
    assert c.evaluate(ctx()).matched is False
    c = cond("Subject", "contains", "Fattura", case_sensitive=True)
    assert c.evaluate(ctx()).matched is True


def test_contains_is_literal_with_star_wildcard():
    assert cond("Subject", "contains", "2024/117").evaluate(ctx()).matched is True
    assert cond("Subject", "contains", "fattura*pagata").evaluate(ctx()).matched is True
    assert cond("Subject", "contains", "pagata*fattura").evaluate(ctx()).matched is False
    # Regex metacharacters are literal in contains.
    assert cond("Subject", "contains", "2024.117").evaluate(ctx()).matched is False


def test_starts_with_ends_with_accept_lists():
    assert cond("Subject", "starts_with", ["Re:", "fattura"]).evaluate(ctx()).matched is True
    assert cond("Subject", "ends_with", "PAGATA").evaluate(ctx()).matched is True
    assert cond("Subject", "starts_with", "pagata").evaluate(ctx()).matched is False


def test_is_any_of():
    assert cond("X-Custom-Ticket", "is_any_of", ["x", "ABC-123"]).evaluate(ctx()).matched
    assert not cond("X-Custom-Ticket", "is_any_of", ["ABC", "123"]).evaluate(ctx()).matched


def test_regex_is_unanchored_search():
    assert cond("Subject", "regex", r"\d{4}/\d+").evaluate(ctx()).matched is True
    assert cond("Subject", "regex", r"^\d{4}").evaluate(ctx()).matched is False


def test_any_value_of_a_repeated_header_matches():
    assert cond("Received", "contains", "relay.example.org").evaluate(ctx()).matched is True
    negated = cond("Received", "contains", "relay.example.org", negate=True)
    assert negated.evaluate(ctx()).matched is False  # negated: holds only if NO value matches


# --- addresses -------------------------------------------------------------------------

def test_address_mode_matches_bare_addresses_and_anchors_regex():
    # The display name holds a comma and "Rossi": address mode must not see it.
    assert cond("From", "regex", r"mario\.rossi@cliente\.example\.it", address=True).evaluate(
        ctx()
    ).matched
    assert not cond("From", "regex", r"rossi@cliente", address=True).evaluate(ctx()).matched
    assert cond("From", "regex", r"rossi@cliente").evaluate(ctx()).matched  # raw text: unanchored
    assert not cond("From", "contains", "Rossi, Mario", address=True).evaluate(ctx()).matched


def test_address_mode_on_list_header_tests_each_address():
    assert cond("To", "is", "billing@example.com", address=True).evaluate(ctx()).matched
    assert cond("To", "ends_with", "@EXAMPLE.com", address=True).evaluate(ctx()).matched


def test_recipient_pseudo_field_covers_to_cc_and_delivered_to():
    message = mail(HEADERS + "Delivered-To: helpdesk+it@example.com\n")
    for address in ("support@example.com", "boss@cliente.example.it", "helpdesk+it@example.com"):
        assert cond("recipient", "is", address).evaluate(ctx(message)).matched, address
    assert not cond("recipient", "is", "mario.rossi@cliente.example.it").evaluate(
        ctx(message)
    ).matched


# --- pseudo-fields ---------------------------------------------------------------------

def test_body_account_and_attachment_names():
    message = mail()
    assert cond("body", "contains", "allego").evaluate(ctx(message)).matched
    assert cond("account", "is", "main").evaluate(ctx(message)).matched
    assert not cond("attachment_names", "exists", True).evaluate(ctx(message)).matched
    with_file = message.__class__(
        raw=message.raw,
        headers=message.headers,
        attachments=(Attachment("Fattura_117.PDF", "application/pdf", b"%PDF"),),
    )
    assert cond("attachment_names", "regex", r"\.pdf$").evaluate(ctx(with_file)).matched


def test_body_html_missing_reads_empty():
    assert cond("body_html", "contains", "x", negate=True).evaluate(ctx()).matched


# --- control headers -------------------------------------------------------------------

def test_control_headers_are_read_from_the_overlay_not_the_mail():
    message = mail(HEADERS + "X-OTOBO-Priority: 5 very high\n")
    c = cond("X-OTOBO-Priority", "exists", True)
    assert c.evaluate(ctx(message, controls={})).matched is False
    assert c.evaluate(ctx(message, controls={"X-OTOBO-Priority": "1"})).matched is True


def test_otrs_alias_reads_the_canonical_control():
    c = cond("X-OTRS-Queue", "is", "Billing")
    assert c.evaluate(ctx(controls={"X-OTOBO-Queue": "Billing"})).matched


def test_unknown_control_header_is_rejected_with_suggestion():
    with pytest.raises(ConditionError, match="did you mean X-OTOBO-Queue"):
        cond("X-OTOBO-Queu", "is", "x")


# --- captures --------------------------------------------------------------------------

def test_regex_captures_numbered_and_named_groups():
    c = cond("Subject", "regex", r"(?P<year>\d{4})/(\d+)")
    result = c.evaluate(ctx())
    assert result.captures == {"1": "2024", "2": "117", "year": "2024"}
    assert c.capture_names == frozenset({"1", "2", "year"})


def test_negated_regex_does_not_capture():
    c = cond("Subject", "regex", r"(nothing)", negate=True)
    assert c.capture_names == frozenset()
    assert c.evaluate(ctx()).captures == {}


# --- time budget -----------------------------------------------------------------------

def test_pathological_regex_fails_within_the_budget_instead_of_hanging():
    message = mail(body="a" * 60 + "b\n")
    c = cond("body", "regex", r"(a|aa)+$")
    result = c.evaluate(ctx(message, budget=RegexBudget(0.05, 1.0)))
    assert result.matched is False
    assert result.error == "timeout"


def test_negated_pathological_regex_also_fails():
    message = mail(body="a" * 60 + "b\n")
    c = cond("body", "regex", r"(a|aa)+$", negate=True)
    result = c.evaluate(ctx(message, budget=RegexBudget(0.05, 1.0)))
    assert result.matched is False
    assert result.error == "timeout"


def test_exhausted_budget_fails_later_regexes_at_once():
    budget = RegexBudget(0.05, 0.0)
    result = cond("Subject", "regex", "fattura").evaluate(ctx(budget=budget))
    assert result.matched is False
    assert "used up" in result.reason


# --- building --------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("operator", "operand", "message"),
    [
        ("regex", "(unclosed", "does not compile"),
        ("regex", "", "always matches"),
        ("contains", "", "always matches"),
        ("starts_with", [], "string or a list"),
        ("exists", "yes", "true or false"),
        ("glob", "x", "unknown operator"),
    ],
)
def test_invalid_conditions_are_rejected(operator, operand, message):
    with pytest.raises(ConditionError, match=message):
        cond("Subject", operator, operand)
