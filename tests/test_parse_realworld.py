"""Real third-party messages (tests/data/realworld, tests/data/pec-samples) through the parser.

Each one must parse without crashing, keep its bytes, decode every header to clean text, and
account for every file it carries: an independent walk with the stdlib parser says which
parts are files, and the model must hold as many, of about the same total size.
"""

from __future__ import annotations

import random
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path

import pytest
from shared_material import pec_sample, pec_sample_names

from connector.errors import ParseError
from connector.mail import ParsedMessage, parse_message

REALWORLD = Path(__file__).parent / "data" / "realworld"
# Messages only: the README, the labels, other parsers' expected JSON and the sources'
# license texts (LICENSES/) are not mail.
CORPUS = sorted(
    p for p in REALWORLD.rglob("*")
    if p.is_file() and p.name not in ("README.md", "labels.tsv") and p.suffix != ".json"
    and p.relative_to(REALWORLD).parts[0] != "LICENSES"
)
# Files in the corpus that are not mail at all (a digest's body text, no header, an HTML page).
NOT_MAIL = {
    "cpython_email/msg_19.txt",
    "mime4j/testmsgs/malformedHeader-noheader.msg",
    "roundcube/BID-26800.txt",
}
# Where the stdlib is the wrong yardstick, what we do instead (checked below).
STDLIB_DIFFERS = {
    # "Content-transfer-encoding: base64 " (a trailing blank): the stdlib leaves the image
    # base64-encoded; we decode it.
    "mime4j/mimetools-testmsgs/twopart.msg": "decoded",
    # A boundary folded over two lines: the stdlib cannot split the multipart, we find the
    # notice text and the returned message.
    "mime4j/mimetools-testmsgs/badbound.msg": "split",
    # Base64 that is garbage ("...ZG==?="): both readings are guesses of different lengths.
    "ddeboer_imap/boolean_decoded_content.eml": "guess",
    "webklex_php_imap/boolean_decoded_content.eml": "guess",
    # Nesting past our bound: the inner parts are kept as one attachment, not walked.
    "horde_mime/deeply_nested.txt": "bounded",
    # One part with no header and no body: the stdlib calls it an 8-byte text, we see none.
    "mime4j/testmsgs/multipartemptypart.msg": "empty",
    # A base64 image followed by a paragraph of plain text in the same part: the stdlib
    # decodes the text as base64 too, we stop where the base64 ends.
    "spamassassin/nice/mime4": "base64_then_text",
    # "Subject :" (RFC 5322 obsolete syntax): the stdlib finds no header at all.
    "mime4j/testmsgs/obsolete.msg": "obsolete",
}


def _strings(msg: ParsedMessage) -> list[str]:
    """Every text the model exposes, nested messages included."""
    found = [msg.subject, msg.text_body, msg.html_body or "", msg.message_id or ""]
    found += [text for header in msg.headers for text in header]
    found += list(msg.delivered_to + msg.in_reply_to + msg.references + msg.defects)
    people = msg.to + msg.cc + msg.reply_to + tuple(a for a in (msg.from_, msg.sender) if a)
    found += [text for a in people for text in (a.name, a.email)]
    for f in msg.attachments + msg.inline_images:
        found += [f.filename, f.content_type, f.content_id or ""]
    for nested in msg.nested_messages:
        found += _strings(nested)
    return found


def _is_body_text(part: Message) -> bool:
    return (
        part.get_content_type() in ("text/plain", "text/html")
        and part.get_filename() is None
        and part.get_content_disposition() != "attachment"
    )


def _leaves(part: Message) -> list[Message]:
    """Leaf parts of one message, not descending into message/* (those are one file each)."""
    if part.get_content_type().startswith("message/"):
        return [part]
    payload = part.get_payload()
    if isinstance(payload, list):
        return [leaf for child in payload for leaf in _leaves(child)]
    return [part]


def _expected_files(msg: Message) -> tuple[int, int, int]:
    """(number of files, their decoded size, how many are messages) by the stdlib's reading."""
    count = size = messages = 0
    for leaf in _leaves(msg):
        ctype = leaf.get_content_type()
        if ctype.startswith("multipart/") or _is_body_text(leaf):
            continue  # broken multiparts are body text to the stdlib
        count += 1
        if ctype in ("message/rfc822", "message/global"):
            messages += 1
        elif not ctype.startswith("message/"):
            size += len(leaf.get_payload(decode=True) or b"")
    return count, size, messages


def _has_text(msg: Message) -> bool:
    return any(
        _is_body_text(leaf) and (leaf.get_payload(decode=True) or b"").strip()
        for leaf in _leaves(msg)
    )


