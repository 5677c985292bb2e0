"""Built-in classifiers: loop, attachments, auto-reply, forwarded, commands, dispatch, keywords."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from connector.filters import (
    AutoReplyDetails,
    CommandDetails,
    FilterChain,
    FilterSettings,
    ForwardDetails,
    Kind,
    LoopDetails,
    NullLookups,
    Strength,
    run_filters,
)
from connector.filters.authentication import AuthMethod, SenderAuthentication
from connector.mail.parse import parse_message
from connector.understand import to_verdict

STAFF = FilterSettings(
    staff=("anna@example.com", "@staff.example.com"),
    own_addresses=frozenset({"support@example.com"}),
)


def mail(headers: str, body: str = "Hello.\n"):
    raw = (headers.rstrip("\n") + "\n\n" + body).replace("\n", "\r\n").encode()
    return parse_message(raw)


class Lookups(NullLookups):
    def __init__(self, own=(), counts=None, tickets=None):
        self.own = set(own)
        self.counts = counts or {}
        self.tickets = tickets or {}

    def is_own_message_id(self, message_id: str) -> bool:
        return message_id in self.own

    def sender_count_on(self, address: str, day, *, proven: bool | None = None) -> int:
        return self.counts.get(address, 0)

    def known_ticket_for(self, message_ids: Sequence[str]) -> int | None:
        for mid in message_ids:
            if mid in self.tickets:
                return self.tickets[mid]
        return None


def run(message, *, settings=STAFF, lookups=None, trusted=False, proven=False):
    """``proven``: the From is authenticated (as our MTA's DKIM pass would prove it)."""
    authentication = None
    if proven:
        authentication = SenderAuthentication(message.from_.normalized, True,
                                              AuthMethod.DKIM_RESULT, "test: dkim=pass")
    return run_filters(
        message,
        account="support",
        trusted=trusted,
        chain=FilterChain(),
        settings=settings,
        lookups=lookups or Lookups(),
        authentication=authentication,
    )


def step(outcome, name):
    return [s for s in outcome.trace["steps"] if s.get("name") == name][0]


# --- loop ------------------------------------------------------------------------------

def test_mail_from_our_own_address_is_a_loop_and_stops_everything():
    outcome = run(mail("From: Support <SUPPORT@example.com>\nTo: x@y.example\nSubject: hi\n"))
    assert outcome.classification.kind is Kind.LOOP
    assert outcome.classification.details == LoopDetails("own_address", "support@example.com")
    assert outcome.ignored
    assert [s["name"] for s in outcome.trace["steps"]] == ["trust", "loop"]
    assert outcome.control("X-OTOBO-AttachmentCount") is None


def test_mail_carrying_our_own_message_id_is_a_loop():
    message = mail("From: a@b.example\nSubject: x\nMessage-ID: <ours-1@bridge.example>\n")
    outcome = run(message, lookups=Lookups(own={"ours-1@bridge.example"}))
    assert outcome.classification.kind is Kind.LOOP
    assert outcome.classification.details.signal == "own_message_id"


def test_x_otobo_loop_counts_only_on_trusted_accounts():
    message = mail("From: a@b.example\nSubject: x\nX-OTOBO-Loop: yes\n")
    assert run(message, trusted=False).classification is None
    assert run(message, trusted=True).classification.details.signal == "loop_header"


def test_sender_cap_holds_a_storm():
    message = mail("From: Bot <Bot@Noisy.example>\nSubject: x\n")
    below = run(message, lookups=Lookups(counts={"bot@noisy.example": 39}))
    assert below.classification is None
    storm = run(message, lookups=Lookups(counts={"bot@noisy.example": 40}))
    assert storm.classification.kind is Kind.STORM
    assert storm.classification.details == LoopDetails("sender_cap", "bot@noisy.example", 40, 40)
    assert not storm.ignored  # held for `held release`, never ignored
    off = run(message, settings=FilterSettings(sender_cap_per_day=0),
              lookups=Lookups(counts={"bot@noisy.example": 1000}))
    assert off.classification is None


# --- attachments -----------------------------------------------------------------------

def test_attachment_count_excludes_inline_images():
    raw = (
        b"From: a@b.example\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: multipart/related; boundary=\"R\"\r\n\r\n"
        b"--R\r\nContent-Type: text/html\r\n\r\n<p>hi <img src=\"cid:logo@x\"></p>\r\n"
        b"--R\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\n"
        b"Content-Disposition: inline\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n"
        b"--R--\r\n"
        b"--B\r\nContent-Type: application/pdf; name=\"offer.pdf\"\r\n"
        b"Content-Disposition: attachment; filename=\"offer.pdf\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--B--\r\n"
    )
    outcome = run(parse_message(raw))
    assert outcome.control("X-OTOBO-AttachmentCount") == "1"
    assert outcome.control("X-OTOBO-AttachmentExists") == "yes"
    plain = run(mail("From: a@b.example\nSubject: none\n"))
    assert plain.control("X-OTOBO-AttachmentExists") == "no"


# --- auto-reply ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("extra", "kind"),
    [
        ("Auto-Submitted: auto-replied", "auto_reply"),
        ("Auto-Submitted: auto-replied (vacation)", "out_of_office"),
        ("Auto-Submitted: auto-replied; owner-email=\"x@y.example\"", "out_of_office"),
        ("X-Autoreply: yes", "auto_reply"),
        ("X-Autorespond: Out of office", "auto_reply"),
        ("X-Autogenerated: Reply", "auto_reply"),
        ("Precedence: auto_reply", "auto_reply"),
    ],
)
def test_strong_auto_reply_headers(extra, kind):
    outcome = run(mail(f"From: someone@else.example\nSubject: Re: your ticket\n{extra}\n"))
    assert outcome.classification.kind is Kind.AUTO_REPLY
    assert outcome.classification.strength is Strength.STRONG
    assert outcome.classification.details.kind == kind
    assert outcome.control("X-OTOBO-Loop") == "yes"


