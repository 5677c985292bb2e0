"""Mail bytes to text, whatever the sender declared.

Real mail names charsets Python does not know (``x-unknown``), mislabels them (``us-ascii``
with 8-bit bytes), puts raw 8-bit bytes into headers and damages its base64. Nothing here
raises on bad input; what was odd is appended to an optional ``defects`` list (or returned
as a note) so the caller can record it.

The stdlib parser (compat32 policy) hands header values over as str in which every byte above
0x7F is a lone surrogate (``surrogateescape``); :func:`unescape_8bit` turns those back into text.
Also here: Content-Transfer-Encoding (:func:`decode_transfer`) and format=flowed
(:func:`unflow`), the other two ways a body's bytes differ from its text.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from functools import lru_cache

# Declared charset -> the codec to decode it with. Supersets where senders routinely use the
# superset's extra characters under the subset's name (browsers do the same: WHATWG Encoding).
_CHARSET_SUPERSETS = {
    "us-ascii": "ascii",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "iso_8859-1": "cp1252",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "x-sjis": "cp932",
    "sjis": "cp932",
    "iso-8859-8-i": "iso-8859-8",
    "utf8": "utf-8",
    "x-utf8": "utf-8",
    "unicode-1-1-utf-7": "utf-7",
    "x-mac-roman": "mac-roman",
    "macintosh": "mac-roman",
}

# Codecs Python has that are not charsets a mail may use: decoding with them would interpret
# escapes or compress data instead of mapping bytes to characters.
_NOT_MAIL_CHARSETS = frozenset(
    {
        "unicode_escape",
        "raw_unicode_escape",
        "escape_codec",
        "punycode",
        "idna",
        "undefined",
        "mbcs",
        "oem",
        "utf_16",
        "utf_32",
    }
)

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?]*?)\?=")
_BLANK_BETWEEN_WORDS = re.compile(r"[ \t\r\n]*")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_LONE_NEWLINES = re.compile(r"[\r\n]+")
_HAS_SURROGATE = re.compile("[\udc80-\udcff]")
_QP_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")
_BASE64_JUNK = re.compile(rb"[^A-Za-z0-9+/=]")
_BASE64_CHAR = re.compile(rb"[A-Za-z0-9+/]")
_PADDING = re.compile(rb"=")


@lru_cache(maxsize=256)
def codec_for(charset: str | None) -> str | None:
    """Python codec name for a declared MIME charset, or None when it is unknown or unusable."""
    if not charset:
        return None
    name = charset.strip().strip("\"'").lower()
    # RFC 2231 section 5: a language may follow the charset after "*".
    name = name.split("*", 1)[0]
    name = _CHARSET_SUPERSETS.get(name, name)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_MAIL_CHARSETS:
        return None
    return info.name


def decode_bytes(
    data: bytes, charset: str | None, defects: list[str] | None = None, *, where: str = ""
) -> str:
    """Decode ``data`` declared as ``charset``, never raising.

    Bytes that do not fit the declared charset are tried as UTF-8 (the usual mislabel), then
    decoded with the declared charset and replacement characters. An unknown charset falls
    back to UTF-8, then Windows-1252. Both are recorded in ``defects`` (``where`` says which
    header or part).
    """
    codec = codec_for(charset)
    if codec is None:
        if charset and defects is not None:
            defects.append(f"unknown charset {printable(charset)}{_at(where)}")
        return decode_unlabelled(data)
    if codec in _SINGLE_BYTE and _is_utf8_text(data):
        # A single-byte label on UTF-8 bytes: text in a Latin charset practically never forms
        # valid multi-byte UTF-8, so the label lies and the repair is unambiguous.
        if defects is not None:
            defects.append(f"UTF-8 text labelled {printable(charset)}{_at(where)}")
        return data.decode("utf-8")
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError, ValueError):
        pass
    if codec.startswith("iso2022_jp"):
        text = iso2022jp_vendor(data)
        if text is not None:  # NEC/IBM characters (①, Ⅰ, ㈱) the JIS tables lack
            return text
    if defects is not None:
        defects.append(f"undecodable bytes for charset {printable(charset)}{_at(where)}")
    if codec == "utf-8" and not _UTF8_MULTIBYTE.search(data):
        # "UTF-8" with 8-bit bytes of which none forms a UTF-8 sequence: Windows-1252 text,
        # when every byte is one of its characters.
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:
            pass
    if codec != "utf-8":
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    if codec == "ascii":
        return decode_unlabelled(data)  # "us-ascii" with 8-bit bytes: a default, not a choice
    try:
        return data.decode(codec, errors="replace")
    except (LookupError, ValueError):
        return decode_unlabelled(data)


def decode_unlabelled(data: bytes, hint: str | None = None) -> str:
    """Bytes with no usable charset: UTF-8 if valid, else ``hint`` (a charset the rest of
    the message declares), else Windows-1252, else Latin-1 (which maps every byte)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    hinted = codec_for(hint)
    if hinted is not None:
        try:
            return data.decode(hinted)
        except (UnicodeDecodeError, LookupError, ValueError):
            pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def unescape_8bit(value: str, hint: str | None = None) -> str:
    """Turn the lone surrogates the compat32 parser puts for raw 8-bit bytes back into text.

    ``hint`` is the charset to try after UTF-8, typically the one the message body declares:
    mailers that put raw 8-bit bytes into headers use their body charset there too.
    """
    if not _HAS_SURROGATE.search(value):
        return value
    return decode_unlabelled(value.encode("utf-8", "surrogateescape"), hint)


