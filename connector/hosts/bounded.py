"""Bounded work per mail at the helpdesk: however many attachments or Cc addresses a mail
carries, it costs a bounded number of helpdesk calls.

- Attachments: the first ``limit - 1`` files go up one by one; the rest travel in one ZIP
  archive (one more upload), and the comment lists what the archive holds. Files marked
  ``pinned`` (the signed PEC envelope, the original message: evidence) are never packed and
  do not count. When even the archive would be over the host's upload size, the overflow is
  only listed.
- Cc addresses: the first ``limit`` become the ticket's CCs (each may be a new helpdesk
  user); the rest are listed in the ticket, not added.

A hostile mail (20,000 tiny parts, 5,000 Cc) thus costs ``limit + 1`` uploads and ``limit``
CCs; an ordinary one is unchanged.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from connector.hosts.base import Upload

#: At most this many names are listed in a note; the count says how many more there are.
LISTED_NAMES = 40
#: A fixed timestamp, so the same overflow always packs into the same bytes (retries).
_ZIP_TIME = (2000, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class BoundedUploads:
    """Uploads to send one by one, and what was packed into ``archive`` or left out."""

    uploads: tuple[Upload, ...]
    archive: Upload | None = None
    packed: tuple[str, ...] = ()  # file names inside the archive
    left_out: tuple[str, ...] = ()  # file names neither uploaded nor packed

    def note(self) -> str | None:
        """One line for the comment about what is not attached file by file."""
        if self.archive is not None:
            return (f"{len(self.packed)} more attachments are in {self.archive.filename} "
                    f"(over the limit of files per mail): {listed(self.packed)}")
        if self.left_out:
            return (f"{len(self.left_out)} more attachments not attached (over the limit of "
                    f"files per mail, and too large together for one archive): "
                    f"{listed(self.left_out)}")
        return None


def listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:LISTED_NAMES])
    return shown + (f" and {len(names) - LISTED_NAMES} more" if len(names) > LISTED_NAMES
                    else "")


def bound_uploads(uploads: Sequence[Upload], limit: int, *, max_bytes: int,
                  filename: Callable[[Upload], str] = lambda u: u.filename) -> BoundedUploads:
    """Keep at most ``limit`` uploads besides the pinned ones (one of them the archive)."""
    pinned = [u for u in uploads if u.pinned]
    loose = [u for u in uploads if not u.pinned]
    if limit <= 0 or len(loose) <= limit:
        return BoundedUploads(tuple(uploads))
    kept, overflow = loose[:limit - 1], loose[limit - 1:]
    names = [filename(u) for u in overflow]
    archive = _archive(overflow, names, max_bytes)
    if archive is None:
        return BoundedUploads(tuple(kept + pinned), left_out=tuple(names))
    return BoundedUploads(tuple(kept + [archive] + pinned), archive, tuple(names))


def _archive(files: Sequence[Upload], names: Sequence[str], max_bytes: int) -> Upload | None:
    total = sum(len(u.data) for u in files)
    if total > max_bytes:  # deflate rarely wins that much back on attachments
        return None
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for index, (upload, name) in enumerate(zip(files, names, strict=True), start=1):
            # Numbered: two files of one name must not overwrite each other when unpacked.
            info = zipfile.ZipInfo(f"{index:05d}-{name}", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, upload.data)
    data = buffer.getvalue()
    if len(data) > max_bytes:
        return None
    return Upload(f"more-attachments-{len(files)}.zip", "application/zip", data)


def bound_ccs(ccs: Sequence[str], limit: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the CCs to add, the ones only listed)."""
    if limit <= 0 or len(ccs) <= limit:
        return tuple(ccs), ()
    return tuple(ccs[:limit]), tuple(ccs[limit:])


def cc_note(rest: Sequence[str]) -> str | None:
    if not rest:
        return None
    return (f"{len(rest)} more Cc addresses, not added to the ticket (over the limit per "
            f"mail): {listed(rest)}")
