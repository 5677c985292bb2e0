"""Address headers to :class:`Address` values, with a syntax verdict from email-validator.

Structure first, decoding second: the raw header is split into mailboxes while its display
names are still RFC 2047 encoded-words, so a decoded name holding a comma or quote cannot
split one mailbox into two. Validation is syntax only (no DNS): ``valid`` is False for
anything email-validator rejects, and nothing here raises on bad input.

``identity`` is the looser RFC 5322 verdict: a quoted local part, a single-label, ``localhost``,
``.local`` or ``.test`` domain, an IP literal still name someone, and a requester needs no
more. Addresses are normalized on the way: a comment (``MAILER-DAEMON (Mail Delivery System)``)
becomes the display name, a trailing dot of the domain goes.
"""

from __future__ import annotations

import re
from email.utils import getaddresses
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

from connector.mail.decode import decode_header_value, has_8bit, unescape_8bit, unfold
from connector.mail.model import Address

_ATOM = r"[^\x00-\x20\x7f()<>\[\]:;@\\,.\"]+"
_LOCAL = re.compile(rf'(?:{_ATOM}(?:\.{_ATOM})*|"(?:[^"\\\r\n]|\\.)*")\Z')
# Domain labels as hosts write them (underscores happen in real mail), or an address literal.
_DOMAIN = re.compile(rf"(?:{_ATOM}(?:\.{_ATOM})*|\[[^\[\]\\\s]*\])\Z")
_COMMENT = re.compile(r"\(([^()]*)\)")
_LIST_ITEM = re.compile(r'(?:"(?:[^"\\]|\\.)*"|<[^>]*>|\([^)]*\)|[^,"<(])+')
_GROUP_START = re.compile(r'^(?:[^:<>"@]*:(?!:))+')
_ANGLE_ADDR = re.compile(r"<([^<>]*)>")

__all__ = [
    "getaddresses_safe",
    "is_identity",
    "is_valid_address",
    "parse_address",
    "parse_address_list",
    "parseaddr_safe",
    "plain_addresses",
]

# Past these the stdlib's recursive address parser may hit the recursion limit ("((((...",
# "g:g:g:..."); such headers are split by the flat reader instead.
_MAX_NESTING = 32
_MAX_GROUPS = 64


@lru_cache(maxsize=4096)
def is_valid_address(s: str) -> bool:
    """True when ``s`` (a bare address, no display name) is syntactically deliverable.

    Special-use domains (``.test``, ``localhost``, ``.invalid``) and domains without a dot are
    not valid, as email-validator decides; internationalized addresses are.
    """
    if not s or len(s) > 320:
        return False
    try:
        validate_email(s, check_deliverability=False, allow_smtputf8=True)
    except (EmailNotValidError, ValueError, TypeError, UnicodeError):
        return False
    return True


@lru_cache(maxsize=4096)
def is_identity(s: str) -> bool:
    """True when ``s`` is an RFC 5322 addr-spec (``local@domain``), deliverable or not."""
    if not s or len(s) > 998 or "@" not in s:
        return False
    local, _, domain = s.rpartition("@")
    return bool(local and domain and _LOCAL.match(local) and _DOMAIN.match(domain))


def parse_address_list(
    header_value: str, defects: list[str] | None = None, *, hint: str | None = None
) -> tuple[Address, ...]:
    """Every mailbox in an address header (groups flattened, empty entries dropped).

    ``header_value`` may be raw (encoded-words, folded lines, 8-bit bytes as surrogates) or
    already decoded. Several headers of one name can be joined with ", " beforehand.
    ``defects`` collects decoding oddities; ``hint`` is the charset to try for raw 8-bit
    names after UTF-8.
    """
    if not header_value:
        return ()
    value = unfold(header_value)
    result = _to_addresses(_split(value), defects, hint)
    has_invalid = any(not a.identity for a in result)
    if has_invalid or value.count("@") > len(result):
        # getaddresses mangles what it cannot parse ("a@@b..c" becomes "b..c", "x@" vanishes);
        # a plain split keeps the sender's text, so a human can still read what was meant.
        literal = _to_addresses(_split_literally(value), None, hint)
        if len(literal) > len(result) or (has_invalid and len(literal) == len(result)):
            result = literal
    return tuple(result)