def has_8bit(value: str) -> bool:
    return _HAS_SURROGATE.search(value) is not None


def unfold(value: str) -> str:
    """RFC 5322 unfolding: drop the line breaks of folded header lines, keep the blanks."""
    if "\n" not in value and "\r" not in value:
        return value
    return _LONE_NEWLINES.sub(" ", _FOLD.sub("", value))


def decode_header_value(
    value: str, defects: list[str] | None = None, *, where: str = "", hint: str | None = None
) -> str:
    """A raw header value (as compat32 gives it) to display text.

    Unfolds, decodes RFC 2047 encoded-words (adjacent words of one charset are joined before
    decoding, so a multi-byte character split across two words survives), and decodes raw
    8-bit bytes (UTF-8, else ``hint``, else Windows-1252). Unknown charsets and broken
    encodings degrade to replacement, never raise.
    """
    if not isinstance(value, str):
        # compat32 may hand a Header object for headers it built itself; str() is its text.
        value = str(value)
    value = unfold(value)
    if "=?" not in value:
        return unescape_8bit(value, hint).strip()
    pieces: list[str] = []
    pending_charset: str | None = None
    pending: list[bytes] = []
    pos = 0

    def flush() -> None:
        nonlocal pending_charset
        if pending:
            pieces.append(decode_bytes(b"".join(pending), pending_charset, defects, where=where))
            pending.clear()
        pending_charset = None

    for match in _ENCODED_WORD.finditer(value):
        between = value[pos : match.start()]
        # RFC 2047 6.2: blanks between two adjacent encoded-words are not displayed.
        if not (pending and _BLANK_BETWEEN_WORDS.fullmatch(between)):
            flush()
            pieces.append(unescape_8bit(between, hint))
        charset, encoding, text = match.groups()
        word = _decode_word(encoding, text, defects, where)
        if pending and charset.lower() != (pending_charset or "").lower():
            flush()
        pending_charset = charset
        pending.append(word)
        pos = match.end()
    flush()
    pieces.append(unescape_8bit(value[pos:], hint))
    return "".join(pieces).strip()


def _decode_word(encoding: str, text: str, defects: list[str] | None, where: str) -> bytes:
    raw = text.encode("ascii", "surrogateescape")
    if encoding in "Bb":
        cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", raw)
        cleaned += b"=" * (-len(cleaned) % 4)
        try:
            return base64.b64decode(cleaned)
        except (binascii.Error, ValueError):
            if defects is not None:
                defects.append(f"bad base64 encoded-word{_at(where)}")
            return raw
    return _QP_HEX.sub(lambda m: bytes([int(m.group(1), 16)]), raw.replace(b"_", b" "))


_QP_SOFT_BREAK = re.compile(rb"=\r?\n")
_QP_ESCAPE = re.compile(rb"=[0-9A-F]{2}")


