"""Keyword tagging (Autotask style): a configured keyword found as a whole word in the subject
or the text adds its tags. Runs after the YAML filters."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import ClassVar

from connector.filters.classifiers.base import ClassifierContext, Verdict


class KeywordsClassifier:
    name: ClassVar[str] = "keywords"
    sets: ClassVar[tuple[str, ...]] = ()

    def run(self, ctx: ClassifierContext) -> Verdict:
        keywords = ctx.settings.keywords
        if not keywords:
            return Verdict.quiet("no keywords configured")
        text = f"{ctx.message.subject}\n{ctx.message.text_body}"
        hits = [word for word in keywords if _pattern(word).search(text)]
        if not hits:
            return Verdict.quiet("no configured keyword found")
        tags = tuple(dict.fromkeys(tag for word in hits for tag in keywords[word]))
        return Verdict(True, f"keywords found: {', '.join(hits)}", {}, tags)


@lru_cache(maxsize=1024)
def _pattern(word: str) -> re.Pattern[str]:
    # Literal keyword, whole words only; no admin regex here, so no backtracking risk.
    return re.compile(r"(?<!\w)" + re.escape(word) + r"(?!\w)", re.IGNORECASE)
