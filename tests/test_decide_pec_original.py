"""plan_pec reads the certified original from the envelope's own parse, not a second one."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest
from shared_material import pec_sample

from connector.decide.pec import nested_original, plan_pec
from connector.mail import ParsedMessage, parse_message
from connector.pec import find_pec


def _no_second_parse(raw: bytes) -> ParsedMessage:
    raise AssertionError("the certified original was parsed a second time")


@pytest.mark.parametrize("name", ["aruba-posta-certificata-2014-01.eml",
                                  "sogei-sdi-posta-certificata-invio-file-2018.eml"])
def test_the_original_is_the_envelopes_nested_message(name: str) -> None:
    raw = pec_sample(name).read_bytes()
    message = parse_message(raw)
    pec = find_pec(raw)
    assert pec.original_raw
    plan = plan_pec(message, pec, account_is_pec=True, parse=_no_second_parse)
    assert plan is not None
    nested = nested_original(message, pec.original_raw)
    assert nested is not None and nested.raw == pec.original_raw
    # The plan shows the nested parse (sender and subject from daticert, as before).
    assert plan.content.text_body == nested.text_body
    assert [a.data for a in plan.content.attachments] == [a.data for a in nested.attachments]
    # And it equals what a parse of its own would have given.
    alone = parse_message(pec.original_raw)
    assert plan.content.text_body == alone.text_body
    assert [a.sha256 for a in plan.content.attachments] == [a.sha256 for a in alone.attachments]


def test_an_original_that_is_no_nested_message_is_parsed() -> None:
    raw = pec_sample("aruba-posta-certificata-2014-01.eml").read_bytes()
    message = replace(parse_message(raw), nested_messages=())
    pec = find_pec(raw)
    parsed: list[bytes] = []

    def parse(original: bytes) -> ParsedMessage:
        parsed.append(original)
        return parse_message(original)

    assert plan_pec(message, pec, account_is_pec=True, parse=parse) is not None
    assert parsed == [pec.original_raw]


def test_a_forwarded_envelope_is_found_one_level_deeper() -> None:
    envelope = pec_sample("aruba-posta-certificata-2014-01.eml").read_bytes()
    forward = (b'From: staff@example.com\r\nSubject: Fwd\r\nContent-Type: multipart/mixed; '
               b'boundary="f"\r\n\r\n--f\r\nContent-Type: text/plain\r\n\r\nsee below\r\n--f\r\n'
               b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
               + base64.encodebytes(envelope).replace(b"\n", b"\r\n") + b"--f--\r\n")
    message = parse_message(forward)
    pec = find_pec(forward)
    assert pec.depth == 1 and pec.original_raw
    found = nested_original(message, pec.original_raw)
    assert found is not None and found.raw == pec.original_raw