def looks_qp(data: bytes) -> bool:
    """Text that is quoted-printable beyond doubt: soft line breaks and escapes, and no "="
    that is anything else (so "a=b" in a URL or a formula never qualifies)."""
    if b"=\n" not in data and b"=\r\n" not in data:
        return False  # no soft line break: most text, and every HTML body, ends here
    equals = data.count(b"=")
    if equals < 4 or len(data) > 10_000_000:
        return False
    breaks = len(_QP_SOFT_BREAK.findall(data))
    escapes = len(_QP_ESCAPE.findall(data))
    return breaks >= 2 and escapes >= 2 and breaks + escapes == equals


def decode_transfer(data: bytes | memoryview, encoding: str) -> tuple[bytes, str | None]:
    """Undo a Content-Transfer-Encoding. Returns the bytes and a defect note, if any.

    ``data`` may be a memoryview into the whole message, so a large base64 or
    quoted-printable part is decoded without first copying its encoded form."""
    if encoding == "base64":
        return _decode_base64(data)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(data), None
    if encoding in ("x-uuencode", "uuencode", "x-uue", "uue"):
        return _decode_uu(bytes(data))
    return bytes(data), None


def _decode_base64(data: bytes | memoryview) -> tuple[bytes, str | None]:
    try:
        decoded: bytes | None = binascii.a2b_base64(data)
    except binascii.Error:
        decoded = None
    padding = _PADDING.search(data)
    # a2b_base64 skips junk characters but stops at the first padding: fine when the padding
    # ends the data, which is the normal case (checked on the short tail only).
    if decoded is not None and (padding is None
                                or not _BASE64_CHAR.search(data, padding.start())):
        return decoded, None
    data = bytes(data)
    # Damaged: bad padding, or several padded runs (some encoders pad every line).
    out = bytearray()
    for run in _BASE64_JUNK.sub(b"", data).split(b"="):
        if len(run) % 4 == 1:
            run = run[:-1]
        if run:
            out += binascii.a2b_base64(run + b"=" * (-len(run) % 4))
    return bytes(out), "damaged base64 body repaired"


