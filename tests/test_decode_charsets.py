"""Issue 11 section 5: raw 8-bit headers, ISO-2022-JP vendor characters, lying labels, junk."""

from __future__ import annotations

import base64

import pytest

from connector.mail import parse_message
from connector.mail.decode import header_charset, iso2022jp_vendor

SUBJECTS = [
    ("gb2312", "系统退信 邮件发送失败"),
    ("gbk", "关于下周会议安排的通知"),
    ("big5", "郵件傳送失敗通知"),
    ("shift_jis", "メール送信失敗のお知らせ"),
    ("euc-kr", "메일 전송 실패 안내"),
    ("koi8-r", "Ошибка доставки почты"),
    ("cp1251", "Заявка на ремонт принтера"),
]


@pytest.mark.parametrize(("charset", "subject"), SUBJECTS)
def test_undeclared_raw_8bit_headers_come_out_as_text(charset: str, subject: str) -> None:
    raw = f"From: a@b.example\nSubject: {subject}\n\nbody\n".encode(charset)
    assert parse_message(raw).subject == subject


@pytest.mark.parametrize(("charset", "subject"), SUBJECTS)
def test_the_body_charset_is_tried_first(charset: str, subject: str) -> None:
    raw = (f"From: Zhang <a@b.example>\nSubject: {subject}\n"
           f"Content-Type: text/plain; charset={charset}\n\n{subject}\n").encode(charset)
    msg = parse_message(raw)
    assert msg.subject == subject
    assert msg.text_body.strip() == subject


def test_an_encoded_words_charset_counts_as_declared() -> None:
    # Two characters of EUC-KR alone could be GB2312 too; the message says which it uses.
    name = base64.b64encode("홍길동".encode("euc-kr")).decode()
    raw = (f"From: =?euc-kr?B?{name}?= <a@b.example>\nSubject: ".encode()
           + "안녕".encode("euc-kr") + b"\n\nbody\n")
    assert parse_message(raw).subject == "안녕"


def test_latin_text_stays_latin() -> None:
    for charset, subject in (("latin-1", "Frösche"), ("cp1252", "Überweisung für Müller €")):
        raw = f"From: a@b.example\nSubject: {subject}\n\nbody\n".encode(charset)
        assert parse_message(raw).subject == subject
        assert header_charset([subject.encode(charset)], []) is None  # Windows-1252 applies


NEC_JIS = b"\x1b$B-!%F%9%H-j\x1b(B"  # ①テスト㈱ in ISO-2022-JP with NEC row 13


def test_iso_2022_jp_with_nec_characters() -> None:
    assert iso2022jp_vendor(NEC_JIS) == "①テスト㈱"
    word = "=?ISO-2022-JP?B?" + base64.b64encode(NEC_JIS).decode() + "?="
    raw = (f"From: a@b.example\nSubject: {word}\nContent-Type: text/plain; "
           "charset=ISO-2022-JP\n\n").encode() + NEC_JIS + b"\n"
    msg = parse_message(raw)
    assert msg.subject == "①テスト㈱"
    assert msg.text_body.strip() == "①テスト㈱"
    assert "\x1b" not in msg.subject + msg.text_body


def test_utf8_labelled_latin1_is_repaired() -> None:
    raw = ("From: a@b.example\nSubject: x\nContent-Type: text/plain; charset=iso-8859-1\n\n"
           "Grüße aus Köln\n").encode()
    msg = parse_message(raw)
    assert msg.text_body == "Grüße aus Köln\n"
    assert any("UTF-8 text labelled" in d for d in msg.defects)


def test_windows_1252_labelled_utf8_is_repaired() -> None:
    raw = ("From: a@b.example\nSubject: x\nContent-Type: text/plain; charset=utf-8\n\n"
           "Grüße aus Köln\n").encode("cp1252")
    assert parse_message(raw).text_body == "Grüße aus Köln\n"


def test_quoted_printable_without_its_label_is_decoded() -> None:
    raw = (b"From: a@b.example\nSubject: x\nContent-Type: text/plain; charset=utf-8\n\n"
           b"Gr=C3=BC=C3=9Fe aus K=C3=B6ln, a long line the sender's encoder wrap=\nped and=\n"
           b" went on.\n")
    text = parse_message(raw).text_body
    assert text == "Grüße aus Köln, a long line the sender's encoder wrapped and went on.\n"


def test_equals_signs_that_are_not_quoted_printable_stay() -> None:
    raw = b"From: a@b.example\nSubject: x\n\nhttps://x.example/?a=1&b=2 and c=3, d=4\n"
    assert parse_message(raw).text_body == "https://x.example/?a=1&b=2 and c=3, d=4\n"


@pytest.mark.parametrize(
    "prefix",
    [
        b"From MAILER-DAEMON Mon Feb  9 22:23:44 2009\n",
        b">From someone Mon Feb  9 22:23:44 2009\n",
        b"+OK 1234 octets\r\n",
        b"\xef\xbb\xbf",
    ],
)
def test_an_mbox_line_or_junk_before_the_headers(prefix: bytes) -> None:
    raw = prefix + b"From: Anna <anna@example.com>\nSubject: hello\n\nbody\n"
    msg = parse_message(raw)
    assert (msg.subject, msg.from_.email if msg.from_ else None) == ("hello", "anna@example.com")
    assert msg.raw == raw
