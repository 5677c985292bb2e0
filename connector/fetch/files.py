"""Messages from local files, for ``postmaster-bridge import PATH...`` and ``deliver``.

A PATH is one of:

- a Maildir directory (has ``cur/`` and ``new/``): every message, by Maildir key;
- any other directory: its entries in name order, recursively, each read as here;
- an mbox file (first line starts with ``From ``): every message, in file order;
- any other file: one message (.eml or anything RFC 5322).

``ref`` names the source: ``path`` for a single file, ``path#N`` (0-based) for the Nth
message of an mbox, ``path#key`` for a Maildir message. Raw bytes are kept as stored; for
mbox that means without the ``From `` separator line and with any ``>From `` quoting left as
it is (mbox cannot tell quoting from text).
"""

from __future__ import annotations

import hashlib
import logging
import mailbox
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from connector.errors import FetchError
from connector.fetch.base import RemoteMessage, is_too_large

log = logging.getLogger(__name__)

#: Reads of mail over max_size, only counted, go in pieces of this size.
_CHUNK = 1024 * 1024
#: An mbox "From " line an MTA puts before the message is not part of it.
_FROM_LINE_ALLOWANCE = 1024

IMPORT_ACCOUNT = "import"
DELIVER_ACCOUNT = "deliver"


def iter_files(
    paths: Iterable[str | Path], *, account: str = IMPORT_ACCOUNT, max_size: int = 0
) -> Iterator[RemoteMessage]:
    """Every message under ``paths``, in the order given. Raises FetchError for a path that
    does not exist or cannot be read.

    A message over ``max_size`` bytes (0: no limit) is yielded with ``raw=None`` and its size,
    never read into memory whole, as the mailbox fetchers never download it."""
    for path in (Path(p) for p in paths):
        if not path.exists():
            raise FetchError(f"{path}: no such file or directory")
        try:
            if is_maildir(path):
                yield from _maildir(path, account, max_size)
            elif path.is_dir():
                yield from _directory(path, account, max_size)
            else:
                yield from _file(path, account, max_size)
        except OSError as exc:
            raise FetchError(f"{path}: cannot read: {exc}") from exc


def is_maildir(path: Path) -> bool:
    return path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir()


def is_mbox(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(5) == b"From "


def _file(path: Path, account: str, max_size: int) -> Iterator[RemoteMessage]:
    if is_mbox(path):
        yield from _mbox(path, account, max_size)
        return
    size = path.stat().st_size
    if is_too_large(size, max_size):
        yield RemoteMessage(account=account, ref=str(path), size=size, raw=None)
        return
    raw = path.read_bytes()
    if not raw.strip():
        log.warning("import skipped empty file path=%s", path)
        return
    yield _message(account, str(path), raw)


def _bounded(handle: BinaryIO, account: str, ref: str, max_size: int) -> RemoteMessage:
    """The message read from ``handle``: whole, or (over ``max_size``) only counted."""
    if max_size <= 0:
        return _message(account, ref, handle.read())
    raw = handle.read(max_size + 1)
    if len(raw) <= max_size:
        return _message(account, ref, raw)
    size = len(raw)
    del raw
    while chunk := handle.read(_CHUNK):
        size += len(chunk)
    return RemoteMessage(account=account, ref=ref, size=size, raw=None)


def _mbox(path: Path, account: str, max_size: int) -> Iterator[RemoteMessage]:
    box = mailbox.mbox(path, create=False)
    try:
        for index, key in enumerate(box.iterkeys()):
            # get_file gives the stored bytes between separators (From_ line excluded), as
            # get_bytes would, without reading them whole first.
            with box.get_file(key) as handle:
                yield _bounded(handle, account, f"{path}#{index}", max_size)
    finally:
        box.close()


def _maildir(path: Path, account: str, max_size: int) -> Iterator[RemoteMessage]:
    box = mailbox.Maildir(path, factory=None, create=False)
    for key in sorted(box.iterkeys()):
        with box.get_file(key) as handle:
            yield _bounded(handle, account, f"{path}#{key}", max_size)


def _directory(path: Path, account: str, max_size: int) -> Iterator[RemoteMessage]:
    """Files in name order, recursing; a Maildir inside is read as a Maildir. Dot-files and
    dot-directories (editor backups, .git, Maildir++ subfolders) are skipped."""
    for child in sorted(path.iterdir()):
        if child.name.startswith("."):
            continue
        if is_maildir(child):
            yield from _maildir(child, account, max_size)
        elif child.is_dir():
            yield from _directory(child, account, max_size)
        elif child.is_file():
            yield from _file(child, account, max_size)


def _message(account: str, ref: str, raw: bytes) -> RemoteMessage:
    return RemoteMessage(account=account, ref=ref, size=len(raw), raw=raw)


def read_stdin_message(
    stream: BinaryIO | None = None, *, account: str = DELIVER_ACCOUNT, max_size: int = 0
) -> RemoteMessage:
    """One message from standard input (an MTA pipe for ``deliver``). ``ref`` is
    ``stdin:<sha256 of the bytes>``, so a re-delivered identical message has the same ref.

    A leading mbox ``From `` line (procmail and some MTAs add one) is not part of the message
    and is dropped. Over ``max_size`` bytes (0: no limit) the rest of the input is read and
    counted, not kept: ``raw`` is None and ``ref`` names the hash of the first ``max_size``
    bytes and the size.
    """
    source = stream if stream is not None else sys.stdin.buffer
    try:
        raw = source.read(max_size + 1 + _FROM_LINE_ALLOWANCE) if max_size > 0 \
            else source.read()
        if raw.startswith(b"From "):
            _separator, _newline, raw = raw.partition(b"\n")
        if max_size > 0 and len(raw) > max_size:
            digest = hashlib.sha256(raw[:max_size])
            size = len(raw)
            del raw
            while chunk := source.read(_CHUNK):
                size += len(chunk)
            return RemoteMessage(account=account, ref=f"stdin:{digest.hexdigest()}:{size}",
                                 size=size, raw=None)
    except OSError as exc:
        raise FetchError(f"stdin: cannot read: {exc}") from exc
    if not raw.strip():
        raise FetchError("stdin: no message on standard input")
    return _message(account, f"stdin:{hashlib.sha256(raw).hexdigest()}", raw)


__all__ = ["iter_files", "read_stdin_message", "is_maildir", "is_mbox"]
