"""Hostile nesting in headers and MIME: parsed flat or bounded, never a RecursionError."""

from __future__ import annotations

import pytest

from connector.filters.classifiers.dsn import analyse
from connector.mail import parse_message
from connector.mail.addresses import getaddresses_safe, parse_address_list, parseaddr_safe


def _encoded_words(count: int) -> str:
    return ", ".join(f"=?utf-8?q?N=C3=A4me{i}?= <u{i}@example.com>" for i in range(count))


HOSTILE = {
    "comments nested 5000 deep": "a@b.example " + "(" * 5000 + ")" * 5000,
    "unclosed comments": "a@b.example " + "(" * 5000,
    "groups nested 3000 deep": "g:" * 3000 + "a@b.example" + ";" * 3000,
    "quoted names with escapes": '"a\\"b" ' * 5000 + "<a@b.example>",
}


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_address_headers_are_read_flat(value: str) -> None:
    raw = f"From: {value}\nTo: {value}\nCc: {value}\nSubject: x\n\nbody\n".encode()
    msg = parse_message(raw)
    assert msg.from_ is not None
    assert msg.from_.email == "a@b.example"
    getaddresses_safe([value])
    parseaddr_safe(value)


def test_thousands_of_encoded_words_in_an_address_list() -> None:
    raw = f"From: a@b.example\nTo: {_encoded_words(5000)}\nSubject: x\n\nbody\n".encode()
    msg = parse_message(raw)
    assert len(msg.to) == 5000
    assert msg.to[4999].name == "Näme4999"


def test_a_bounce_with_hostile_headers_is_still_read() -> None:
    raw = (
        "From: MAILER-DAEMON@mx.example (" + "(" * 5000 + "\nX-Failed-Recipients: "
        + "g:" * 3000 + "gone@example.org\nSubject: Undeliverable: hello\n\n"
        "Delivery has failed to these recipients: gone@example.org\n"
    ).encode()
    msg = parse_message(raw)
    report = analyse(raw, subject=msg.subject, text_body=msg.text_body)
    assert report is not None and report.action == "failed"


def test_deep_mime_and_message_nesting() -> None:
    head = b"From: a@b.example\nSubject: deep\nMIME-Version: 1.0\n"
    opens = b"".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n'.encode() for i in range(3000)
    )
    closes = b"".join(f"--b{i}--\n".encode() for i in reversed(range(3000)))
    parse_message(head + opens + b"Content-Type: text/plain\n\nhi\n" + closes)
    wrapped = b"From: a@b.example\nSubject: x\nContent-Type: message/rfc822\n\n" * 3000
    parse_message(wrapped + b"From: z@b.example\n\nend\n")


def test_parse_address_list_survives_every_hostile_value() -> None:
    for value in HOSTILE.values():
        assert parse_address_list(value) is not None