def _to_addresses(
    pairs: list[tuple[str, str]], defects: list[str] | None, hint: str | None
) -> list[Address]:
    result: list[Address] = []
    for name, addr in pairs:
        email = _clean_address(addr, hint)
        display = decode_header_value(name, defects, where="address", hint=hint) if name else ""
        display = display.strip().strip('"').strip()
        if not email:
            if display and "@" in display:
                # "a@b.c" in the name slot: some clients write the address as a quoted name.
                email, display = display, ""
            else:
                continue
        valid = is_valid_address(email)
        result.append(Address(name=display, email=email, valid=valid,
                              identity=valid or is_identity(email)))
    return result


def parse_address(
    header_value: str | None, defects: list[str] | None = None, *, hint: str | None = None
) -> Address | None:
    """The first mailbox of a single-address header (From, Sender), or None when it is empty.

    A From of plain words with no mailbox in it ("From: Undisclosed") still gives an Address,
    with the text as ``email`` and ``valid`` False, so the sender is never silently dropped.
    """
    if header_value is None:
        return None
    addresses = parse_address_list(header_value, defects, hint=hint)
    if addresses:
        return addresses[0]
    text = decode_header_value(header_value, defects, where="address", hint=hint)
    if not text:
        return None
    return Address(name="", email=text, valid=False, identity=False)


def plain_addresses(header_value: str) -> tuple[str, ...]:
    """Bare addresses of a trace header such as Delivered-To or X-Original-To."""
    return tuple(a.email for a in parse_address_list(header_value))


def getaddresses_safe(values: list[str]) -> list[tuple[str, str]]:
    """``email.utils.getaddresses`` that never raises and never recurses deeply: hostile
    nesting is flattened first (comments dropped, groups read flat)."""
    pairs: list[tuple[str, str]] = []
    for value in values:
        pairs.extend(_split(str(value)))
    return pairs


def parseaddr_safe(value: str) -> tuple[str, str]:
    """``email.utils.parseaddr`` on the same terms: ``("", "")`` when nothing is found."""
    pairs = _split(value)
    return pairs[0] if pairs else ("", "")


def _split(value: str) -> list[tuple[str, str]]:
    # Counting first keeps the character walk off ordinary headers.
    if value.count("(") > _MAX_NESTING and _nesting(value) > _MAX_NESTING:
        value = _without_comments(value)
    if value.count(":") > _MAX_GROUPS:
        return _split_literally(value)
    try:
        return getaddresses([value])
    except (ValueError, TypeError, IndexError, RecursionError):
        # getaddresses is lenient, but a parser of this much history earns a net.
        return _split_literally(value)


def _nesting(value: str) -> int:
    """How deep parentheses nest (outside quotes): one pass, no recursion."""
    depth = deepest = 0
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"' and depth == 0:
            quoted = not quoted
        elif quoted:
            continue
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")" and depth:
            depth -= 1
    return deepest


def _without_comments(value: str) -> str:
    """``value`` with every (nested) comment removed, in one pass."""
    kept: list[str] = []
    depth = 0
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
            if depth == 0:
                kept.append(char)
            continue
        if char == "\\":
            escaped = True
        elif char == '"' and depth == 0:
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
            continue
        elif not quoted and char == ")" and depth:
            depth -= 1
            continue
        if depth == 0:
            kept.append(char)
    return "".join(kept)


def _split_literally(value: str) -> list[tuple[str, str]]:
    """Split on commas outside quotes and brackets; ``name <addr>`` or a bare address."""
    pairs: list[tuple[str, str]] = []
    for piece in _LIST_ITEM.findall(value):
        piece = _GROUP_START.sub("", piece.strip()).rstrip(";").strip()
        if not piece:
            continue
        angle = _ANGLE_ADDR.search(piece)
        if angle:
            pairs.append((piece[: angle.start()].strip(), angle.group(1)))
        else:
            # "MAILER-DAEMON (Mail Delivery System)": the comment is the name.
            comments = _COMMENT.findall(piece)
            bare = _COMMENT.sub(" ", piece).strip()
            pairs.append((" ".join(c.strip() for c in comments if c.strip()), bare or piece))
    return pairs


def _clean_address(addr: str, hint: str | None) -> str:
    email = addr.strip().strip("<>").strip()
    if has_8bit(email):
        email = unescape_8bit(email, hint)
    if "@" not in email:
        return " ".join(email.split())  # not an address: keep the words readable
    local, _, domain = email.rpartition("@")
    if not (local.startswith('"') and local.endswith('"') and len(local) > 1):
        # Addresses never contain blanks outside quotes; getaddresses keeps some from broken
        # headers.
        local = "".join(local.split())
    # "user@example.com." is the same mailbox: the root label's dot is no part of the name.
    domain = "".join(domain.split()).rstrip(".") or domain
    return f"{local}@{domain}"