@pytest.mark.parametrize(
    ("extra", "kind"),
    [
        ("Precedence: bulk", "bulk"),
        ("Precedence: junk", "bulk"),
    ],
)
def test_weak_auto_reply_headers_only_tag(extra, kind):
    outcome = run(mail(f"From: someone@else.example\nSubject: Re: your ticket\n{extra}\n"))
    assert outcome.classification.strength is Strength.WEAK
    assert outcome.classification.details.kind == kind
    assert "auto_reply_suspect" in outcome.add_tags
    assert outcome.control("X-OTOBO-Loop") is None
    assert to_verdict(outcome).classification.weak  # decide tickets it, with the tag


@pytest.mark.parametrize(
    "extra",
    [
        "X-Auto-Response-Suppress: All",  # GitHub notifications, newsletters ask for no replies
        "X-Autogenerated: Mirror",  # a CommuniGate rule's copy of someone's mail
        "X-Autogenerated: Redirect",
    ],
)
def test_headers_that_are_no_auto_reply_signal(extra):
    outcome = run(mail(f"From: someone@else.example\nSubject: Re: your ticket\n{extra}\n"))
    assert outcome.classification is None


@pytest.mark.parametrize(
    "extra",
    [
        "List-Id: <news.lists.example>",
        "List-Unsubscribe: <mailto:leave@lists.example>",
        "Precedence: list",
        "Precedence: bulk\nSender: owner-linux-mm@kvack.org",
        "Precedence: bulk\nX-Mailing-List: linux-kernel@vger.kernel.org",
    ],
)
def test_list_mail_is_tagged_and_ticketed(extra):
    outcome = run(mail(f"From: someone@else.example\nSubject: Re: a patch\n{extra}\n"))
    assert outcome.classification is None
    assert outcome.add_tags == ("list_mail",)


def test_subject_with_a_vendor_header_is_the_strong_vendor_form():
    outlook = "Subject: Automatic reply: your ticket\nX-Auto-Response-Suppress: All\n"
    outcome = run(mail(f"From: someone@else.example\n{outlook}"))
    assert outcome.classification.strength is Strength.STRONG
    assert outcome.control("X-OTOBO-Loop") == "yes"
    exchange_rule = outlook + "X-MS-Exchange-Inbox-Rules-Loop: x@y.example\n"
    outcome = run(mail(f"From: someone@else.example\nSubject: Out of Office: x\n{exchange_rule}"))
    assert outcome.classification.details.kind == "out_of_office"


def test_auto_submitted_no_is_a_human():
    assert run(mail("From: a@b.example\nSubject: x\nAuto-Submitted: no\n")).classification is None


