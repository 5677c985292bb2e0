"""What reaches agents (issue 12, rows "remote images, srcset, CSS background" and "file names
with RTLO/bidi controls, HTML, 300+ characters"; subjects with CR/LF/NUL): through a real
Dovecot mailbox into the Zendesk fake, as ``run`` does."""

from __future__ import annotations

import base64
import re
from email.message import EmailMessage
from pathlib import Path

import pytest
from dovecot import DovecotServer, MailUser
from zendesk_responses import (
    CUSTOMER,
    PDF,
    SUPPORT_ADDRESS,
    Bridge,
    FakeZendesk,
    account,
    write_config,
)

from connector.mail.filenames import safe_filename
from connector.mail.html import sanitize_html
from connector.mail.subject import one_line

TRACKING_HTML = (
    '<p>Buongiorno</p>'
    '<img src="https://tracker.example.net/open.gif?u=42" alt="logo" width="1" height="1">'
    '<img src="cid:firma@example.org" alt="firma">'
    '<img src="data:image/png;base64,iVBORw0KGgo=">'
    '<picture><source srcset="https://tracker.example.net/a.webp 1x"></picture>'
    '<img src="cid:x@example.org" srcset="https://tracker.example.net/b.png 2x">'
    '<table background="https://tracker.example.net/bg.png"><tr>'
    '<td style="color: #333; background: url(https://tracker.example.net/c.png)">cella</td>'
    '<td style="background-image: u\\72 l(&quot;https://tracker.example.net/d.png&quot;)">e</td>'
    '</tr></table>'
    '<div style="background-image: image-set(\'https://tracker.example.net/e.png\' 1x)">f</div>'
    '<video poster="https://tracker.example.net/v.png"></video>'
    '<a href="https://www.example.org/listino" ping="https://tracker.example.net/ping">listino'
    '</a>'
)


def html_mail(html: str, *, subject: str = "Richiesta", message_id: str = "h@example.org",
              files: tuple[tuple[str, bytes], ...] = ()) -> bytes:
    msg = EmailMessage()
    msg["From"] = CUSTOMER
    msg["To"] = SUPPORT_ADDRESS
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{message_id}>"
    msg.set_content("Buongiorno (testo)")
    msg.add_alternative(html, subtype="html")
    for name, data in files:
        msg.add_attachment(data, maintype="application", subtype="pdf", filename=name)
    return msg.as_bytes()


def ingest(dovecot: DovecotServer, user: MailUser, tmp_path: Path, raw: bytes,
           **account_extra: object) -> None:
    dovecot.append(user, raw)
    bridge = Bridge(write_config(tmp_path, [account(dovecot, user, "support",
                                                    **account_extra)]))
    try:
        assert bridge.poll().counts["ticketed"] == 1
    finally:
        bridge.close()


def created_html(zendesk: FakeZendesk) -> str:
    return zendesk.calls_to("POST", r"^/api/v2/tickets$")[0].json["ticket"]["comment"][
        "html_body"]


def test_remote_content_never_reaches_an_agents_browser(
        dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path,
        zendesk: FakeZendesk) -> None:
    ingest(dovecot, mailbox_user, tmp_path, html_mail(TRACKING_HTML))
    html = created_html(zendesk)
    loading = re.findall(r"""(?:src|srcset|background|poster|ping)\s*=\s*["']?[^"'>]*tracker""",
                         html) + re.findall(r"url\(|image-set\(", html)
    assert loading == []
    # the pixel is a link the agent may follow on purpose
    assert ('<a href="https://tracker.example.net/open.gif?u=42" rel="noopener noreferrer '
            'nofollow" target="_blank">[image: logo]</a>') in html
    assert 'style="color: #333"' in html  # the rest of the style stays
    assert '<a href="https://www.example.org/listino">listino</a>' in html
    assert 'src="data:image/png;base64,iVBORw0KGgo="' in html


def test_an_account_may_allow_remote_content(
        dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path,
        zendesk: FakeZendesk) -> None:
    ingest(dovecot, mailbox_user, tmp_path, html_mail(TRACKING_HTML),
           allow_remote_content=True)
    assert '<img src="https://tracker.example.net/open.gif?u=42"' in created_html(zendesk)


HOSTILE_NAMES = {
    "fattura\u202eFDP.exe": "fatturaFDP.exe",  # RTLO shows it as "fatturaexe.PDF"
    "..\\..\\windows\\system32\\a\u2066b\u2069.pdf": "ab.pdf",
    '<img src=x onerror=alert(1)>.pdf': "_img src=x onerror=alert(1)_.pdf",
    "\x00nul\x07bell\u200b.pdf": "nulbell.pdf",
}


def test_hostile_file_names_reach_the_helpdesk_neutralised(
        dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path,
        zendesk: FakeZendesk) -> None:
    long_name = "relazione " + "molto " * 60 + "lunga.pdf"  # 379 characters
    files = tuple((name, PDF) for name in [*HOSTILE_NAMES, long_name])
    ingest(dovecot, mailbox_user, tmp_path, html_mail("<p>allegati</p>", files=files))
    uploaded = [c.query["filename"] for c in zendesk.calls_to("POST", r"^/api/v2/uploads")]
    assert uploaded[:4] == list(HOSTILE_NAMES.values())
    assert uploaded[4].startswith("relazione molto") and uploaded[4].endswith(".pdf")
    assert len(uploaded[4].encode()) == 255
    for name in uploaded:
        assert not re.search(r"[\x00-\x1f\u202a-\u202e\u2066-\u2069<>\"'&/\\]", name)


def test_a_subject_with_cr_lf_nul_is_one_line_for_the_helpdesk(
        dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path,
        zendesk: FakeZendesk) -> None:
    hidden = base64.b64encode(b"Ordine 42\r\nBcc: x@evil.example\x00 urgente").decode()
    raw = html_mail("<p>x</p>").replace(b"Subject: Richiesta",
                                        f"Subject: =?utf-8?b?{hidden}?=".encode())
    ingest(dovecot, mailbox_user, tmp_path, raw)
    subject = zendesk.ticket_list()[0]["subject"]
    assert subject == "Ordine 42 Bcc: x@evil.example urgente"


# -- the helpers on their own ------------------------------------------------------------------


@pytest.mark.parametrize("name, expected", [
    ("a" * 300 + ".docx", "a" * 250 + ".docx"),
    ("è" * 200 + ".pdf", "è" * 125 + ".pdf"),  # 2 bytes each: 250 + 4 bytes
    ("...", ""),
    ("  report .pdf  ", "report .pdf"),
    ("C:\\Users\\mario\\Desktop\\preventivo.xlsx", "preventivo.xlsx"),
])
def test_safe_filename(name: str, expected: str) -> None:
    assert safe_filename(name) == expected
    assert len(safe_filename(name).encode()) <= 255


def test_one_line() -> None:
    assert one_line("a\r\nb\n\tc\x00d\x1b") == "a b cd"


@pytest.mark.parametrize("style", [
    "background:url(http://t/x)",
    "background:URL( 'http://t/x' )",
    "background:u/**/rl(http://t/x)",
    "background:\\75 \\72 \\6c (http://t/x)",
    "list-style-image:url(http://t/x)",
    "content:url(http://t/x)",
    "border-image:url(http://t/x) 30",
    "background:image-set('http://t/x' 1x)",
])
def test_no_css_declaration_that_loads_survives(style: str) -> None:
    clean = sanitize_html(f'<div style="{style}; color: red">x</div>')
    assert clean == '<div style="color: red">x</div>'
