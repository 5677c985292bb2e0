"""A small BER/DER reader, just enough to take a CMS SignedData apart.

Why not a library: the allowed dependencies have no ASN.1 parser and ``cryptography`` cannot
verify a CMS signature. Reading TLVs is small, and since the bytes come from outside every length
is checked against its container and nesting is bounded. Indefinite lengths (BER, as streaming
S/MIME signers write them) are accepted; ``encoded`` always returns the exact input bytes, which
is what signature checks need.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_NESTING = 64

CLASS_UNIVERSAL = 0
CLASS_CONTEXT = 2

TAG_INTEGER = 2
TAG_OCTET_STRING = 4
TAG_OID = 6
TAG_SEQUENCE = 16
TAG_SET = 17
TAG_UTC_TIME = 23
TAG_GENERALIZED_TIME = 24


class DerError(ValueError):
    """The bytes are not well-formed BER/DER."""


@dataclass(frozen=True)
class Tlv:
    """One encoded value: ``data[start:end]`` is the whole TLV and ``data[content_start:
    content_end]`` its contents (without the end-of-contents octets of an indefinite length)."""

    data: bytes
    tag_class: int
    constructed: bool
    tag: int
    start: int
    content_start: int
    content_end: int
    end: int
    depth: int = 0

    @property
    def encoded(self) -> bytes:
        return self.data[self.start : self.end]

    @property
    def content(self) -> bytes:
        return self.data[self.content_start : self.content_end]

    def is_universal(self, tag: int) -> bool:
        return self.tag_class == CLASS_UNIVERSAL and self.tag == tag

    def is_context(self, tag: int) -> bool:
        return self.tag_class == CLASS_CONTEXT and self.tag == tag

    def children(self) -> list[Tlv]:
        if not self.constructed:
            raise DerError(f"tag {self.tag} is primitive: it has no children")
        items: list[Tlv] = []
        pos = self.content_start
        while pos < self.content_end:
            child = read_tlv(self.data, pos, self.content_end, depth=self.depth + 1)
            items.append(child)
            pos = child.end
        return items

    def octets(self) -> bytes:
        """The value of an OCTET STRING, joining the segments of a constructed (BER) one."""
        if not self.constructed:
            return self.content
        return b"".join(child.octets() for child in self.children())


def read_tlv(data: bytes, pos: int = 0, end: int | None = None, *, depth: int = 0) -> Tlv:
    """Read the TLV starting at ``pos``; it must end at or before ``end`` (default: the end)."""
    if depth > MAX_NESTING:
        raise DerError("nesting too deep")
    limit = len(data) if end is None else end
    start = pos
    if pos >= limit:
        raise DerError("unexpected end of data")
    first = data[pos]
    tag_class = first >> 6
    constructed = bool(first & 0x20)
    tag = first & 0x1F
    pos += 1
    if tag == 0x1F:  # high tag number form
        tag = 0
        while True:
            if pos >= limit:
                raise DerError("truncated tag")
            octet = data[pos]
            pos += 1
            tag = (tag << 7) | (octet & 0x7F)
            if not octet & 0x80:
                break
            if tag > 0xFFFFFF:
                raise DerError("tag number too large")
    if pos >= limit:
        raise DerError("truncated length")
    length_octet = data[pos]
    pos += 1
    if length_octet == 0x80:
        if not constructed:
            raise DerError("indefinite length on a primitive value")
        content_start = pos
        while True:
            if pos + 2 <= limit and data[pos] == 0 and data[pos + 1] == 0:
                return Tlv(data, tag_class, constructed, tag, start, content_start, pos, pos + 2,
                           depth)
            pos = read_tlv(data, pos, limit, depth=depth + 1).end
    if length_octet & 0x80:
        count = length_octet & 0x7F
        if count == 0 or count > 8 or pos + count > limit:
            raise DerError("bad length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    else:
        length = length_octet
    content_end = pos + length
    if content_end > limit:
        raise DerError("value runs past the end of its container")
    return Tlv(data, tag_class, constructed, tag, start, pos, content_end, content_end, depth)


def expect(tlv: Tlv, tag: int, what: str) -> Tlv:
    """``tlv`` if it is the universal ``tag``, else a DerError naming ``what``."""
    if not tlv.is_universal(tag):
        raise DerError(f"{what}: expected universal tag {tag}, found class {tlv.tag_class} "
                       f"tag {tlv.tag}")
    return tlv


def decode_oid(tlv: Tlv) -> str:
    """Dotted form of an OBJECT IDENTIFIER."""
    expect(tlv, TAG_OID, "object identifier")
    body = tlv.content
    if not body:
        raise DerError("empty object identifier")
    arcs: list[int] = []
    value = 0
    for octet in body:
        value = (value << 7) | (octet & 0x7F)
        if not octet & 0x80:
            arcs.append(value)
            value = 0
    if body[-1] & 0x80:
        raise DerError("truncated object identifier")
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(arc) for arc in head + arcs[1:])


def decode_integer(tlv: Tlv) -> int:
    expect(tlv, TAG_INTEGER, "integer")
    if not tlv.content:
        raise DerError("empty integer")
    return int.from_bytes(tlv.content, "big", signed=True)