@pytest.mark.parametrize(
    ("subject", "kind"),
    [
        ("Automatic reply: Your request", "auto_reply"),
        ("Out of Office: Your request", "out_of_office"),
        ("Mario Rossi is out of the office.", "out_of_office"),
        ("Risposta automatica: Richiesta assistenza", "auto_reply"),
        ("Fuori sede fino al 3 gennaio", "out_of_office"),
        ("Automatische Antwort: Ihre Anfrage", "auto_reply"),
        ("Abwesenheitsnotiz: Ihre Anfrage", "out_of_office"),
        ("Hans Müller ist außer Haus", "out_of_office"),
        ("Réponse automatique : votre demande", "auto_reply"),
        ("Absence du bureau", "out_of_office"),
        ("Respuesta automática: su solicitud", "auto_reply"),
        ("Fuera de la oficina: su solicitud", "out_of_office"),
        ("Odpowiedź automatyczna: zgłoszenie", "auto_reply"),
        ("Poza biurem: zgłoszenie", "out_of_office"),
        ("Otomatik yanıt: talebiniz", "auto_reply"),
        ("Ofis dışında: talebiniz", "out_of_office"),
        ("RE: Automatic reply: loop", "auto_reply"),
    ],
)
def test_auto_reply_subjects_in_seven_languages(subject, kind):
    outcome = run(mail(f"From: someone@else.example\nSubject: {subject}\n"))
    assert outcome.classification is not None, subject
    assert outcome.classification.details.kind == kind
    # A subject alone is a weak signal: tagged, and ticketed.
    assert outcome.classification.strength is Strength.WEAK
    assert "auto_reply_suspect" in outcome.add_tags


@pytest.mark.parametrize(
    "subject",
    [
        "Out of office hours support needed",
        "Auto: preventivo per la mia macchina",
        "Question about your auto-renewal",
        "Re: printer out of toner",
        "Assenza di connessione in ufficio",
    ],
)
def test_human_subjects_are_not_auto_replies(subject):
    assert run(mail(f"From: someone@else.example\nSubject: {subject}\n")).classification is None


def test_list_mail_can_count_as_a_weak_auto_reply_when_configured():
    message = mail("From: a@b.example\nSubject: help\nList-Id: <support.groups.example>\n")
    settings = FilterSettings(list_mail_is_auto_reply=True)
    outcome = run(message, settings=settings)
    assert outcome.classification.strength is Strength.WEAK
    assert set(outcome.add_tags) == {"list_mail", "auto_reply_suspect"}


def test_auto_reply_knows_the_ticket_its_references_point_at():
    message = mail(
        "From: a@b.example\nSubject: Automatic reply: x\nIn-Reply-To: <sent-9@bridge.example>\n"
    )
    outcome = run(message, lookups=Lookups(tickets={"sent-9@bridge.example": 314}))
    assert outcome.classification.details == AutoReplyDetails(
        "auto_reply", ("subject 'Automatic reply: x'",), 314
    )


# --- forwarded -------------------------------------------------------------------------

GMAIL_FORWARD = """\
Can you take care of this customer? Thanks, Anna

---------- Forwarded message ---------
From: Luigi Bianchi <luigi.bianchi@cliente.example.it>
Date: Mon, 3 Jun 2024 at 10:12
Subject: Stampante guasta
To: Anna <anna@example.com>


Buongiorno, la stampante del secondo piano non stampa più.
Luigi
"""

OUTLOOK_IT_FORWARD = """\
Vi giro la richiesta.

________________________________
Da: Bianchi, Luigi <luigi.bianchi@cliente.example.it>
Inviato: lunedì 3 giugno 2024 10:12
A: Mario <mario@staff.example.com>
Oggetto: Stampante guasta

Buongiorno, la stampante non stampa.
"""

APPLE_FORWARD = """\
Begin forwarded message:

> From: "Luigi Bianchi" <luigi.bianchi@cliente.example.it>
> Subject: Stampante guasta
> Date: 3 June 2024 at 10:12:00 CEST
> To: anna@example.com
>
> Buongiorno, la stampante non stampa.
"""