def _decode_uu(data: bytes) -> tuple[bytes, str | None]:
    out = bytearray()
    lines = iter(data.splitlines())
    for line in lines:
        if line.startswith(b"begin"):
            break
    else:
        return data, "uuencoded body without begin line kept encoded"
    for line in lines:
        if line.strip() in (b"end", b"`", b""):
            if line.strip() == b"end":
                break
            continue
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            try:  # Some encoders pad lines wrongly; the length byte says how much is real.
                nbytes = ((line[0] - 32) & 63) * 4 + 5
                out += binascii.a2b_uu(line[: nbytes // 3])
            except (binascii.Error, IndexError):
                return data, "undecodable uuencoded body kept encoded"
    return bytes(out), None


def unflow(text: str, *, delsp: bool = False) -> str:
    """Join the soft-broken lines of a format=flowed body (RFC 3676) into paragraphs."""
    out: list[str] = []
    current: str | None = None
    current_depth = 0
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        if content.startswith(" "):
            content = content[1:]  # space-stuffing
        if current is not None and depth != current_depth:
            out.append(_quote_prefix(current_depth) + current)
            current = None
        flowed = content.endswith(" ") and content != "-- "
        if flowed and delsp:
            content = content[:-1]
        if current is None:
            current, current_depth = content, depth
        else:
            current += content
        if not flowed:
            out.append(_quote_prefix(current_depth) + current)
            current = None
    if current is not None:
        out.append(_quote_prefix(current_depth) + current)
    return "\n".join(out)


def _quote_prefix(depth: int) -> str:
    return ">" * depth + " " if depth else ""


def printable(value: str) -> str:
    """``value`` safe to encode as UTF-8: raw 8-bit bytes shown as escapes (for messages)."""
    if not _HAS_SURROGATE.search(value):
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _at(where: str) -> str:
    return f" in {printable(where)}" if where else ""


def decode_transfer_or_raise(data: bytes | memoryview, encoding: str) -> bytes:
    """Undo a Content-Transfer-Encoding, raising ``ValueError`` (``binascii.Error``) when a
    base64 body cannot be read without guessing at lost data.

    For content that must be what was sent or nothing (a certified PEC original, a
    signature): :func:`decode_transfer` repairs damaged base64 instead, which is right for
    showing a mail but would hand on bytes nobody sent. ``data`` may be a memoryview into the
    whole message; a body without transfer encoding is returned as one copy of it."""
    if encoding == "base64":
        return decode_base64_lenient(data)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(data)
    return bytes(data)


def decode_base64_lenient(data: bytes | memoryview) -> bytes:
    """Base64 ignoring characters outside the alphabet and bad padding, as mail clients do.
    Raises ``binascii.Error`` only when what is left cannot be base64 at all (a length that
    leaves one character over: a byte was lost, and which one cannot be known)."""
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        pass
    cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    remainder = len(cleaned) % 4
    if remainder == 1:
        raise binascii.Error("base64 data has an impossible length")
    if remainder:
        cleaned += b"=" * (4 - remainder)
    return base64.b64decode(cleaned)


# Codecs of one byte per character, for which any byte string "decodes".
_SINGLE_BYTE = frozenset(
    {"ascii", "cp1252", "latin-1", "iso8859-1", "mac-roman"}
    | {f"iso8859-{n}" for n in range(2, 17)}
    | {f"cp{n}" for n in range(1250, 1259)}
)
_UTF8_MULTIBYTE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)


def _is_utf8_text(data: bytes) -> bool:
    """Non-ASCII bytes that are valid UTF-8 throughout."""
    if data.isascii():
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_ISO2022_ESCAPE = re.compile(rb"\x1b(\(B|\(J|\(I|\$@|\$B|\$\(D|\$\(Q|\$\(O)")


def iso2022jp_vendor(data: bytes) -> str | None:
    """ISO-2022-JP with the vendor rows Windows and Macs write (NEC row 13: ①, Ⅰ, ㈱; the
    NEC-selected and IBM extensions), read through Shift_JIS as code page 932 maps them.
    None when the bytes are not ISO-2022-JP at all."""
    out = bytearray()
    mode = b"(B"
    pos = 0
    for match in _ISO2022_ESCAPE.finditer(data):
        _jis_to_sjis(data[pos:match.start()], mode, out)
        mode = match.group(1)
        pos = match.end()
    _jis_to_sjis(data[pos:], mode, out)
    try:
        return out.decode("cp932")
    except UnicodeDecodeError:
        return None


def _jis_to_sjis(chunk: bytes, mode: bytes, out: bytearray) -> None:
    if mode in (b"(B", b"(J"):
        out += chunk
        return
    if mode == b"(I":  # half-width katakana
        out += bytes(b + 0x80 if 0x21 <= b <= 0x5F else b for b in chunk)
        return
    index = 0
    while index < len(chunk):
        j1 = chunk[index]
        if j1 in (0x0A, 0x0D) or index + 1 >= len(chunk):
            out.append(j1)  # a line end inside a two-byte run: keep it, as mailers do
            index += 1
            continue
        j2 = chunk[index + 1]
        index += 2
        if j1 & 1:
            s2 = j2 + 0x1F + (1 if j2 >= 0x60 else 0)
        else:
            s2 = j2 + 0x7E
        s1 = ((j1 + 1) >> 1) + 0x70
        if s1 >= 0xA0:
            s1 += 0x40
        out += bytes((s1 & 0xFF, s2 & 0xFF))


def header_charset(values: list[bytes], declared: list[str]) -> str | None:
    """The charset for a message's raw 8-bit header bytes (None: UTF-8 or no better guess).

    The charsets the message declares come first (its text parts', its encoded words'): the
    first one that decodes every value. Then a detector (charset-normalizer) on all the values
    together, trusted only for the multi-byte charsets it can tell apart from noise. The
    caller falls back to Windows-1252, then Latin-1.
    """
    raw = [v for v in values if not v.isascii()]
    if not raw or all(_utf8_ok(v) for v in raw):
        return None
    for charset in dict.fromkeys(c.lower() for c in declared if c):
        codec = codec_for(charset)
        if codec is None or codec in ("ascii", "utf-8"):
            continue
        try:
            for value in raw:
                value.decode(codec)
        except (UnicodeDecodeError, LookupError, ValueError):
            continue
        return charset
    return _detected(b"\n".join(raw))


def _utf8_ok(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# What the detector may answer for headers: multi-byte CJK charsets and the Cyrillic ones,
# whose byte patterns a few words already show; single-byte Latin guesses on a few bytes are
# noise, and Windows-1252 covers them anyway.
_DETECTABLE = {
    "gb18030": "gb18030", "gb2312": "gb18030", "gbk": "gb18030",
    "big5": "big5hkscs", "big5hkscs": "big5hkscs", "cp950": "big5hkscs",
    "shift_jis": "cp932", "cp932": "cp932", "shift_jis_2004": "cp932",
    "euc_jp": "euc_jp", "euc_jis_2004": "euc_jp",
    "euc_kr": "cp949", "cp949": "cp949",
    "koi8_r": "koi8_r", "koi8_u": "koi8_u", "cp1251": "cp1251",
}
_CANDIDATES = ("gb18030", "big5hkscs", "cp932", "euc_jp", "cp949", "koi8_r", "cp1251")


def _detected(data: bytes) -> str | None:
    """The charset of raw header bytes no declaration explains. Each candidate's reading is
    scored by how common its characters are in its own language; a clear winner is taken as
    is. Between close readings (on the few bytes of a subject GB2312, Big5 and EUC-KR often
    all decode) charset-normalizer's ranking decides: it is asked only then, as it costs some
    20 ms a call."""
    scores: dict[str, float] = {}
    for codec in _CANDIDATES:
        try:
            scores[codec] = _plausibility(data.decode(codec), codec)
        except (UnicodeDecodeError, LookupError):
            continue
    ranked = sorted(scores, key=scores.__getitem__, reverse=True)
    if not ranked or scores[ranked[0]] < 0.6:
        return None
    close = [c for c in ranked if scores[c] >= scores[ranked[0]] - 0.1]
    if len(close) == 1:
        return close[0]
    from charset_normalizer import from_bytes  # imported on first need: most mail never asks

    try:
        matches = list(from_bytes(data))
    except Exception:  # noqa: BLE001 - a detector failing is a guess we do not get
        matches = []
    floor = min((m.chaos for m in matches), default=0.0)
    for match in matches:  # the detector's order: it weighs the languages' letter frequencies
        codec = _DETECTABLE.get(match.encoding.lower().replace("-", "_"), "")
        if codec in close and match.chaos <= floor + 0.1:
            return codec
    return close[0]


def _plausibility(text: str, codec: str) -> float:
    """Share of the non-ASCII characters of ``text`` that are everyday ones in the language
    ``codec`` is for: GB2312's level-1 hanzi, Big5's frequent hanzi, KS X 1001's hangul,
    kana and JIS level-1 kanji, lower-case Cyrillic."""
    chars = [c for c in text if ord(c) > 0x7F]
    if not chars:
        return 0.0
    if codec in ("koi8_r", "koi8_u", "cp1251"):
        # Russian is written in Cyrillic throughout; a Latin text with a few accented letters
        # ("Frösche") read as Cyrillic gives single Cyrillic letters among Latin ones.
        letters = [c for c in text if c.isalpha()]
        if len(chars) < 3 or len(chars) < 0.5 * len(letters):
            return 0.0
    common = sum(1 for c in chars if _common(c, codec))
    return common / len(chars)


def _common(char: str, codec: str) -> bool:
    if codec in ("koi8_r", "koi8_u", "cp1251"):
        return "\u0430" <= char <= "\u044f" or char in "\u0451\u0456\u0457\u0454"
    if "\u3000" <= char <= "\u303f" or "\uff01" <= char <= "\uff5e":
        return True  # CJK punctuation and full-width forms: common to all of them
    try:
        if codec == "gb18030":
            return 0xB0 <= char.encode("gb2312")[0] <= 0xD7
        if codec == "big5hkscs":
            return 0xA4 <= char.encode("big5")[0] <= 0xC6
        if codec == "cp949":
            return "\uac00" <= char <= "\ud7a3" and 0xB0 <= char.encode("euc_kr")[0] <= 0xC8
        if codec in ("cp932", "euc_jp"):
            return "\u3040" <= char <= "\u30ff" or 0x88 <= char.encode("shift_jis")[0] <= 0x98
    except UnicodeEncodeError:
        return False
    return False
