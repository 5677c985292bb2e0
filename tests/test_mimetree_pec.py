"""What the PEC analysis needs from the MIME tree: whole parts as they travelled (S/MIME signs
the first part of multipart/signed headers and all), header blocks alone, raw header values;
and its own layer over the tree (paths, strict decoding, embedded messages, signed content)."""

from __future__ import annotations

import binascii
import hashlib
import random

import pytest

from connector.mail.decode import decode_base64_lenient, decode_transfer_or_raise
from connector.mail.mimetree import MimePart, build_headers, build_tree
from connector.pec import parts as pec_parts
from connector.pec import signed_content
from connector.pec.parts import PecPart, header_text, parse_headers, parse_part
from connector.pec.signed_content import SignedContent, canonical_crlf

SIGNED = (b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
          b'boundary="s"\r\n\r\npreamble\r\n'
          b"--s\r\n"
          b'Content-Type: multipart/mixed; boundary="m" \r\n\r\n'
          b"--m\r\nContent-Type: text/plain\r\n\r\nbody  \r\n--m--\r\n"
          b"--s\r\n"
          b"Content-Type: application/pkcs7-signature\r\n\r\nMIIB\r\n"
          b"--s--\r\n")
FIRST_PART = (b'Content-Type: multipart/mixed; boundary="m" \r\n\r\n'
              b"--m\r\nContent-Type: text/plain\r\n\r\nbody  \r\n--m--")


# -- the tree's new accessors ---------------------------------------------------------------------
def test_whole_is_a_part_exactly_as_it_travelled_headers_included() -> None:
    tree = build_tree(SIGNED)
    first, signature = tree.get_payload()
    assert first.whole() == FIRST_PART  # the CRLF before the next delimiter is not the part's
    assert SIGNED[first.start:first.end] == FIRST_PART
    assert first.start < first.body_start <= first.body_end == first.end
    view = first.whole_view()
    assert isinstance(view, memoryview) and view.obj is SIGNED  # no copy of the message
    assert bytes(view) == FIRST_PART
    assert signature.whole() == b"Content-Type: application/pkcs7-signature\r\n\r\nMIIB"
    assert tree.whole() == SIGNED and (tree.start, tree.end) == (0, len(SIGNED))
    inner_text = first.get_payload()[0]
    assert inner_text.whole() == b"Content-Type: text/plain\r\n\r\nbody  "


def test_whole_of_a_range_and_of_a_part_whose_body_was_cut_to_its_preamble() -> None:
    prefix = b"junk before\n"
    raw = prefix + b"Subject: x\n\nhello\n"
    tree = build_tree(raw, len(prefix))
    assert tree.whole() == b"Subject: x\n\nhello\n" and tree.start == len(prefix)
    # Only a close delimiter: the body is the preamble, the part is still all of its range.
    only_close = b'Content-Type: multipart/mixed; boundary="b"\n\npreamble\n--b--\nafter\n'
    part = build_tree(only_close)
    assert part.body() == b"preamble"
    assert part.whole() == only_close


def test_build_headers_reads_the_header_block_only() -> None:
    part = build_headers(SIGNED)
    assert isinstance(part, MimePart)
    assert part.get_content_type() == "multipart/signed"
    assert not part.is_multipart()  # no children: the body was not searched
    assert part.body_start == SIGNED.index(b"preamble") and part.body_end == len(SIGNED)
    assert build_headers(b"no header at all\n").keys() == []


def test_8bit_header_values_are_read_as_text_never_as_surrogates() -> None:
    raw = "Subject: perché\nFrom: Andrè <a@x.it>\n\nx\n".encode()
    headers = parse_headers(raw)
    assert header_text(headers, "SUBJECT") == "perché"
    assert headers["from"] == "Andrè <a@x.it>"
    broken = parse_part(b"X-Ricevuta: accettaz\xfeone\nContent-Type: text/pl\x81in\n\nx\n")
    values = [v for _k, v in broken.headers.items()] + [broken.content_type]
    assert values[0] == "accettazþone"  # not UTF-8: Windows-1252, else Latin-1
    for value in values:
        value.encode("utf-8")  # no lone surrogate anywhere: safe to log and to send


# -- strict transfer decoding ----------------------------------------------------------------------
def test_strict_transfer_decoding() -> None:
    assert decode_base64_lenient(b"QUJD\r\nRA==") == b"ABCD"
    assert decode_base64_lenient(b"QU*JD RA") == b"ABCD"  # junk and missing padding
    with pytest.raises(binascii.Error):
        decode_base64_lenient(b"QUJDR")  # a character lost: nothing trustworthy
    view = memoryview(b"xx=41=\r\nB")[2:]
    assert decode_transfer_or_raise(view, "quoted-printable") == b"AB"
    plain = decode_transfer_or_raise(memoryview(b"as is"), "7bit")
    assert plain == b"as is" and isinstance(plain, bytes)
    with pytest.raises(ValueError):
        decode_transfer_or_raise(b"UmVjZWl2ZWQ6\r\nx", "base64")