def check_message(raw: bytes, msg: ParsedMessage, depth: int = 0) -> None:
    assert msg.raw == raw
    for text in _strings(msg):
        assert isinstance(text, str)
        text.encode("utf-8")  # no raw bytes left as lone surrogates
    assert all(name and ":" not in name for name, _ in msg.headers)

    start = len(raw) - len(raw.lstrip(b"\r\n"))
    skipped = next((d for d in msg.defects if "garbage before the headers" in d), None)
    body = raw[start:]
    if skipped:
        body = body.split(b"\n", int(skipped.split()[0]))[-1]
    stdlib = BytesParser(policy=compat32).parsebytes(body)
    assert len(msg.headers) == len(stdlib.keys())

    files = msg.attachments + msg.inline_images
    emls = [f for f in files if f.content_type == "message/rfc822"]
    others = [f for f in files if not f.content_type.startswith("message/")]
    count, size, messages = _expected_files(stdlib)
    if "multipart boundary repaired" in msg.defects:
        # We found parts the stdlib did not: at least as many files as it sees.
        assert len(files) >= count
    else:
        assert len(files) == count
        assert len(emls) == messages
        got = sum(f.size for f in others)
        assert abs(got - size) <= max(16, size // 50), (got, size)
    if _has_text(stdlib):
        assert msg.text_body.strip() or (msg.html_body or "").strip()

    assert len(msg.nested_messages) <= len(emls)
    for nested in msg.nested_messages:
        assert depth < 10
        check_message(nested.raw, nested, depth + 1)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: str(p.relative_to(REALWORLD)))
def test_realworld_message(path: Path) -> None:
    raw = path.read_bytes()
    if str(path.relative_to(REALWORLD)) in NOT_MAIL:
        with pytest.raises(ParseError):
            parse_message(raw)
        return
    rel = str(path.relative_to(REALWORLD))
    msg = parse_message(raw)
    if rel in STDLIB_DIFFERS:
        check_differing(rel, raw, msg)
        return
    check_message(raw, msg)


def check_differing(rel: str, raw: bytes, msg: ParsedMessage) -> None:
    """The messages the stdlib reads differently: the basics, and our own reading."""
    assert msg.raw == raw
    for text in _strings(msg):
        text.encode("utf-8")
    files = msg.attachments + msg.inline_images
    how = STDLIB_DIFFERS[rel]
    if how == "decoded":
        [image] = files
        assert image.data.startswith(b"\xff\xd8")  # a JPEG, not its base64 text
    elif how == "split":
        assert "undeliverable" in msg.text_body
        assert [f.content_type for f in files] == ["message/rfc822"]
    elif how == "bounded":
        assert "multipart nesting too deep: inner parts kept as attachments" in msg.defects
        assert len(files) == 1
    elif how == "guess":
        assert [f.filename for f in files] == ["Example Domain.pdf"]
    elif how == "empty":
        assert (files, msg.text_body) == ((), "")
    elif how == "base64_then_text":
        [image] = files
        assert image.content_type == "image/pgm" and image.data.startswith(b"P5\n256 244")
    elif how == "obsolete":
        assert msg.subject.startswith("The obsolete syntax allow spaces before the colon")
        assert "ObsoleteHeaderDefect" in msg.defects


def test_corpus_is_there() -> None:
    sources = {p.relative_to(REALWORLD).parts[0] for p in CORPUS}
    assert {"flufl_bounce", "cpython_email", "stalwart_mail_parser"} <= sources
    assert len(CORPUS) > 150


@pytest.mark.parametrize("name", pec_sample_names())
def test_pec_samples(name: str) -> None:
    raw = pec_sample(name).read_bytes()
    msg = parse_message(raw)
    check_message(raw, msg)
    assert msg.subject
    assert msg.from_ is not None


def test_bounce_corpus_keeps_the_returned_message() -> None:
    """DSNs carry the original: it must come out as a nested message or .eml file."""
    dsn = [p for p in CORPUS if p.parent.name == "flufl_bounce" and p.name.startswith("dsn_")]
    with_original = 0
    for path in dsn:
        msg = parse_message(path.read_bytes())
        if msg.nested_messages:
            with_original += 1
            assert any(f.content_type == "message/rfc822" for f in msg.attachments)
    assert with_original >= 8


@pytest.mark.parametrize("seed", range(6))
def test_mutated_realworld_messages_never_crash(seed: int) -> None:
    """Truncated, spliced and bit-flipped real mail: a model or ParseError, nothing else."""
    rng = random.Random(seed)
    sources = [p.read_bytes() for p in CORPUS if p.stat().st_size < 20_000]
    tokens = [
        b"=?",
        b"?=",
        b"=?utf-8?b?",
        b"=?x-unknown?q?",
        b"--",
        b"\r\n",
        b"\n\n",
        b'Content-Type: multipart/mixed; boundary="',
        b"message/rfc822",
        b"Content-Transfer-Encoding: base64\n",
        b"\xff\xfe\xc3",
        b"<",
        b'"',
        b";",
        b"filename*0*=utf-8''%",
        b"cid:",
        b"\x00",
        b"begin 644 x\n",
    ]
    for _ in range(80):
        data = bytearray(rng.choice(sources))
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(data) + 1)
            op = rng.random()
            if op < 0.35:
                data[pos:pos] = rng.choice(tokens)
            elif op < 0.55:
                del data[pos : pos + rng.randint(1, 60)]
            elif op < 0.75 and pos < len(data):
                data[pos] = rng.randrange(256)
            elif op < 0.85:
                del data[pos:]
            else:
                other = rng.randrange(len(data) + 1)
                data[pos:pos] = data[other : other + rng.randint(1, 300)]
        raw = bytes(data)
        try:
            msg = parse_message(raw)
        except ParseError:
            continue
        assert msg.raw == raw
        for text in _strings(msg):
            text.encode("utf-8")
