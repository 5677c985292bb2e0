"""The offset-based MIME tree (connector.mail.mimetree) against the stdlib's reading.

Each case states what the stdlib's feed parser makes of the same bytes, so the parse stage sees
the tree it saw before; where we differ on purpose (message/* bodies kept byte for byte) the
test says so. The memory test is the reason the module exists: a large attachment must not be
copied line by line.
"""

from __future__ import annotations

import base64
import os
import tracemalloc
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path

import pytest

from connector.mail import parse_message
from connector.mail.mimetree import MimePart, build_tree

REALWORLD = Path(__file__).parent / "data" / "realworld"


def _bodies(part: MimePart) -> list[tuple[str, bytes]]:
    if part.is_multipart():
        return [leaf for child in part.get_payload() for leaf in _bodies(child)]
    return [(part.get_content_type(), part.body())]


def _defects(part: MimePart) -> list[str]:
    return [type(d).__name__ for d in part.defects]


def test_parts_are_offsets_and_the_line_break_before_a_delimiter_belongs_to_it() -> None:
    raw = (b'Content-Type: multipart/mixed; boundary="b"\r\n\r\npreamble\r\n--b\r\n'
           b"Content-Type: text/plain\r\n\r\none\r\n\r\n--b \t\r\n\r\ntwo\r\n--b--\r\nepilogue\r\n")
    tree = build_tree(raw)
    assert _bodies(tree) == [("text/plain", b"one\r\n"), ("text/plain", b"two")]
    first = tree.get_payload()[0]
    assert raw[first.body_start:first.body_end] == b"one\r\n"
    assert first.raw is raw  # no copy of the message per part
    assert _defects(tree) == []


def test_a_longer_line_starting_with_the_boundary_is_data() -> None:
    raw = (b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n\n--bx is not a delimiter\n'
           b"--b-- neither is this\n--b--\n")
    assert _bodies(build_tree(raw)) == [
        ("text/plain", b"--bx is not a delimiter\n--b-- neither is this")]


def test_delimiters_in_a_row_make_no_empty_part_as_in_the_stdlib() -> None:
    raw = b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n--b\n\nonly\n--b--\n'
    assert _bodies(build_tree(raw)) == [("text/plain", b"only")]
    stdlib = BytesParser(policy=compat32).parsebytes(raw)
    assert [p.get_payload() for p in stdlib.get_payload()] == ["only"]


def test_unterminated_multipart_ends_with_the_data_less_its_last_line_break() -> None:
    raw = (b"Content-Type: multipart/alternative; boundary=a\n\n--a\n"
           b"Content-Type: text/html\n\n<p>x</p>\n")
    tree = build_tree(raw)
    assert _bodies(tree) == [("text/html", b"<p>x</p>")]
    assert _defects(tree) == ["CloseBoundaryNotFoundDefect"]
    stdlib = BytesParser(policy=compat32).parsebytes(raw)
    assert stdlib.get_payload()[0].get_payload() == "<p>x</p>"


def test_inner_multipart_never_reads_past_its_parents_part() -> None:
    raw = (b'Content-Type: multipart/mixed; boundary="outer"\n\n--outer\n'
           b'Content-Type: multipart/alternative; boundary="inner"\n\n--inner\n\nhello\n'
           b"--outer\nContent-Type: text/x-second\n\nsecond\n--outer--\n")
    tree = build_tree(raw)
    assert _bodies(tree) == [("text/plain", b"hello"), ("text/x-second", b"second")]
    inner = tree.get_payload()[0]
    assert _defects(inner) == ["CloseBoundaryNotFoundDefect"]


def test_boundary_defects_match_the_stdlibs() -> None:
    no_start = b'Content-Type: multipart/mixed; boundary="b"\n\njust text\n--b--\n'
    tree = build_tree(no_start)
    assert _defects(tree) == ["StartBoundaryNotFoundDefect"]
    assert not tree.is_multipart() and tree.body() == b"just text"  # the preamble, as stdlib
    assert BytesParser(policy=compat32).parsebytes(no_start).get_payload() == "just text\n"

    no_boundary = b"Content-Type: multipart/mixed\n\ntext\n"
    assert _defects(build_tree(no_boundary)) == ["NoBoundaryInMultipartDefect"]

    encoded = (b'Content-Type: multipart/mixed; boundary="b"\nContent-Transfer-Encoding: base64'
               b"\n\n--b\n\nx\n--b--\n")
    assert _defects(build_tree(encoded)) == ["InvalidMultipartContentTransferEncodingDefect"]


