"""Bounce classification, measured on real bounces (flufl.bounce's corpus), not only ours.

Expected recipients per file come from flufl.bounce's own detector tests
(tests/data/filters/flufl_bounce_expected.json). The known misses are listed here, so any
regression, and any improvement, makes a test fail and gets looked at.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from connector.filters import (
    BounceDetails,
    FilterChain,
    FilterSettings,
    Kind,
    NullLookups,
    run_filters,
)
from connector.filters.classifiers.dsn import analyse
from connector.mail.parse import parse_message

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "realworld" / "flufl_bounce"
EXPECTED = json.loads((DATA / "filters" / "flufl_bounce_expected.json").read_text())

# A forwarded bounce whose subject starts with "RE:" from a non-daemon address: we refuse to
# call replies bounces, so a customer's reply is never swallowed.
KNOWN_UNDETECTED = {"simple_20.txt"}
# aol_01 names the recipient by screen name only (no domain); yale_01 only shows example
# names in its help text next to the bare local part.
KNOWN_WRONG_RECIPIENTS = {"aol_01.txt", "yale_01.txt"}


class Lookups(NullLookups):
    def __init__(self, own: set[str], tickets: dict[str, int]) -> None:
        self.own = own
        self.tickets = tickets

    def is_own_message_id(self, message_id: str) -> bool:
        return message_id in self.own

    def known_ticket_for(self, message_ids: Sequence[str]) -> int | None:
        return next((self.tickets[m] for m in message_ids if m in self.tickets), None)


def classify(raw: bytes, lookups=None):
    return run_filters(
        parse_message(raw),
        account="support",
        trusted=False,
        chain=FilterChain(),
        settings=FilterSettings(),
        lookups=lookups or NullLookups(),
    )


@pytest.fixture(scope="module")
def corpus_results():
    return {path.name: classify(path.read_bytes()) for path in sorted(CORPUS.glob("*.txt"))}


def test_corpus_is_present():
    assert len(list(CORPUS.glob("*.txt"))) >= 115


def test_every_real_bounce_is_recognised_except_the_known_miss(corpus_results):
    bounces = set(EXPECTED["bounces"]) | set(EXPECTED["bounces_without_recipient"])
    detected = {
        name
        for name in bounces
        if corpus_results[name].classification is not None
        and corpus_results[name].classification.kind is Kind.BOUNCE
    }
    assert bounces - detected == KNOWN_UNDETECTED
    assert len(detected) == 114


def test_non_bounces_are_not_bounces(corpus_results):
    for name in EXPECTED["not_bounces"]:
        classification = corpus_results[name].classification
        assert classification is None or classification.kind is not Kind.BOUNCE, name
    assert corpus_results["qmail_08.txt"].classification.kind is Kind.AUTO_REPLY


def test_failed_recipients_match_flufl_bounce_expectations(corpus_results):
    right, wrong = [], []
    for name, expected in EXPECTED["bounces"].items():
        if name in KNOWN_UNDETECTED:
            continue
        details = corpus_results[name].classification.details
        got = sorted(a.lower() for a in details.failed_recipients)
        (right if got == sorted(a.lower() for a in expected["recipients"]) else wrong).append(name)
    assert set(wrong) == KNOWN_WRONG_RECIPIENTS
    assert len(right) == 108


def test_delay_warnings_are_told_from_failures(corpus_results):
    for name, expected in EXPECTED["bounces"].items():
        if name in KNOWN_UNDETECTED:
            continue
        details = corpus_results[name].classification.details
        assert (details.action == "delayed") is expected["temporary"], name
        assert details.permanent is (not expected["temporary"]), name


def test_standard_dsn_fields(corpus_results):
    details = corpus_results["dsn_11.txt"].classification.details
    assert details.standard is True
    assert details.status == "5.1.1"
    assert details.failed_recipients == ("joem@example.com",)
    assert details.original_message_id == (
        "mailman.0.1035637201.19036.mailman-developers@python.org"
    )
    # Original-Recipient wins over a rewritten Final-Recipient
    assert corpus_results["dsn_04.txt"].classification.details.failed_recipients == (
        "userx@example.ch",
    )


def test_bounce_controls_are_set_for_later_filters(corpus_results):
    outcome = corpus_results["dsn_11.txt"]
    assert outcome.control("X-OTOBO-Bounce") == "yes"
    assert outcome.control("X-OTOBO-Bounce-OriginalMessageID") == (
        "mailman.0.1035637201.19036.mailman-developers@python.org"
    )
    assert outcome.control("X-OTOBO-Bounce-ErrorMessage").startswith(
        "delivery to joem@example.com failed: 5.1.1"
    )


OUR_BOUNCE = b"""\
From: Mail Delivery System <MAILER-DAEMON@mx.customer.example>\r
To: support@example.com\r
Subject: Undelivered Mail Returned to Sender\r
Message-ID: <bounce-1@mx.customer.example>\r
Auto-Submitted: auto-replied\r
MIME-Version: 1.0\r
Content-Type: multipart/report; report-type=delivery-status; boundary="R"\r
\r
--R\r
Content-Type: text/plain\r
\r
I'm sorry to have to inform you that your message could not be delivered.\r
--R\r
Content-Type: message/delivery-status\r
\r
Reporting-MTA: dns; mx.customer.example\r
\r
Final-Recipient: rfc822; gone@customer.example\r
Action: failed\r
Status: 5.1.1\r
Diagnostic-Code: smtp; 550 5.1.1 <gone@customer.example>: Recipient address rejected\r
--R\r
Content-Type: text/rfc822-headers\r
\r
From: Support <support@example.com>\r
To: gone@customer.example\r
Subject: [Ticket#2024060310000017] Your printer\r
Message-ID: <reply-17@bridge.example.com>\r
--R--\r
"""


def test_bounce_of_our_own_mail_names_the_ticket_and_the_note():
    outcome = classify(OUR_BOUNCE, Lookups({"reply-17@bridge.example.com"},
                                           {"reply-17@bridge.example.com": "17"}))
    classification = outcome.classification
    assert classification.kind is Kind.BOUNCE  # not an auto-reply, despite Auto-Submitted
    details = classification.details
    assert isinstance(details, BounceDetails)
    assert details.ours is True and details.ticket_id == "17"
    assert details.note() == (
        "delivery to gone@customer.example failed: 5.1.1 "
        "550 5.1.1 <gone@customer.example>: Recipient address rejected"
    )


def test_bounce_of_mail_we_did_not_send_has_no_ticket():
    details = classify(OUR_BOUNCE).classification.details
    assert details.ours is False and details.ticket_id is None
    assert details.original_message_id == "reply-17@bridge.example.com"


def test_success_report_is_not_a_bounce():
    raw = OUR_BOUNCE.replace(b"Action: failed", b"Action: delivered").replace(
        b"Status: 5.1.1", b"Status: 2.0.0"
    )
    outcome = classify(raw)
    assert outcome.classification.kind is Kind.AUTO_REPLY
    assert outcome.classification.details.kind == "receipt"


def test_human_reply_about_a_bounce_is_not_a_bounce():
    raw = (
        b"From: Eve <eve@customer.example>\r\nTo: support@example.com\r\n"
        b"Subject: Re: Undelivered Mail Returned to Sender\r\n\r\n"
        b"Your mail could not be delivered to my colleague, user unknown? Please retry.\r\n"
    )
    assert classify(raw).classification is None


@pytest.mark.parametrize(
    "raw",
    [
        # A courier's customer: failure wording about a parcel, not about mail.
        b"From: Eve <eve@customer.example>\r\nTo: support@courier.example\r\n"
        b"Subject: Delivery failure for parcel 123\r\n\r\n"
        b"My parcel could not be delivered, it says undeliverable. Please help.\r\n",
        # An admin@ address is not a mail daemon.
        b"From: admin@customer.example\r\nTo: support@example.com\r\n"
        b"Subject: Invoice not delivered\r\n\r\nThe invoice could not be delivered to us.\r\n",
    ],
)
def test_human_failure_wording_is_not_a_bounce(raw):
    assert classify(raw).classification is None


def read_report(raw: bytes):  # noqa: ANN201 - the dsn module's BounceReport or None
    """The bounce reader's report on a mail, as the bounce classifier asks for it."""
    message = parse_message(raw)
    return analyse(message.raw, subject=message.subject, text_body=message.text_body)


@pytest.mark.parametrize(
    ("subject", "text"),
    [
        ("邮件传输失败！", "您的邮件无法投递到以下地址：gone@example.cn"),
        ("メール配信エラー", "以下のアドレスに配信できませんでした。\ngone@example.jp"),
        ("메일 전송 실패", "다음 주소로 메일이 전달되지 않았습니다: gone@example.kr"),
    ],
)
def test_cjk_delivery_notices_from_a_daemon(subject: str, text: str) -> None:
    raw = (f"From: MAILER-DAEMON@mx.example.net\nSubject: {subject}\n"
           f"Content-Type: text/plain; charset=utf-8\n\n{text}\n").encode()
    report = read_report(raw)
    assert report is not None and report.strong
    assert report.failed_recipients[-1].startswith("gone@")


def test_an_mta_notice_template_is_a_strong_bounce_whoever_sends_it() -> None:
    raw = (b"From: bn.com.pl@neptun.example.pl\nSubject: failure notice\n\n"
           b"Hi. This is the qmail-send program at neptun.example.pl.\n"
           b"I'm afraid I wasn't able to deliver your message to the following addresses.\n"
           b"This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
           b"<gone@example.org>:\nuser does not exist\n")
    report = read_report(raw)
    assert report is not None and report.strong
    assert report.failed_recipients == ("gone@example.org",)


def test_a_list_manager_refusing_a_post_is_a_bounce() -> None:
    # mlmmj's notice for a post from a non-subscriber (notmuch's test corpus).
    report = read_report((DATA / "realworld" / "notmuch" / "broken" / "empty-part").read_bytes())
    assert report is not None and report.action == "failed" and report.strong


def test_a_customer_pasting_a_bounce_into_a_new_mail_is_no_bounce() -> None:
    raw = (b"From: Mario Rossi <mario@cliente.example>\nSubject: Returned mail\n\n"
           b"Hello, I tried to write to your sales address and got the message below.\n"
           b"Can you help? We need the invoice by Friday, and the order number is 4411.\n"
           b"Thanks, and sorry for the long paste - I don't know what the error means.\n"
           b"Mario Rossi, Accounting, Cliente S.p.A., Via Roma 1, Milano\n\n"
           b"This is the mail system at host mx.cliente.example.\n"
           b"I'm sorry to have to inform you that your message could not\n"
           b"be delivered to one or more recipients.\n\n<sales@example.com>: user unknown\n")
    report = read_report(raw)
    assert report is None or not report.strong


@pytest.mark.parametrize("subject", ["Fwd: Undelivered Mail Returned to Sender",
                                     "Undelivered Mail Returned to Sender"])
def test_a_customer_forwarding_a_real_bounce_is_no_bounce(subject: str) -> None:
    # A real Postfix DSN (bounce_email gem's corpus), attached to a customer's own mail.
    dsn = (DATA / "realworld" / "bounce_email" / "bounces" / "tt_1234175799.txt").read_bytes()
    raw = (f"From: Mario Rossi <mario@cliente.example>\nSubject: {subject}\nMIME-Version: 1.0\n"
           'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\n'
           "My order confirmation to your shop came back, see attached. What is wrong?\n--b\n"
           "Content-Type: message/rfc822\n\n").encode() + dsn + b"\n--b--\n"
    report = read_report(raw)
    assert report is None or not report.strong
    outcome = run_filters(parse_message(raw), account="support", trusted=False, chain=FilterChain(),
                          settings=FilterSettings(), lookups=NullLookups())
    classification = outcome.classification
    assert classification is None or classification.strength.value == "weak"


@pytest.mark.parametrize("name", ["0021.CALLER-1.eml", "0021.ok-1.eml", "0395.CALLER-1.eml"])
def test_exims_mail_failure_notices_are_strong_bounces(name: str) -> None:
    # Exim's own notices for mail it refused outright ("Mail failure - no recipient
    # addresses", "- malformed recipient address", "- rejected by local scanning code"), as
    # its test suite records them: no DSN part, a Mailer-Daemon sender and that subject.
    report = read_report((DATA / "realworld" / "exim" / name).read_bytes())
    assert report is not None and report.strong and report.action == "failed"