# -- the PEC layer ---------------------------------------------------------------------------------
def test_paths_defects_and_blank_bodies() -> None:
    tree = parse_part(SIGNED)
    assert [(p.path, p.content_type) for p in tree.walk()] == [
        ("", "multipart/signed"), ("1", "multipart/mixed"), ("1.1", "text/plain"),
        ("2", "application/pkcs7-signature")]
    assert [p.depth for p in tree.walk()] == [0, 1, 2, 1]
    assert all(p.defects == () for p in tree.walk())
    assert not tree.children[1].body_is_blank
    empty = parse_part(b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n\n \r\n\t\n--b')
    assert empty.children[0].body_is_blank
    assert empty.defects == ("close boundary not found",)


def test_a_header_block_cut_before_its_blank_line_is_noted() -> None:
    assert parse_part(b"Subject: x\r\nX-Ricevuta: accet").defects == ("no body",)
    assert parse_part(b"Subject: x\r\n").defects == ("no body",)
    assert parse_part(b"Subject: x\r\n\r\n").defects == ()  # complete, the body is empty
    assert parse_part(b"Subject: x\n\n").defects == ()
    assert parse_part(b"\r\n").defects == () and parse_part(b"").defects == ()


def test_parts_kept_whole_by_the_tree_are_noted() -> None:
    depth = 70
    head = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i)
                    for i in range(depth))
    notes = [(p.depth, d) for p in parse_part(head + b"\nx\n").walk()
             for d in p.defects if d == "nesting or part limit reached"]
    assert notes == [(64, "nesting or part limit reached")]  # mimetree.MAX_DEPTH


def test_embedded_message_is_parsed_in_place_or_decoded() -> None:
    inner = b"Subject: inner\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
    outer = (b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n'
             b"--o\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--o--\r\n")
    part = parse_part(outer).children[0]
    embedded = part.embedded()
    assert embedded is not None and embedded.path == "1>" and embedded.depth == 2
    assert embedded.mime.raw is outer  # no copy: parsed where it lies
    assert embedded.mime.whole() == inner
    assert header_text(embedded.headers, "subject") == "inner"

    encoded = (b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n'
               b'--o\r\nContent-Type: application/octet-stream; name="fwd.eml"\r\n'
               b"Content-Transfer-Encoding: base64\r\n\r\n"
               + binascii.b2a_base64(inner) + b"--o--\r\n")
    attached = parse_part(encoded).children[0]
    assert attached.filename == "fwd.eml"
    decoded = attached.embedded()
    assert decoded is not None and decoded.mime.whole() == inner
    broken = parse_part(encoded.replace(b"U3Vi", b"U", 1)).children[0]
    assert broken.embedded() is None  # undecodable: nothing to search, no exception


def test_embedded_depth_limit() -> None:
    part = parse_part(b"Content-Type: message/rfc822\n\nSubject: x\n\ny\n",
                      depth=pec_parts.MAX_DEPTH)
    assert part.embedded() is None


# -- signed content ----------------------------------------------------------------------------
@pytest.mark.parametrize("data,canonical", [
    (b"a\r\nb\r\n", True), (b"", True), (b"a\r\nb", True), (b"a\rb\r\n", True),
    (b"a\nb", False), (b"\nb", False), (b"a\r\r\nb", False), (b"a\r\nb\r", False),
])
def test_content_already_canonical_is_read_in_place(data: bytes, canonical: bool) -> None:
    raw = b"xx" + data + b"yy"
    content = SignedContent(raw, 2, 2 + len(data), canonicalize=True)
    view = content.view()
    assert (view is not None) is canonical
    if view is not None:
        assert view.obj is raw and bytes(view) == data == canonical_crlf(data)
    assert b"".join(content.pieces()) == canonical_crlf(data)
    assert bytes(content.joined()) == canonical_crlf(data)
    assert content.digest("sha256") == hashlib.sha256(canonical_crlf(data)).digest()
    exact = SignedContent(data)  # verify_detached: taken as signed, never rewritten
    assert bytes(exact.joined()) == data


def test_blockwise_canonicalisation_equals_the_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signed_content, "BLOCK_SIZE", 7)
    rng = random.Random(5)
    for _ in range(200):
        data = bytes(rng.choice(b"ab\r\n") for _ in range(rng.randrange(0, 60)))
        content = SignedContent(data, canonicalize=True)
        pieces = list(content.pieces())
        assert b"".join(pieces) == canonical_crlf(data), data
    long_line = b"x" * 50 + b"\n" + b"y" * 3
    assert [bytes(p) for p in SignedContent(long_line, canonicalize=True).pieces()] == [
        b"x" * 50 + b"\r\n", b"yyy"]


def test_pec_part_is_a_view_of_the_tree() -> None:
    tree = parse_part(SIGNED)
    assert isinstance(tree, PecPart) and tree.headers is tree.mime
    first = tree.children[0]
    content = SignedContent(first.mime.raw, first.mime.start, first.mime.end, canonicalize=True)
    view = content.view()
    assert view is not None and bytes(view) == FIRST_PART
