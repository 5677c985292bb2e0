"""Zendesk words stay in the Zendesk modules (issue 16 "One host interface", issue 11 §1).

Outside ``connector/hosts/zendesk*`` and ``connector/outbound/zendesk*`` the code speaks the
host-neutral language: opaque ticket ids, the filters' X-OTOBO-* controls. This test reads the
code of every other module (names and string literals; comments and docstrings may explain)
and fails when a Zendesk word appears where it did not before.

``STILL_THERE`` lists what has not moved yet, per module and word, as counts (each with its
reason). A count may only go down (lower it here when a change removes
words); a new module or a higher count fails.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = re.compile(r"zendesk|group_id|brand_id|via_followup_source_id", re.IGNORECASE)
#: Where Zendesk words belong: its adapter and its outbound API.
ZENDESK_MODULES = re.compile(r"^connector/(hosts|outbound)/zendesk")
#: The config layer keeps Zendesk-flavoured keys accepted (host.groups, new_ticket.group_id,
#: host.type: zendesk); the factories build the adapter, the vocabulary and the outbound side
#: (the worker's API, install/uninstall) a host type names.
CONFIG_LAYER = {"connector/config.py", "connector/config_reader.py",
                "connector/outbound/settings.py",
                "connector/hosts/factory.py", "connector/hosts/vocabulary.py",
                "connector/outbound/factory.py"}

STILL_THERE: dict[str, dict[str, int]] = {
    # Legitimately host-specific, to stay: the CLI names the host types (install/uninstall
    # --host zendesk|otobo|znuny, and the help of Zendesk's install options) ...
    "connector/cli/outbound.py": {"zendesk": 1},
    "connector/cli/parser.py": {"zendesk": 4},
    # ... the dry run without a helpdesk to read from shows Zendesk's REST calls, in its
    # vocabulary (with an OTOBO reader it shows OTOBO's) ...
    "connector/hosts/dryrun.py": {"zendesk": 3},
    # ... and SQL comments in the schema of the tables only Zendesk's install uses (what
    # `install` made there, a signing secret Zendesk chose).
    "connector/store/migrations.py": {"zendesk": 2},
}


def _is_docstring(tokens: list[tokenize.TokenInfo], index: int) -> bool:
    """A string that is a statement of its own (module, class or function docstring)."""
    before = index - 1
    while before >= 0 and tokens[before].type in (tokenize.NL, tokenize.COMMENT):
        before -= 1
    opens_line = before < 0 or tokens[before].type in (
        tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
    after = tokens[index + 1] if index + 1 < len(tokens) else None
    return opens_line and after is not None and after.type in (tokenize.NEWLINE, tokenize.ENDMARKER)


def zendesk_words(source: str) -> dict[str, int]:
    """Zendesk words in the names and string literals of ``source``, counted per word."""
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    found: dict[str, int] = {}
    for index, token in enumerate(tokens):
        if token.type == tokenize.STRING and _is_docstring(tokens, index):
            continue
        if token.type not in (tokenize.NAME, tokenize.STRING):
            continue
        for match in WORDS.findall(token.string):
            found[match.lower()] = found.get(match.lower(), 0) + 1
    return found


def leaks() -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for path in sorted((ROOT / "connector").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if ZENDESK_MODULES.match(rel) or rel in CONFIG_LAYER:
            continue
        if words := zendesk_words(path.read_text(encoding="utf-8")):
            out[rel] = words
    return out


def test_zendesk_words_do_not_leak_out_of_the_zendesk_modules() -> None:
    grown = {}
    for module, words in leaks().items():
        allowed = STILL_THERE.get(module, {})
        more = {w: n for w, n in words.items() if n > allowed.get(w, 0)}
        if more:
            grown[module] = {w: f"{n} (allowed {allowed.get(w, 0)})" for w, n in more.items()}
    assert not grown, ("Zendesk words outside the Zendesk adapter (speak the X-OTOBO-* "
                       f"controls and opaque ticket ids there instead): {grown}")


def test_the_check_sees_names_and_strings_not_comments_or_docstrings() -> None:
    source = ('"""Talks to Zendesk."""\n'
              "# group_id is Zendesk's\n"
              "def f(group_id: int) -> dict:\n"
              '    """brand_id in a docstring."""\n'
              '    return {"brand_id": group_id}\n')
    assert zendesk_words(source) == {"group_id": 2, "brand_id": 1}
