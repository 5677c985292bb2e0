"""Building the outgoing PEC: templates, headers, threading, attachments, injection refusal."""

from __future__ import annotations

import io
import zipfile
from email import message_from_bytes, policy
from typing import Any

import pytest

from connector.outbound.compose import (
    ComposeError,
    OutgoingAttachment,
    OutgoingMessage,
    build_message,
    clean_subject,
    ensure_ticket_reference,
    new_message_id,
    valid_message_ids,
)
from connector.outbound.model import CommentView, TicketView
from connector.outbound.templates import (
    TemplateContext,
    render_bodies,
    render_subject,
    unknown_placeholders,
)

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def ticket(**kw: Any) -> TicketView:
    values: dict[str, Any] = dict(id=4711, title="Richiesta certificato", status="open",
                                  requester_name="Mario Rossi",
                                  requester_email="mario.rossi@pec.example.it",
                                  fields={360001: "Pratica 42/2026"})
    values.update(kw)
    return TicketView(**values)


def comment(**kw: Any) -> CommentView:
    values: dict[str, Any] = dict(
        id=9001, public=True, text="Buongiorno,\nin allegato il certificato.",
        html='<div class="zd-comment"><p>Buongiorno,</p><p>in allegato il <b>certificato'
             '</b>.</p><script>alert(1)</script></div>',
        author_name="Giulia Bianchi", author_email="giulia@example.it")
    values.update(kw)
    return CommentView(**values)


def context(**kw: Any) -> TemplateContext:
    return TemplateContext(kw.pop("ticket", ticket()), kw.pop("reply", comment()), None,
                           from_address="assistenza@pec.example.it",
                           display_name="ACME Assistenza")


def message(**kw: Any) -> OutgoingMessage:
    values: dict[str, Any] = dict(
        from_address="assistenza@pec.example.it", from_name="ACME Assistenza",
        to_address="mario.rossi@pec.example.it", to_name="Mario Rossi",
        subject="Richiesta certificato [#4711]", text_body="Testo", html_body="<p>Testo</p>",
        message_id="pmb.1.abc@pec.example.it", in_reply_to="opec275.1@pec.aruba.it",
        references=("m1@example.it", "opec275.1@pec.aruba.it"))
    values.update(kw)
    return OutgoingMessage(**values)


# -- templates ---------------------------------------------------------------------------------

def test_subject_template_fills_placeholders() -> None:
    template = "Re: {{ticket.title}}  [#{{ticket.id}}] {{ticket.ticket_field_360001}}"
    subject = render_subject(template, context())
    assert subject == "Re: Richiesta certificato [#4711] Pratica 42/2026"


def test_html_template_keeps_markup_escapes_values_and_sanitizes_the_comment() -> None:
    ctx = context(ticket=ticket(requester_name="Rossi <script>"))
    text, html_body = render_bodies(
        "<p>Gentile {{ticket.requester.name}},</p>{{ticket.latest_comment_html}}"
        "<p>{{current_user.name}}</p>", ctx)
    assert "Rossi &lt;script&gt;" in html_body
    assert "<b>certificato</b>" in html_body and "<script>" not in html_body
    assert "Giulia Bianchi" in html_body
    assert "Gentile Rossi <script>," in text and "in allegato il certificato." in text
    assert "alert(1)" not in text


def test_plain_template_gives_text_and_an_html_copy_with_line_breaks() -> None:
    text, html_body = render_bodies("Gentile {{ticket.requester.name}},\n\n"
                                    "{{ticket.latest_comment}}\n-- {{account.display_name}}",
                                    context())
    assert text == ("Gentile Mario Rossi,\n\nBuongiorno,\nin allegato il certificato.\n"
                    "-- ACME Assistenza")
    assert "Gentile Mario Rossi,<br>" in html_body and "<script>" not in html_body


def test_plain_template_with_html_comment_keeps_its_own_line_breaks() -> None:
    text, html_body = render_bodies("Gentile cliente,\n{{ticket.latest_comment_html}}",
                                    context())
    assert html_body.startswith("Gentile cliente,<br>\n")
    assert text.startswith("Gentile cliente,")


def test_unknown_placeholders_are_listed() -> None:
    assert unknown_placeholders("{{ticket.id}} {{ticket.ticket_field_12}} {{ticket.brand.name}}"
                                " {{ satisfaction.rating }}") == ["ticket.brand.name",
                                                                  "satisfaction.rating"]


# -- subjects and ids --------------------------------------------------------------------------

def test_pec_prefixes_are_stripped_and_the_reference_added_once() -> None:
    assert clean_subject("POSTA CERTIFICATA: POSTA CERTIFICATA: Ricorso") == "Ricorso"
    assert clean_subject("ANOMALIA MESSAGGIO: Fattura") == "Fattura"
    assert clean_subject("Re: POSTA CERTIFICATA: Ricorso") == "Re: Ricorso"
    assert clean_subject("Posta certificata e firma digitale") == \
        "Posta certificata e firma digitale"
    pattern = r"\[#(\d+)\]"
    assert ensure_ticket_reference("Ricorso", 4711, pattern) == "Ricorso [#4711]"
    assert ensure_ticket_reference("Ricorso [#4711]", 4711, pattern) == "Ricorso [#4711]"
    assert ensure_ticket_reference("Re [#12] Ricorso", 4711, pattern) == \
        "Re [#12] Ricorso [#4711]"


