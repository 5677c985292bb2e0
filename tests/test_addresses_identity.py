"""Addresses that name someone without being deliverable from the internet are identities."""

from __future__ import annotations

import pytest

from connector.mail.addresses import is_identity, parse_address, parse_address_list
from connector.mail.parse import parse_message


@pytest.mark.parametrize(
    ("header", "email"),
    [
        ('"#FAX#123"@host.example', '"#FAX#123"@host.example'),
        ('"System Administrator" <"System Administrator"@example.com>',
         '"System Administrator"@example.com'),
        ("root@localhost", "root@localhost"),
        ("Charlie Root <root@localhost>", "root@localhost"),
        ("asdf@asdf", "asdf@asdf"),
        ("printer@office.local", "printer@office.local"),
        ("dev@build.test", "dev@build.test"),
        ("x@[192.0.2.1]", "x@[192.0.2.1]"),
        ("x@[IPv6:2001:db8::1]", "x@[IPv6:2001:db8::1]"),
        ("COMPANY | usługi <sender@sender_domain.tld>", "sender@sender_domain.tld"),
    ],
)
def test_undeliverable_but_real_addresses_are_identities(header: str, email: str) -> None:
    [address] = parse_address_list(header)
    assert address.email == email
    assert address.identity
    assert not address.valid  # email-validator's deliverability verdict is kept apart


def test_a_trailing_dot_is_normalized_away() -> None:
    address = parse_address("Anna <anna@example.com.>")
    assert address is not None
    assert (address.email, address.valid, address.identity) == ("anna@example.com", True, True)


def test_a_comment_becomes_the_name() -> None:
    address = parse_address("MAILER-DAEMON (Mail Delivery System)")
    assert address is not None
    assert (address.name, address.normalized) == ("Mail Delivery System", "mailer-daemon")
    assert not address.identity  # no domain: a daemon, never a requester
    full = parse_address("MAILER-DAEMON@mx.example.net (Mail Delivery System)")
    assert full is not None
    assert (full.name, full.email, full.identity) == (
        "Mail Delivery System", "MAILER-DAEMON@mx.example.net", True)


@pytest.mark.parametrize("text", ["a@@b..c", "x@", "@example.com", "postmaster at nowhere",
                                  "Undisclosed recipients"])
def test_what_names_no_one_is_not_an_identity(text: str) -> None:
    assert not is_identity(text)
    address = parse_address(text)
    assert address is None or not address.identity


def test_a_localhost_sender_has_no_defect_beyond_deliverability() -> None:
    msg = parse_message(b"From: Charlie Root <root@localhost>\nSubject: cron\n\nhello\n")
    assert msg.from_ is not None and msg.from_.identity
    assert "invalid From address" not in msg.defects
    assert "From address is not deliverable from the internet" in msg.defects
