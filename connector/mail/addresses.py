"""Address headers to :class:`Address` values, with a syntax verdict from email-validator.

Structure first, decoding second: the raw header is split into mailboxes while its display
names are still RFC 2047 encoded-words, so a decoded name holding a comma or quote cannot
split one mailbox into two. Validation is syntax only (no DNS): ``valid`` is False for
anything email-validator rejects, and nothing here raises on bad input.
"""

from __future__ import annotations

import re
from email.utils import getaddresses
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

from connector.mail.decode import decode_header_value, has_8bit, unescape_8bit, unfold
from connector.mail.model import Address

_LIST_ITEM = re.compile(r'(?:"(?:[^"\\]|\\.)*"|<[^>]*>|\([^)]*\)|[^,"<(])+')
_GROUP_START = re.compile(r'^[^:<>"@]*:(?!:)')
_ANGLE_ADDR = re.compile(r"<([^<>]*)>")

__all__ = ["is_valid_address", "parse_address", "parse_address_list", "plain_addresses"]


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
    has_invalid = any(not a.valid for a in result)
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
        result.append(Address(name=display, email=email, valid=is_valid_address(email)))
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
    return Address(name="", email=text, valid=False)


def plain_addresses(header_value: str) -> tuple[str, ...]:
    """Bare addresses of a trace header such as Delivered-To or X-Original-To."""
    return tuple(a.email for a in parse_address_list(header_value))


def _split(value: str) -> list[tuple[str, str]]:
    try:
        return getaddresses([value])
    except (ValueError, TypeError, IndexError):
        # getaddresses is lenient, but a parser of this much history earns a net.
        return [("", part.strip()) for part in value.split(",")]


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
            pairs.append(("", piece))
    return pairs


def _clean_address(addr: str, hint: str | None) -> str:
    email = addr.strip().strip("<>").strip()
    if has_8bit(email):
        email = unescape_8bit(email, hint)
    if "@" not in email:
        return " ".join(email.split())  # not an address: keep the words readable
    # Addresses never contain blanks; getaddresses keeps some from broken headers.
    return "".join(email.split())