def test_a_line_that_is_no_header_ends_the_header_block_with_a_defect() -> None:
    raw = b"Subject: hi\nthis is body already\nmore\n"
    tree = build_tree(raw)
    assert tree["subject"] == "hi"
    assert tree.body() == b"this is body already\nmore\n"
    assert _defects(tree) == ["MissingHeaderBodySeparatorDefect"]
    stdlib = BytesParser(policy=compat32).parsebytes(raw)
    assert stdlib.get_payload() == "this is body already\nmore\n"


def test_digest_parts_default_to_message_rfc822() -> None:
    raw = (b'Content-Type: multipart/digest; boundary="d"\n\n--d\n\nSubject: one\n\nbody\n'
           b"--d--\n")
    part = build_tree(raw).get_payload()[0]
    assert part.get_content_type() == "message/rfc822"
    assert part.body() == b"Subject: one\n\nbody"


def test_part_budget_stops_a_hostile_tree() -> None:
    depth = 200
    head = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i)
                    for i in range(depth))
    tree = build_tree(head + b"\ninnermost\n")
    levels = 0
    node = tree
    while node.is_multipart():
        node = node.get_payload()[0]
        levels += 1
    assert levels == 64  # MAX_DEPTH: deeper parts stay one opaque body
    parse_message(b"From: a@example.com\n" + head + b"\ninnermost\n")  # and the parse survives


def test_forwarded_message_is_kept_byte_for_byte() -> None:
    inner = (b"From: in@example.com\r\nSubject: signed\r\nContent-Type: multipart/mixed; "
             b'boundary="i"\r\n\r\n--i\r\n\r\ntext  \r\n--i--\r\n')
    raw = (b'From: out@example.com\r\nContent-Type: multipart/mixed; boundary="o"\r\n\r\n--o\r\n'
           b"Content-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--o--\r\n")
    msg = parse_message(raw)
    assert msg.attachments[0].data == inner  # not re-serialized: a signature would still verify
    assert msg.nested_messages[0].subject == "signed"
    assert msg.nested_messages[0].text_body == "text  "


def test_large_attachment_is_decoded_without_copies_of_the_message() -> None:
    payload = os.urandom(6 * 1024 * 1024)
    encoded = base64.encodebytes(payload)
    raw = (b'From: a@example.com\nSubject: big\nContent-Type: multipart/mixed; boundary="b"\n\n'
           b"--b\n\nsee attached\n--b\nContent-Type: application/pdf; name=big.pdf\n"
           b"Content-Transfer-Encoding: base64\n\n" + encoded + b"--b--\n")
    tracemalloc.start()
    try:
        msg = parse_message(raw)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert msg.attachments[0].data == payload
    # What must exist: the decoded file (6 MB). The stdlib feed parser allocated ~8x the
    # message here (a str of it, its lines, a joined copy): allow one decoded size plus slack.
    assert peak < len(payload) + 2 * 1024 * 1024, peak


@pytest.mark.parametrize("path", sorted(p for p in REALWORLD.rglob("*.eml") if p.is_file()),
                         ids=lambda p: p.name)
def test_leaf_bodies_agree_with_the_stdlib_on_real_mail(path: Path) -> None:
    """Real-world .eml files: every leaf outside message/* parts has the stdlib's bytes."""
    raw = path.read_bytes()
    ours = build_tree(raw)
    theirs = BytesParser(policy=compat32).parsebytes(raw)

    def stdlib_leaves(part):  # type: ignore[no-untyped-def]
        if part.get_content_maintype() == "message":
            return [(part.get_content_type(), None)]
        payload = part._payload  # get_payload() would re-decode 8-bit text with replacements
        if isinstance(payload, list):
            return [leaf for child in payload for leaf in stdlib_leaves(child)]
        text = payload if isinstance(payload, str) else ""
        return [(part.get_content_type(), text.encode("utf-8", "surrogateescape"))]

    def our_leaves(part: MimePart):  # type: ignore[no-untyped-def]
        if part.get_content_maintype() == "message":
            return [(part.get_content_type(), None)]
        if part.is_multipart():
            return [leaf for child in part.get_payload() for leaf in our_leaves(child)]
        return [(part.get_content_type(), part.body())]

    assert our_leaves(ours) == stdlib_leaves(theirs)