@pytest.mark.parametrize(
    ("sender", "subject", "body", "text"),
    [
        ("Anna <anna@example.com>", "Fwd: Stampante guasta", GMAIL_FORWARD,
         "Buongiorno, la stampante del secondo piano non stampa più.\nLuigi"),
        ("mario@staff.example.com", "I: Stampante guasta", OUTLOOK_IT_FORWARD,
         "Buongiorno, la stampante non stampa."),
        ("anna@example.com", "Inoltro: Stampante guasta", APPLE_FORWARD,
         "Buongiorno, la stampante non stampa."),
    ],
)
def test_staff_inline_forward_opens_the_ticket_for_the_original_sender(
    sender, subject, body, text
):
    outcome = run(mail(f"From: {sender}\nTo: support@example.com\nSubject: {subject}\n", body),
                  proven=True)
    assert outcome.classification.kind is Kind.FORWARDED
    details = outcome.classification.details
    assert isinstance(details, ForwardDetails)
    assert details.original_sender.email == "luigi.bianchi@cliente.example.it"
    assert details.subject == "Stampante guasta"
    assert details.text_body == text
    assert details.source == "inline"
    assert outcome.effective_message.from_.email == "luigi.bianchi@cliente.example.it"
    assert outcome.effective_message.subject == "Stampante guasta"
    assert outcome.control("X-Bridge-Requester") == "luigi.bianchi@cliente.example.it"


def test_gmail_forward_keeps_what_staff_wrote_above_it():
    outcome = run(mail("From: anna@example.com\nSubject: Fwd: Stampante guasta\n", GMAIL_FORWARD),
                  proven=True)
    assert outcome.classification.details.forwarder_text == (
        "Can you take care of this customer? Thanks, Anna"
    )


def test_staff_forward_as_attachment_uses_the_attached_message():
    raw = (
        b"From: anna@example.com\r\nTo: support@example.com\r\nSubject: WG: Problem\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        b"--B\r\nContent-Type: message/rfc822\r\n\r\n"
        b"From: Karl Kunde <karl@kunde.example.de>\r\nSubject: Problem mit dem Drucker\r\n"
        b"Message-ID: <orig-1@kunde.example.de>\r\n\r\nDer Drucker druckt nicht.\r\n"
        b"--B--\r\n"
    )
    outcome = run(parse_message(raw), proven=True)
    details = outcome.classification.details
    assert details.source == "attachment"
    assert details.original_sender.email == "karl@kunde.example.de"
    assert details.subject == "Problem mit dem Drucker"
    assert details.text_body.strip() == "Der Drucker druckt nicht."
    assert details.message.message_id == "orig-1@kunde.example.de"
    assert details.forwarder_text == "See attached."


def test_forward_from_a_non_staff_sender_is_an_ordinary_mail():
    outcome = run(mail("From: stranger@else.example\nSubject: Fwd: Stampante guasta\n",
                       GMAIL_FORWARD))
    assert outcome.classification is None
    assert "not listed as staff" in step(outcome, "forwarded")["reason"]
    assert outcome.effective_message.from_.email == "stranger@else.example"


# --- commands --------------------------------------------------------------------------

def test_staff_subject_commands():
    outcome = run(mail("From: anna@example.com\nSubject: Re: [#123] Printer #close#\n"),
                  proven=True)
    details = outcome.classification.details
    assert outcome.classification.kind is Kind.COMMAND
    assert isinstance(details, CommandDetails)
    assert details.commands == ("close",)
    assert details.subject == "Re: [#123] Printer"


def test_commands_at_the_top_of_the_text_are_removed_from_it():
    body = "#tech# #unsub#\n#CLOSE# fixed the toner\n\nmore text\n> #close# quoted\n"
    outcome = run(mail("From: mario@staff.example.com\nSubject: Re: Printer\n", body), proven=True)
    details = outcome.classification.details
    assert details.commands == ("tech", "unsubscribe", "close")
    assert details.text_body == "fixed the toner\n\nmore text\n> #close# quoted"


def test_commands_in_quoted_history_or_below_text_are_ignored():
    body = "Thanks, all good now.\n#close#\n\n> #close#\n> On Monday Anna wrote\n"
    assert run(mail("From: anna@example.com\nSubject: Re: x\n", body)).classification is None
    quoted_first = "> #close#\n> old text\n\nnew text\n"
    outcome = run(mail("From: anna@example.com\nSubject: Re: x\n", quoted_first))
    assert outcome.classification is None