def test_message_ids_are_unique_and_in_the_sender_domain() -> None:
    first = new_message_id("assistenza@pec.example.it", 7)
    second = new_message_id("assistenza@pec.example.it", 7)
    assert first != second and first.endswith("@pec.example.it") and ".7." in first
    assert valid_message_ids(["a@b", "bad id@x", "c@d>"]) == (["a@b"], ["bad id@x", "c@d>"])


# -- the message -------------------------------------------------------------------------------

def test_headers_threading_and_bodies() -> None:
    built = build_message(message(receipt_type="completa"))
    parsed = message_from_bytes(built.as_bytes(), policy=policy.default)
    assert parsed["From"] == "ACME Assistenza <assistenza@pec.example.it>"
    assert parsed["To"] == "Mario Rossi <mario.rossi@pec.example.it>"
    assert parsed["Subject"] == "Richiesta certificato [#4711]"
    assert parsed["Message-ID"] == "<pmb.1.abc@pec.example.it>"
    assert parsed["In-Reply-To"] == "<opec275.1@pec.aruba.it>"
    assert parsed["References"] == "<m1@example.it> <opec275.1@pec.aruba.it>"
    assert parsed["X-TipoRicevuta"] == "completa"
    assert parsed["Bcc"] is None and parsed["Cc"] is None and parsed["Date"]
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed.get_body(("plain",)).get_content().strip() == "Testo"
    assert "<p>Testo</p>" in parsed.get_body(("html",)).get_content()
    assert b"\r\n" in built.as_bytes() and b"\n" not in built.as_bytes().replace(b"\r\n", b"")


def test_non_ascii_names_and_subject_are_encoded() -> None:
    built = build_message(message(to_name="Niccolò Bèrtoli", subject="Più è meglio [#4711]"))
    raw = built.as_bytes()
    assert raw.isascii()
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["To"].addresses[0].display_name == "Niccolò Bèrtoli"
    assert parsed["Subject"] == "Più è meglio [#4711]"


def test_attachments_are_attached() -> None:
    built = build_message(message(attachments=(
        OutgoingAttachment("certificato.pdf", "application/pdf", PDF),
        OutgoingAttachment("../../nota.txt", "text/plain; charset=utf-8", b"nota\n"),
        OutgoingAttachment("strano.bin", "not a type", b"\x00\x01"))))
    parsed = message_from_bytes(built.as_bytes(), policy=policy.default)
    files = {p.get_filename(): p for p in parsed.iter_attachments()}
    assert set(files) == {"certificato.pdf", "nota.txt", "strano.bin"}
    assert files["certificato.pdf"].get_content() == PDF
    assert files["strano.bin"].get_content_type() == "application/octet-stream"


@pytest.mark.parametrize(("field", "patch"), [
    ("subject", {"subject": "Ciao\r\nBcc: victim@example.it"}),
    ("subject", {"subject": "Ciao\nX-Evil: 1"}),
    ("to display name", {"to_name": "Mario\r\nBcc: victim@example.it"}),
    ("from display name", {"from_name": "ACME\x00"}),
    ("to", {"to_address": "mario@pec.example.it\r\nBcc: victim@example.it"}),
    ("to", {"to_address": "mario@pec.example.it, victim@example.it"}),
    ("to", {"to_address": "not-an-address"}),
    ("to", {"to_address": "niccolò@pec.example.it"}),
    ("attachment 1 file name", {"attachments": (
        OutgoingAttachment("a\r\nContent-Type: text/html", "text/plain", b"x"),)}),
    ("in_reply_to", {"in_reply_to": "x@y>\r\nBcc: victim@example.it"}),
    ("subject", {"subject": "   "}),
])
def test_injection_and_invalid_values_are_refused(field: str, patch: dict[str, Any]) -> None:
    with pytest.raises(ComposeError) as info:
        build_message(message(**patch))
    assert info.value.field == field


def test_blocked_extensions_even_inside_zip_files() -> None:
    blocked = ("exe", "js")
    with pytest.raises(ComposeError, match="setup.exe"):
        exe = OutgoingAttachment("setup.exe", "application/x", b"MZ")
        build_message(message(attachments=(exe,)), blocked_extensions=blocked)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("docs/readme.txt", "ok")
        archive.writestr("docs/run.js", "x")
    with pytest.raises(ComposeError, match=r"pacchetto.zip:docs/run.js"):
        build_message(message(attachments=(
            OutgoingAttachment("pacchetto.zip", "application/zip", buffer.getvalue()),)),
            blocked_extensions=blocked)
    ok = build_message(message(attachments=(OutgoingAttachment("a.pdf", "application/pdf", PDF),)),
                       blocked_extensions=blocked)
    assert ok.is_multipart()


def test_size_limit() -> None:
    big = OutgoingAttachment("scansione.pdf", "application/pdf", b"x" * 40_000)
    with pytest.raises(ComposeError, match="over the limit of 30000"):
        build_message(message(attachments=(big,)), max_bytes=30_000)
    assert build_message(message(attachments=(big,)), max_bytes=80_000)
