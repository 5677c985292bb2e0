"""Attachment facts for later filters: X-OTOBO-AttachmentCount / -AttachmentExists.

Inline images (referenced from the HTML by Content-ID) are not attachments a human attached,
so they are not counted, as in OTOBO.
"""

from __future__ import annotations

from typing import ClassVar

from connector.filters.classifiers.base import ClassifierContext, Verdict

COUNT = "X-OTOBO-AttachmentCount"
EXISTS = "X-OTOBO-AttachmentExists"


class AttachmentsClassifier:
    name: ClassVar[str] = "attachments"
    sets: ClassVar[tuple[str, ...]] = (COUNT, EXISTS)

    def run(self, ctx: ClassifierContext) -> Verdict:
        files = [
            a
            for a in ctx.message.attachments
            if not (a.inline and a.content_id and a.content_type.startswith("image/"))
        ]
        count = len(files)
        sets = {COUNT: str(count), EXISTS: "yes" if count else "no"}
        return Verdict(True, f"{count} attachment(s), inline images excluded", sets)