def test_commands_from_customers_are_ignored_and_traced():
    outcome = run(mail("From: eve@customer.example\nSubject: Re: Printer #close#\n"))
    assert outcome.classification is None
    assert "ignored: eve@customer.example is not staff" in step(outcome, "commands")["reason"]


# --- dispatch --------------------------------------------------------------------------

DISPATCH = FilterSettings(
    dispatch={
        "billing@example.com": "Billing",
        "support@example.com": "Support",
        "support+sales@example.com": "Sales",
    }
)


@pytest.mark.parametrize(
    ("headers", "queue"),
    [
        ("To: Billing <BILLING@example.com>", "Billing"),
        ("To: support+sales@example.com", "Sales"),
        ("To: support+whatever@example.com", "Support"),
        ("To: someone@else.example\nCc: billing@example.com", "Billing"),
        ("To: list@else.example\nDelivered-To: support+sales@example.com", "Sales"),
        ("To: support@example.com\nCc: billing@example.com", "Support"),
        ("To: nobody@else.example", None),
    ],
)
def test_dispatch_by_system_address(headers, queue):
    outcome = run(mail(f"From: a@b.example\n{headers}\nSubject: x\n"), settings=DISPATCH)
    assert outcome.control("X-OTOBO-Queue") == queue


def test_trusted_mails_own_queue_wins_over_dispatch():
    message = mail("From: a@b.example\nTo: billing@example.com\nSubject: x\nX-OTOBO-Queue: VIP\n")
    assert run(message, settings=DISPATCH, trusted=True).control("X-OTOBO-Queue") == "VIP"
    assert run(message, settings=DISPATCH, trusted=False).control("X-OTOBO-Queue") == "Billing"


# --- keywords --------------------------------------------------------------------------

def test_keywords_add_tags_on_whole_words():
    settings = FilterSettings(keywords={"invoice": ("billing",), "server down": ("outage", "p1")})
    outcome = run(
        mail("From: a@b.example\nSubject: Invoice question\n", "Our SERVER DOWN since 9.\n"),
        settings=settings,
    )
    assert outcome.add_tags == ("billing", "outage", "p1")
    assert run(mail("From: a@b.example\nSubject: invoices\n"), settings=settings).add_tags == ()


# --- challenge-response and feedback reports -------------------------------------------

@pytest.mark.parametrize(
    "headers",
    [
        "From: Boxbe <notify@boxbe.com>\nSubject: Anna Rossi (anna@x.example) is awaiting "
        "your approval",
        "From: Bluebottle <noreply@bluebottle.com>\nSubject: Please confirm your message",
        "From: spamblocker-challenge@earthlink.net\nSubject: Sender verification: Re: order",
        "From: SpamArrest <verify@spamarrest.com>\nSubject: [SpamArrest] Request to verify",
    ],
)
def test_challenge_response_mail_is_strong_machine_mail(headers):
    outcome = run(mail(headers))
    assert outcome.classification.kind is Kind.AUTO_REPLY
    assert outcome.classification.details.kind == "challenge"
    assert outcome.classification.strength is Strength.STRONG


def test_a_verification_subject_from_a_person_is_only_weak():
    outcome = run(mail("From: mario@cliente.example\nSubject: Please confirm your message "
                       "was received"))
    assert outcome.classification.strength is Strength.WEAK


def test_an_arf_feedback_report_is_strong_machine_mail():
    outcome = run(mail(
        "From: abuse@isp.example\nSubject: FW: Earn money\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\n',
        "--b\nContent-Type: text/plain\n\nThis is an email abuse report.\n--b\n"
        "Content-Type: message/feedback-report\n\nFeedback-Type: abuse\nVersion: 1\n--b--\n",
    ))
    assert outcome.classification.details.kind == "feedback_report"
    assert outcome.classification.strength is Strength.STRONG


@pytest.mark.parametrize("subject", ["Read: PhD tema", "Gelesen: Ihre Anfrage",
                                     "Letto: richiesta", "Lu : votre demande"])
def test_a_read_receipt_subject_with_a_null_sender_is_strong(subject):
    outcome = run(mail(f"Return-Path: <>\nFrom: mario@cliente.example\nSubject: {subject}\n"))
    assert outcome.classification.details.kind == "receipt"
    assert outcome.classification.strength is Strength.STRONG
    alone = run(mail(f"From: mario@cliente.example\nSubject: {subject}\n"))
    assert alone.classification.strength is Strength.WEAK
