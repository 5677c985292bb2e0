"""The bytes an S/MIME signature covers, read where they lie in the message.

A multipart/signed envelope's signed content is its first part exactly as it travelled, in the
S/MIME canonical form (CRLF line ends). Mail fetched over IMAP is already in that form, so the
digest and the signature check read the part straight out of the message buffer (a memoryview:
``hashlib`` and ``cryptography`` both take any buffer) and nothing is copied, however large the
certified attachment. A copy kept with LF line ends is canonicalised a block at a time while it
is hashed, so even then no copy of the whole content exists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

__all__ = ["BLOCK_SIZE", "SignedContent", "canonical_crlf"]

#: Content that is not in canonical form is canonicalised this much at a time (plus the rest
#: of the line the block ends in).
BLOCK_SIZE = 1024 * 1024


def canonical_crlf(data: bytes) -> bytes:
    """Every line ending as CRLF, trailing CRs of a line dropped: the S/MIME canonical form
    OpenSSL verifies multipart/signed content in."""
    lines = data.split(b"\n")
    return b"\r\n".join(line.rstrip(b"\r") for line in lines)


class SignedContent:
    """``raw[start:end]``, canonicalised (``canonical_crlf``) when ``canonicalize``."""

    def __init__(self, raw: bytes, start: int = 0, end: int | None = None, *,
                 canonicalize: bool = False) -> None:
        self.raw = raw
        self.start = start
        self.end = len(raw) if end is None else end
        self.canonicalize = canonicalize
        self._digests: dict[str, bytes] = {}

    def view(self) -> memoryview | None:
        """The content as one buffer without copying it; None when it must be canonicalised
        first (then use ``digest`` or ``joined``)."""
        if self.canonicalize and not _is_canonical(self.raw, self.start, self.end):
            return None
        return memoryview(self.raw)[self.start : self.end]

    def pieces(self) -> Iterator[bytes | memoryview]:
        """The content in order, in pieces whose concatenation is the whole."""
        whole = self.view()
        if whole is not None:
            yield whole
            return
        yield from _canonical_blocks(self.raw, self.start, self.end)

    def digest(self, name: str) -> bytes:
        """The ``hashlib`` digest ``name`` (e.g. "sha256") of the content."""
        if name not in self._digests:
            hasher = hashlib.new(name)
            for piece in self.pieces():
                hasher.update(piece)
            self._digests[name] = hasher.digest()
        return self._digests[name]

    def joined(self) -> bytes | memoryview:
        """The whole content as one buffer: a copy only when it had to be canonicalised (for
        the rare check that cannot take a digest: Ed25519/Ed448 without signed attributes)."""
        whole = self.view()
        return whole if whole is not None else b"".join(self.pieces())


def _is_canonical(raw: bytes, start: int, end: int) -> bool:
    """Whether ``canonical_crlf(raw[start:end])`` would change nothing: every LF comes after
    exactly one CR, and no line (the last one included) ends in a CR of its own."""
    return (raw.count(b"\n", start, end) == raw.count(b"\r\n", start, end)
            and raw.find(b"\r\r\n", start, end) < 0
            and not (end > start and raw[end - 1] == 0x0D))


def _canonical_blocks(raw: bytes, start: int, end: int) -> Iterator[bytes]:
    """``canonical_crlf(raw[start:end])`` in blocks cut just after a LF: canonicalising whole
    lines separately gives the same bytes as canonicalising them together."""
    pos = start
    while pos < end:
        cut = raw.rfind(b"\n", pos, min(pos + BLOCK_SIZE, end))
        if cut < 0:
            cut = raw.find(b"\n", pos + BLOCK_SIZE, end)  # a line longer than a block
        block_end = end if cut < 0 else cut + 1
        yield canonical_crlf(raw[pos:block_end])
        pos = block_end
