"""Attachment file names as agents see them: nothing in a name may disguise or inject.

A sender chooses the name, so it is hostile input:

- Control characters and Unicode format characters (bidi overrides such as U+202E RTLO, which
  shows ``invoice_fdp.exe`` as ``invoice_exe.pdf``; isolates, zero-width joiners, BOMs) are
  removed.
- Path parts (``C:\\Users\\x\\a.pdf``, ``../../etc/passwd``) are removed: only the last part.
- Characters that mean something in HTML or in a Content-Disposition (``< > " ' & ` ;``) are
  replaced by ``_`` (helpdesks render names into pages and links).
- At most 255 bytes of UTF-8 (the common file system limit), keeping the extension.
- Leading and trailing dots and blanks go (``...``, `` a.pdf ``); an empty result is "".
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["MAX_FILENAME_BYTES", "safe_filename"]

MAX_FILENAME_BYTES = 255
#: An extension kept when shortening: a dot and up to 16 letters or digits.
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,16}$")
_HTML_UNSAFE = re.compile(r"[<>\"'&`;]")
_BLANKS = re.compile(r"\s+")


def _visible(ch: str) -> bool:
    # Cc: C0/C1 controls; Cf: format characters (bidi embeddings, overrides and isolates,
    # zero-width characters, the BOM); Cs/Co/Cn: surrogates, private use, unassigned.
    return unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn")


def safe_filename(name: str) -> str:
    """``name`` as it may be shown and stored (see the module docstring)."""
    name = "".join(ch for ch in name if _visible(ch) or ch in "\t\n\r")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _BLANKS.sub(" ", name)
    name = _HTML_UNSAFE.sub("_", name)
    name = name.strip(" .")
    return _shorten(name)


def _shorten(name: str) -> str:
    if len(name.encode("utf-8")) <= MAX_FILENAME_BYTES:
        return name
    match = _EXTENSION.search(name)
    extension = match.group(0) if match else ""
    stem = name[: len(name) - len(extension)]
    budget = MAX_FILENAME_BYTES - len(extension.encode("utf-8"))
    cut = stem.encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip(" .")
    return cut + extension
