"""Parse stage: hand-made messages, one oddity each, plus the HTML and address helpers."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest

from connector.errors import ParseError
from connector.mail import ParsedMessage, parse_message
from connector.mail.addresses import is_valid_address, parse_address, parse_address_list
from connector.mail.decode import decode_bytes, decode_header_value
from connector.mail.html import html_to_text, sanitize_html

MAIL = Path(__file__).parent / "data" / "mail"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "mail"


def parse(name: str) -> ParsedMessage:
    return parse_message((MAIL / name).read_bytes())


# --- not a mail at all ---------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"\r\n\r\n", b"   \n\t\n", b"\n\njust a body, no header\n"])
def test_input_without_headers_raises_parse_error(raw: bytes) -> None:
    with pytest.raises(ParseError):
        parse_message(raw)


def test_non_bytes_input_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse_message("From: a@example.com\n\nbody")  # type: ignore[arg-type]


def test_bytearray_input_is_accepted_and_kept_as_bytes() -> None:
    msg = parse_message(bytearray(b"Subject: x\n\nbody\n"))
    assert msg.raw == b"Subject: x\n\nbody\n"
    assert isinstance(msg.raw, bytes)


def test_leading_blank_lines_are_skipped_but_raw_is_kept() -> None:
    raw = b"\r\n\r\nSubject: after blanks\r\n\r\nbody\r\n"
    msg = parse_message(raw)
    assert msg.subject == "after blanks"
    assert msg.raw == raw


def test_a_stray_first_line_before_the_headers_is_skipped() -> None:
    raw = b"+OK 120 octets\nFrom: a@example.com\nSubject: pop3 leftovers\n\nbody\n"
    msg = parse_message(raw)
    assert msg.subject == "pop3 leftovers"
    assert any("garbage before the headers" in d for d in msg.defects)


# --- raw and headers -----------------------------------------------------------------------


def test_raw_is_kept_byte_exact_and_hashes_are_of_it() -> None:
    raw = (MAIL / "inline_image_cid.eml").read_bytes()
    msg = parse_message(raw)
    assert msg.raw is raw or msg.raw == raw
    assert msg.sha256 == hashlib.sha256(raw).hexdigest()


def test_headers_are_all_kept_in_order_and_decoded() -> None:
    msg = parse("subject_latin1_q.eml")
    names = [name for name, _ in msg.headers]
    assert names == ["From", "To", "Subject", "Message-ID", "Date", "Content-Type"]
    assert msg.header("subject") == "Réclamation pour la facture n° 12"
    assert msg.header("FROM") == "André Müller <andre@example.de>"
    assert all(isinstance(value, str) for _, value in msg.headers)


def test_folded_headers_are_unfolded() -> None:
    msg = parse("references_garbage.eml")
    references = msg.header("References")
    assert references is not None
    assert "\n" not in references and "\r" not in references


# --- subjects in several charsets (RFC 2047) -----------------------------------------------


@pytest.mark.parametrize(
    ("name", "subject"),
    [
        ("subject_utf8_base64.eml", "Problema con l'ordine – più urgente"),
        ("subject_latin1_q.eml", "Réclamation pour la facture n° 12"),
        ("subject_mixed_charsets.eml", "Re: Привет and 日本語€ 100 done"),
        ("subject_split_multibyte.eml", "Prezzo € 50"),
    ],
)
def test_encoded_subjects_are_decoded(name: str, subject: str) -> None:
    msg = parse(name)
    assert msg.subject == subject
    assert msg.defects == () or "missing" in " ".join(msg.defects)


def test_encoded_display_names_are_decoded() -> None:
    msg = parse("subject_latin1_q.eml")
    assert msg.from_ is not None
    assert msg.from_.name == "André Müller"
    assert msg.from_.email == "andre@example.de"
    assert msg.from_.valid


# --- unknown and wrong charsets ------------------------------------------------------------


def test_unknown_charset_survives_in_subject_and_body() -> None:
    msg = parse("unknown_charset.eml")
    assert msg.subject == "Caffè freddo"
    assert msg.text_body == "Un caffè freddo, per favore.\n"
    assert "unknown charset x-unknown in Subject" in msg.defects
    assert "unknown charset x-unknown in text/plain" in msg.defects


def test_decode_bytes_never_raises() -> None:
    defects: list[str] = []
    assert decode_bytes(b"caf\xe9", "x-unknown", defects) == "café"  # not UTF-8: Windows-1252
    assert decode_bytes(b"caf\xc3\xa9", "us-ascii", defects) == "café"  # mislabelled UTF-8
    assert decode_bytes(b"\x81\x8d", "utf-8", defects) == "\ufffd\ufffd"
    assert decode_bytes(b"abc", "base64", defects) == "abc"  # a codec, but not a charset
    assert decode_bytes(b"\x80", "iso-8859-1") == "€"  # Latin-1 label, Windows-1252 bytes
    assert any("x-unknown" in d for d in defects)


def test_bad_encoded_words_degrade_instead_of_raising() -> None:
    assert decode_header_value("=?utf-8?b?not base64!?=") != ""
    assert decode_header_value("=?bogus?q?caf=C3=A9?=") == "café"
    assert decode_header_value("plain =?utf-8?q??= text") == "plain  text"
    assert decode_header_value("=?utf-8*it?q?ciao?=") == "ciao"  # RFC 2231 language suffix


def test_8bit_headers_without_encoding_are_decoded() -> None:
    msg = parse("header_8bit.eml")
    assert msg.subject == "Problème résolu?"
    assert msg.from_ is not None and msg.from_.name == "Élodie Dupré"
    assert msg.header("X-Latin1") == "café"  # not UTF-8: Windows-1252 fallback
    assert "unencoded 8-bit header Subject" in msg.defects
    assert msg.text_body == "Merci à vous.\n"


def test_8bit_headers_use_the_body_charset_when_not_utf8() -> None:
    msg = parse("header_8bit_latin1.eml")
    assert msg.subject == "Señal perdida"
    assert msg.from_ is not None and msg.from_.name == "José"
    assert msg.text_body == "Mañana.\n"


# --- addresses -----------------------------------------------------------------------------


def test_invalid_from_does_not_crash_and_is_marked_invalid() -> None:
    msg = parse("invalid_from.eml")
    assert msg.from_ is not None
    assert msg.from_.name == "Mario Rossi"
    assert msg.from_.email == "mario.rossi@@example..com"
    assert msg.from_.valid is False
    assert "invalid From address" in msg.defects
    assert msg.sender is not None and msg.sender.valid is False
    assert [(a.email, a.valid) for a in msg.to] == [
        ("support@example.com", True),
        ("broken@", False),
        ("ok@example.org", True),
    ]


def test_missing_from_is_none_with_a_defect() -> None:
    msg = parse_message(b"Subject: anonymous\n\nbody\n")
    assert msg.from_ is None
    assert "missing From" in msg.defects


@pytest.mark.parametrize(
    ("address", "valid"),
    [
        ("mario.rossi@example.it", True),
        ("giulia+tickets@sub.example.com", True),
        ("josé@exämple.de", True),
        ("no-at-sign", False),
        ("a@@example.com", False),
        ("a@example..com", False),
        ("guest@localhost", False),
        ("", False),
        ("x" * 400 + "@example.com", False),
    ],
)
def test_is_valid_address(address: str, valid: bool) -> None:
    assert is_valid_address(address) is valid


def test_parse_address_list_handles_groups_comments_and_encoded_names() -> None:
    value = (
        'Team: a@example.com, "Rossi, Mario" <m.rossi@example.com>;, '
        "=?utf-8?q?Bj=C3=B6rk?= <bjork@example.is>, c@example.com (Carla, ufficio)"
    )
    parsed = parse_address_list(value)
    assert [(a.name, a.email) for a in parsed] == [
        ("", "a@example.com"),
        ("Rossi, Mario", "m.rossi@example.com"),
        ("Björk", "bjork@example.is"),
        ("Carla, ufficio", "c@example.com"),
    ]
    assert all(a.valid for a in parsed)
    assert parse_address_list("undisclosed-recipients:;") == ()
    assert parse_address_list("") == ()


def test_an_encoded_comma_in_a_name_does_not_split_the_address() -> None:
    parsed = parse_address_list("=?utf-8?q?Rossi=2C_Mario?= <m@example.com>, b@example.com")
    assert [(a.name, a.email) for a in parsed] == [
        ("Rossi, Mario", "m@example.com"),
        ("", "b@example.com"),
    ]


def test_parse_address_of_plain_words_keeps_them_as_invalid() -> None:
    address = parse_address("Undisclosed sender")
    assert address is not None
    assert address.valid is False
    assert address.email == "Undisclosed sender"
    assert parse_address(None) is None
    assert parse_address("") is None


def test_delivered_to_collects_delivered_to_and_x_original_to() -> None:
    msg = parse("delivered_to.eml")
    assert msg.delivered_to == (
        "support@example.com",
        "Team+Sales@Example.com",
        "sales@example.com",
    )


# --- identity and threading ----------------------------------------------------------------


def test_missing_message_id_is_none_with_a_defect() -> None:
    msg = parse("missing_message_id.eml")
    assert msg.message_id is None
    assert "missing Message-ID" in msg.defects
    assert msg.dedupe_key  # still identifiable by content


def test_message_id_and_references_with_garbage() -> None:
    msg = parse("references_garbage.eml")
    assert msg.message_id == "reply-3@example.com"
    assert msg.in_reply_to == ("reply-2@example.com",)
    assert msg.references == ("root@example.com", "reply-1@example.com", "reply-2@example.com")
    assert msg.thread_ids == ("reply-2@example.com", "reply-1@example.com", "root@example.com")


def test_bare_ids_without_brackets_are_still_found() -> None:
    msg = parse_message(b"In-Reply-To: abc@example.com\nReferences: x@y z@w\n\nbody")
    assert msg.in_reply_to == ("abc@example.com",)
    assert msg.references == ("x@y", "z@w")


# --- dates ---------------------------------------------------------------------------------


def test_standard_date_is_timezone_aware() -> None:
    msg = parse("subject_utf8_base64.eml")
    assert msg.date == datetime(2024, 3, 4, 10, 15, tzinfo=timezone(timedelta(hours=1)))
    assert msg.date is not None and msg.date.tzinfo is not None


def test_odd_date_goes_through_dateutil_and_keeps_its_zone() -> None:
    msg = parse("odd_date.eml")
    assert msg.date is not None
    assert msg.date.utcoffset() == timedelta(hours=1)
    assert msg.date.astimezone(UTC) == datetime(2024, 3, 5, 17, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Mon, 4 Mar 2024 10:00:00 -0000", datetime(2024, 3, 4, 10, 0, tzinfo=UTC)),
        ("4 Mar 2024 10:00", datetime(2024, 3, 4, 10, 0, tzinfo=UTC)),
        ("2024-03-04T10:00:00+02:00", datetime(2024, 3, 4, 8, 0, tzinfo=UTC)),
        ("Mon, 4 Mar 2024 10:00:00 EST", datetime(2024, 3, 4, 15, 0, tzinfo=UTC)),
        ("not a date at all", None),
        ("", None),
    ],
)
def test_date_variants(header: str, expected: datetime | None) -> None:
    msg = parse_message(f"Date: {header}\nSubject: d\n\nbody\n".encode())
    if expected is None:
        assert msg.date is None
    else:
        assert msg.date is not None and msg.date.tzinfo is not None
        assert msg.date == expected


# --- bodies --------------------------------------------------------------------------------


def test_html_only_mail_gets_text_derived_from_html() -> None:
    msg = parse("html_only.eml")
    assert msg.html_body is not None and "<h1>Offerta speciale</h1>" in msg.html_body
    assert msg.text_body == (
        "Offerta speciale\n\nCaffè & cornetto a 2 €.\nSolo oggi!\n\n- Primo punto\n- Secondo link"
    )
    assert "alert" not in msg.text_body and "Ignored title" not in msg.text_body


def test_text_only_mail_has_no_html_body() -> None:
    msg = parse("missing_message_id.eml")
    assert msg.text_body == "Hello.\n"
    assert msg.html_body is None


def test_alternative_gives_both_bodies_and_mixed_text_parts_are_concatenated() -> None:
    msg = parse("mixed_text_parts.eml")
    assert msg.text_body == "Main text.\n\nList footer: unsubscribe at https://example.com/u"
    assert msg.html_body is not None
    assert msg.html_body.startswith("<p>Main <b>html</b>.</p>")
    assert "List footer: unsubscribe at https://example.com/u" in msg.html_body
    # text parts with a filename or an attachment disposition are files, not body
    assert [(a.filename, a.content_type) for a in msg.attachments] == [
        ("notes.txt", "text/plain"),
        ("attachment-1.html", "text/html"),
    ]
    assert msg.attachments[0].data == b"These are notes, an attachment."


def test_multiple_plain_parts_in_mixed_are_joined_each_in_its_charset() -> None:
    msg = parse("plain_text_parts.eml")
    assert msg.text_body == "First part.\n\nSeconda parte: perché sì."
    assert msg.html_body is None


def test_format_flowed_is_unwrapped() -> None:
    msg = parse("flowed.eml")
    assert msg.text_body.splitlines() == [
        "This paragraph was written as one long line and the mail client wrapped it with "
        "trailing spaces for transport.",
        "Second line stays.",
        "",
        "> quoted text that also flows.",
        "-- ",
        "Signature",
    ]


def test_crlf_message_bodies_use_plain_newlines() -> None:
    msg = parse("inline_image_cid.eml")
    assert msg.raw.count(b"\r\n") > 10
    assert "\r" not in msg.text_body
    assert msg.html_body is not None and "\r" not in msg.html_body


# --- attachments ---------------------------------------------------------------------------


def test_rfc2231_rfc2047_and_missing_filenames() -> None:
    msg = parse("rfc2231_filename.eml")
    assert [(a.filename, a.content_type) for a in msg.attachments] == [
        ("€ tariffe 2024.pdf", "application/pdf"),
        ("résumé part two.csv", "text/csv"),
        (
            "Contratto firmato.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        ("attachment-1.bin", "application/octet-stream"),
        ("attachment-2.png", "image/png"),
        ("log.zip", "application/zip"),  # the sender's Windows path is not kept
    ]
    assert msg.attachments[0].data.startswith(b"%PDF-1.4")
    assert msg.attachments[3].data == b"\x00\x01\x02"
    assert msg.attachments[4].data.startswith(b"\x89PNG")
    assert msg.text_body == "See attached."


def test_inline_images_by_cid_reference_or_inline_disposition() -> None:
    msg = parse("inline_image_cid.eml")
    assert msg.html_body is not None and "cid:shot-1@example.com" in msg.html_body
    inline = [(a.filename, a.content_id, a.inline) for a in msg.inline_images]
    assert inline == [
        ("screenshot.png", "shot-1@example.com", True),  # referenced from the HTML
        ("logo.png", "logo@example.com", True),  # inline disposition with a Content-ID
    ]
    files = [(a.filename, a.content_id, a.inline) for a in msg.attachments]
    assert files == [
        ("photo.png", "photo@example.com", False),  # attachment disposition, not referenced
        ("nocid.png", None, False),  # inline, but nothing can reference it
    ]
    assert all(a.data.startswith(b"\x89PNG") for a in msg.inline_images + msg.attachments)


def test_image_referenced_by_cid_is_inline_even_with_attachment_disposition() -> None:
    raw = (
        b"From: a@example.com\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/related; boundary="r"\n\n'
        b'--r\nContent-Type: text/html\n\n<img src="cid:Pic%401">\n'
        b"--r\nContent-Type: image/gif\nContent-Disposition: attachment\n"
        b"Content-ID: <pic@1>\nContent-Transfer-Encoding: base64\n\nR0lGODlhAQABAAAAACw=\n"
        b"--r--\n"
    )
    msg = parse_message(raw)
    assert [a.content_id for a in msg.inline_images] == ["pic@1"]
    assert msg.inline_images[0].filename == "attachment-1.gif"
    assert msg.attachments == ()


def test_nested_message_is_parsed_and_kept_as_eml() -> None:
    msg = parse("nested_rfc822.eml")
    assert msg.text_body == "Forwarding the customer's mail."
    assert len(msg.nested_messages) == 1
    inner = msg.nested_messages[0]
    assert inner.subject == "Ordine 42 – ritardo"
    assert inner.message_id == "inner@example.it"
    assert inner.from_ is not None and inner.from_.email == "cliente@example.it"
    assert inner.text_body == "Il mio ordine non è arrivato."
    assert [a.filename for a in inner.attachments] == ["ricevuta.png"]
    assert [(a.filename, a.content_type) for a in msg.attachments] == [
        ("Ordine 42 – ritardo.eml", "message/rfc822")
    ]
    eml = msg.attachments[0].data
    assert eml == inner.raw
    assert parse_message(eml).subject == inner.subject
    # the inner attachment stays inside the nested message, not on the outer one
    assert all(a.content_type == "message/rfc822" for a in msg.attachments)


def test_base64_encoded_nested_message_is_decoded_before_parsing() -> None:
    inner = b"From: in@example.com\nSubject: wrapped\n\ninside\n"
    import base64

    raw = (
        b'From: out@example.com\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n\n'
        b"--b\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n"
        + base64.encodebytes(inner)
        + b"--b--\n"
    )
    msg = parse_message(raw)
    assert [n.subject for n in msg.nested_messages] == ["wrapped"]
    assert msg.nested_messages[0].text_body == "inside\n"
    assert msg.attachments[0].data == inner


def test_broken_multipart_boundary_is_repaired() -> None:
    msg = parse("broken_boundary.eml")
    assert msg.text_body == "The real text."
    assert [(a.filename, a.data) for a in msg.attachments] == [("doc.pdf", b"%PDF-1.4\n")]
    assert "multipart boundary repaired" in msg.defects
    assert "StartBoundaryNotFoundDefect" in msg.defects


def test_multipart_without_any_boundary_keeps_the_body_as_text() -> None:
    msg = parse("no_boundary_at_all.eml")
    assert msg.text_body == "Just some text, no MIME parts here.\n"
    assert "NoBoundaryInMultipartDefect" in msg.defects


def test_damaged_base64_attachment_is_repaired_with_a_defect() -> None:
    raw = (
        b'From: a@example.com\nContent-Type: multipart/mixed; boundary="b"\n\n'
        b"--b\nContent-Type: application/octet-stream; name=x.bin\n"
        b"Content-Transfer-Encoding: base64\n\nAAEC\nAw=\n=\nBAU\n--b--\n"
    )
    msg = parse_message(raw)
    assert msg.attachments[0].data == b"\x00\x01\x02\x03\x04\x05"
    assert "damaged base64 body repaired" in msg.defects


def test_quoted_printable_body_with_raw_8bit_bytes_keeps_them() -> None:
    raw = (
        b"From: a@example.com\nContent-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: quoted-printable\n\nperch\xc3\xa9 =E2=82=AC\n"
    )
    assert parse_message(raw).text_body == "perché €\n"


def test_content_hash_ignores_trace_headers() -> None:
    raw = (MAIL / "delivered_to.eml").read_bytes()
    other = raw.replace(b"Delivered-To: support@example.com\n", b"")
    assert parse_message(raw).content_hash == parse_message(other).content_hash
    assert parse_message(raw).sha256 != parse_message(other).sha256


# --- html.py -------------------------------------------------------------------------------


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend(attrs)

    handle_startendtag = handle_starttag


def elements(html: str) -> _Elements:
    found = _Elements()
    found.feed(html)
    found.close()
    return found


DIRTY = """<html><head><meta http-equiv="refresh" content="0;url=https://evil.example">
<style>p{color:red}</style><script>alert(1)</script><base href="https://evil.example/"></head>
<body onload="x()"><p class="lead" onclick="steal()">Hello &amp; <b>world</b></p>
<a href="javascript:alert(1)">js</a> <a href=" jav&#x09;ascript:alert(2)">tab</a>
<a href="https://example.com/?a=1&amp;b=2" title="ok">good</a> <a href="mailto:x@example.com">m</a>
<img src="cid:logo@example.com" alt="Logo"> <img src="data:image/png;base64,iVBORw0KGgo=">
<img src="data:text/html;base64,PHNjcmlwdD4="> <a href="data:image/png;base64,AAAA">d</a>
<img src="x" onerror="alert(3)"> <iframe src="https://evil.example">frame text</iframe>
<object data="x.swf"><p>fallback</p></object><embed src="y.swf">
<form action="https://phish.example"><input name="pw"><button>Go</button></form>
<div style="background:url(javascript:x)">styled</div><div style="color: red">fine</div>
<a href="vbscript:msgbox(1)">vb</a><svg><script>alert(4)</script></svg><!-- comment -->
</body></html>"""


def test_sanitize_html_removes_active_content() -> None:
    clean = sanitize_html(DIRTY)
    found = elements(clean)
    for tag in ("script", "style", "iframe", "object", "embed", "form", "input", "base", "svg"):
        assert tag not in found.tags
    names = [name for name, _ in found.attributes]
    assert not [n for n in names if n.startswith("on")]
    values = [v or "" for _, v in found.attributes]
    assert not [v for v in values if "javascript" in v.lower() or "vbscript" in v.lower()]
    assert "data:text/html" not in clean and "data:image/png;base64,AAAA" not in clean
    assert "http-equiv" not in clean and "comment" not in clean
    assert "alert" not in clean and "frame text" not in clean


def test_sanitize_html_keeps_formatting_links_and_cid_images() -> None:
    clean = sanitize_html(DIRTY)
    assert '<p class="lead">Hello &amp; <b>world</b></p>' in clean
    assert '<a href="https://example.com/?a=1&amp;b=2" title="ok">good</a>' in clean
    assert '<a href="mailto:x@example.com">m</a>' in clean
    assert '<img src="cid:logo@example.com" alt="Logo">' in clean
    assert '<img src="data:image/png;base64,iVBORw0KGgo=">' in clean
    assert '<div style="color: red">fine</div>' in clean
    assert "<p>fallback</p>" not in clean  # object content goes with the object
    assert "Go" in clean  # a button's label is only text


@pytest.mark.parametrize(
    "html",
    [
        "<script>never closed <p>x",
        "<<p>>",
        "<scr<script>ipt>alert(1)</script>",
        "<a href='x' onmouseover=y",
        "<img src=x onerror=alert(1)//>",
        "</div></div><p",
        "<![CDATA[x]]><!doctype html><?php echo 1 ?>",
        "\x00<p>\x00</p>",
        "",
    ],
)
def test_sanitize_html_is_robust_to_malformed_html(html: str) -> None:
    clean = sanitize_html(html)
    found = elements(clean)
    assert "script" not in found.tags
    assert not [n for n, _ in found.attributes if n.startswith("on")]
    html_to_text(html)  # must not raise either


def test_html_to_text_blocks_lists_entities_and_whitespace() -> None:
    html = (
        "<html><head><title>T</title><style>x{}</style></head><body>"
        "<h1>Title</h1><p>First   line<br>second&nbsp;line &amp; more</p>"
        "<ul><li>one</li><li>two <a href='https://example.com'>link text</a>"
        "<ul><li>nested</li></ul></li></ul>"
        "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>"
        "<pre>  keep\n    spacing</pre><div>last</div><script>var x</script></body></html>"
    )
    assert html_to_text(html) == (
        "Title\n\nFirst line\nsecond line & more\n\n- one\n- two link text\n  - nested\n\n"
        "a b\nc d\n\n  keep\n    spacing\n\nlast"
    )


def test_html_to_text_of_plain_fragment() -> None:
    assert html_to_text("just &lt;text&gt;") == "just <text>"
    assert html_to_text("") == ""


# --- the README demo mails -----------------------------------------------------------------


def test_example_mails_parse_cleanly() -> None:
    files = sorted(EXAMPLES.glob("*.eml"))
    assert len(files) >= 4
    parsed = {f.name: parse_message(f.read_bytes()) for f in files}
    for name, msg in parsed.items():
        assert msg.defects == (), name
        assert msg.from_ is not None and msg.from_.valid, name
        assert msg.message_id and msg.date is not None and msg.text_body.strip(), name
    first, reply = parsed["01-richiesta-assistenza.eml"], parsed["02-risposta-cliente.eml"]
    assert reply.in_reply_to == (first.message_id,)
    assert first.message_id in reply.references
    pdf = parsed["03-invoice-attachment.eml"].attachments
    assert [a.content_type for a in pdf] == ["application/pdf"]
    assert pdf[0].data.startswith(b"%PDF-") and pdf[0].data.rstrip().endswith(b"%%EOF")
    html = parsed["04-html-inline-image.eml"]
    assert html.html_body is not None and len(html.inline_images) == 1
    assert f"cid:{html.inline_images[0].content_id}" in html.html_body
