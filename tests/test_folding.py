"""Lowercase word lists searched in ``fold(text)`` match what the same list matched with
``re.IGNORECASE`` (connector/filters/classifiers/folding.py), including the letters the flag
treats specially."""

from __future__ import annotations

import re
import sys

import pytest

from connector.filters.classifiers import dsn
from connector.filters.classifiers.folding import fold, fold_ascii, folded_pattern
from connector.hosts.zendesk import serialize_body

SUBJECTS = [
    "Undeliverable: Richiesta", "UNDELIVERED MAIL RETURNED TO SENDER", "Mail delivery failed",
    "DELİVERY STATUS NOTIFICATION (Failure)", "Delıvery report", "Returned mail: ſee transcript",
    "Échec de la remise", "ÉCHEC DE DISTRIBUTION", "Nie można dostarczyć", "NIE MOŻNA DOSTARCZYĆ",
    "Unzustellbar: Angebot", "MANCATA CONSEGNA", "配信不能", "전송 실패", "Ordine 42 in ritardo",
    "Re: delivery of order 60138", "Warning: message delayed", "Ihre Nachricht", "",
]


@pytest.mark.parametrize("subject", SUBJECTS)
def test_the_bounce_subject_words_match_as_with_the_flag(subject: str) -> None:
    flagged = re.compile(dsn._FAIL_SUBJECT.pattern, re.IGNORECASE)
    assert dsn._fail_subject(subject) == bool(flagged.search(subject))


def test_fold_fixes_the_letters_lower_leaves_apart() -> None:
    assert fold("DELİVERY ſTATUS ılETİ") == "delivery status ileti"


def test_a_folded_pattern_refuses_what_lowering_would_change() -> None:
    with pytest.raises(ValueError):
        folded_pattern(r"Mail\S+")
    with pytest.raises(ValueError):
        folded_pattern("Undeliverable")


def test_a_request_body_replaces_only_lone_surrogates() -> None:
    assert serialize_body({"a": "é\ud800"}) == '{"a":"é\ufffd"}'.encode()
    assert serialize_body({"b": "naïve", "a": 1}) == '{"a":1,"b":"naïve"}'.encode()


def test_only_two_letters_beyond_ascii_lowercase_into_ascii() -> None:
    into_ascii = [chr(c) for c in range(128, sys.maxunicode + 1)
                  if any(ord(x) < 128 for x in chr(c).lower())]
    assert into_ascii == ["\u0130", "\u212a"]  # what fold_ascii replaces before encoding


@pytest.mark.parametrize("text", [
    "İLETİ", "ılETİ", "MESSAGE", "Me\u017f\u017fage", "Wei\u0307tergeleitet VON", "\u212aopie",
    "Ursprüngliche NACHRICHT", "-----Original Message-----", "naïve\ud800 text", "", "ΣΑΣ",
])
def test_fold_ascii_holds_the_ascii_words_fold_holds(text: str) -> None:
    words = ["ileti", "message", "messag", "weitergeleitet von", "kopie", "nachricht",
             "original message", "naïve", "text"]
    for word in words:
        if word.isascii():
            assert (word in fold(text)) == (word.encode() in fold_ascii(text)), (word, text)
