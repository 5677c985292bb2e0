"""The issue 11 figures on the development corpus (tests/data/realworld, labels.tsv).

    python3 bench/realworld.py            # the table
    python3 bench/realworld.py --misses   # and every message that misses a goal, with why
    python3 bench/realworld.py --flufl    # what flufl.bounce as a second opinion would change

Each labelled message is parsed and run through the built-in classifiers exactly as the filter
stage runs them (no YAML filters, no store: nothing is ours, no ticket is known), with the
message's From listed as staff and its address proven (as our MTA's DKIM pass would prove
it), so that a forward can be unwrapped. The labels come from the
sources' own tests and from reading the messages (see the corpus README), never from this
code's output. Nothing is timed; nothing touches the network.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from connector.config import AccountConfig, HostConfig  # noqa: E402
from connector.decide.decision import Action, IgnoredAs  # noqa: E402
from connector.errors import ParseError  # noqa: E402
from connector.filters.authentication import AuthMethod, SenderAuthentication  # noqa: E402
from connector.filters.chain import FilterChain  # noqa: E402
from connector.filters.engine import run_filters  # noqa: E402
from connector.filters.lookups import NullLookups  # noqa: E402
from connector.filters.settings import FilterSettings  # noqa: E402
from connector.filters.verdicts import (  # noqa: E402
    BounceDetails,
    Classification,
    ForwardDetails,
    Kind,
    Strength,
)
from connector.mail import ParsedMessage, parse_message  # noqa: E402
from connector.service.filtering import StoreLookups  # noqa: E402
from connector.store.sqlite import SQLiteStore  # noqa: E402
from connector.understand import Rules, understand  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "realworld"
LABELS = CORPUS / "labels.tsv"
CUSTOMER_KINDS = ("ordinary", "reply", "forward")
MACHINE_KINDS = ("arf", "challenge")

GOALS = {
    "refused_for_from": 0,
    "ordinary_misclassified": 0,
    "bounce_recall": 0.98,
    "auto_reply_recall": 0.95,
    "fields": 0.98,
    "forwards": 0.90,
    "crashes": 0,
}


@dataclass(frozen=True)
class Label:
    path: str
    kind: str
    expect: dict


@dataclass
class Figures:
    messages: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    refused_for_from: list[str] = field(default_factory=list)  # error folder or ignored: sender
    unknown_sender: list[str] = field(default_factory=list)  # ticketed for unknown_sender
    unparsed: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    customer: int = 0
    misclassified: list[str] = field(default_factory=list)  # customer mail seen as machine mail
    misclassified_ignored: list[str] = field(default_factory=list)  # ... with a strong signal
    bounces: int = 0
    bounce_missed: list[str] = field(default_factory=list)
    bounce_weak: list[str] = field(default_factory=list)  # found, but only tagged
    recipients_checked: int = 0
    recipients_wrong: list[str] = field(default_factory=list)
    permanence_checked: int = 0
    permanence_wrong: list[str] = field(default_factory=list)
    auto_replies: int = 0
    auto_reply_missed: list[str] = field(default_factory=list)
    auto_reply_weak: list[str] = field(default_factory=list)  # found, but only tagged
    machine: int = 0
    machine_missed: list[str] = field(default_factory=list)
    notifications: int = 0  # automated notifications: no goal, they say what the sender wrote
    notifications_machine: list[str] = field(default_factory=list)
    fields_checked: int = 0
    fields_wrong: list[str] = field(default_factory=list)
    forwards: int = 0
    forward_missed: list[str] = field(default_factory=list)
    not_forwards: int = 0
    forward_false: list[str] = field(default_factory=list)  # ordinary/reply unwrapped as forward

    def rate(self, missed: list[str], total: int) -> float:
        return (total - len(missed)) / total if total else 1.0

    def summary(self) -> dict[str, float | int]:
        return {
            "refused_for_from": len(self.refused_for_from),
            "ordinary_misclassified": len(self.misclassified),
            "ordinary_ignored": len(self.misclassified_ignored),
            "bounce_recall": self.rate(self.bounce_missed, self.bounces),
            "auto_reply_recall": self.rate(self.auto_reply_missed, self.auto_replies),
            "fields": self.rate(self.fields_wrong, self.fields_checked),
            "forwards": self.rate(self.forward_missed, self.forwards),
            "crashes": len(self.crashes),
        }

    def failures(self) -> list[str]:
        """The goals this run misses."""
        got = self.summary()
        return [
            f"{name}: {got[name]} (goal {goal})"
            for name, goal in GOALS.items()
            if (got[name] > goal if isinstance(goal, int) else got[name] < goal)
        ]


def labels(path: Path = LABELS) -> Iterator[Label]:
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        rel, kind, expect = line.split("\t")
        yield Label(rel, kind, json.loads(expect))


def classify(message: ParsedMessage) -> Classification | None:
    """What the built-in classifiers make of a mail, its sender counted as staff whose address
    is proven (as our MTA's DKIM pass would prove it), so that forwards are unwrapped."""
    sender = message.from_.normalized if message.from_ is not None else ""
    settings = FilterSettings(staff=(sender,) if sender else ())
    proven = SenderAuthentication(sender or None, bool(sender), AuthMethod.DKIM_RESULT,
                                  "bench: the sender counts as proven staff")
    outcome = run_filters(
        message, account="corpus", trusted=False, chain=FilterChain(), settings=settings,
        lookups=NullLookups(), authentication=proven,
    )
    return outcome.classification


# The pure understanding stage as `run` calls it: a plain IMAP account, no filters, the
# default unknown_sender, an empty ledger.
_ACCOUNT = AccountConfig(name="corpus", protocol="imap", host="127.0.0.1", port=143,
                         security="none", username="support@example.com", password="x")
_RULES = Rules(FilterChain(()), {"corpus": FilterSettings()}, HostConfig(type="dry-run"))


def measure(corpus: Path = CORPUS) -> Figures:
    figures = Figures()
    lookups = StoreLookups(SQLiteStore(":memory:"), None)
    for label in labels(corpus / "labels.tsv"):
        figures.messages += 1
        figures.by_kind[label.kind] = figures.by_kind.get(label.kind, 0) + 1
        raw = (corpus / label.path).read_bytes()
        try:
            message = parse_message(raw)
        except ParseError as exc:
            if label.kind != "not_mail":
                figures.unparsed.append(f"{label.path}: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - a crash is what this counts
            figures.crashes.append(f"{label.path}: parse: {type(exc).__name__}: {exc}")
            continue
        try:
            found = classify(message)
            _score_sender(figures, label, raw, lookups.for_record(None))
        except Exception as exc:  # noqa: BLE001
            figures.crashes.append(f"{label.path}: classify: {type(exc).__name__}: {exc}")
            continue
        _score(figures, label, message, found)
    return figures


def _score_sender(figures: Figures, label: Label, raw: bytes, lookups: StoreLookups) -> None:
    """What `run` would do about the sender: refuse the mail (error folder, or ignored for
    want of one), or ticket it for the account's unknown_sender."""
    try:
        understood = understand(raw, _ACCOUNT, _RULES, lookups)
    except ParseError as exc:
        figures.refused_for_from.append(f"{label.path}: error folder: {exc}")
        return
    decision = understood.decision
    if decision.action is Action.IGNORE and decision.ignored_as is IgnoredAs.NO_SENDER:
        figures.refused_for_from.append(f"{label.path}: ignored: {decision.reason}")
    elif understood.requester.source == "unknown_sender" and decision.action is not Action.IGNORE:
        figures.unknown_sender.append(f"{label.path}: From {understood.requester.shown}")


def _score(figures: Figures, label: Label, message: ParsedMessage,
           found: Classification | None) -> None:
    kind = found.kind if found is not None else None
    machine = kind in (Kind.BOUNCE, Kind.AUTO_REPLY)
    strong = machine and found is not None and found.strength is Strength.STRONG
    if label.kind in CUSTOMER_KINDS:
        figures.customer += 1
        if machine:
            figures.misclassified.append(f"{label.path}: {found.reason if found else ''}")
            if strong:
                figures.misclassified_ignored.append(label.path)
    elif label.kind == "bounce":
        figures.bounces += 1
        if kind is not Kind.BOUNCE:
            figures.bounce_missed.append(f"{label.path}: {found.reason if found else 'nothing'}")
        else:
            if not strong:
                figures.bounce_weak.append(label.path)
            _score_bounce(figures, label, found)
    elif label.kind == "auto_reply":
        figures.auto_replies += 1
        if kind is not Kind.AUTO_REPLY:
            figures.auto_reply_missed.append(f"{label.path}: {found.reason if found else '-'}")
        elif not strong:
            figures.auto_reply_weak.append(label.path)
    elif label.kind in MACHINE_KINDS:
        figures.machine += 1
        if not strong:
            figures.machine_missed.append(f"{label.path}: {found.reason if found else '-'}")
    elif label.kind == "notification":
        figures.notifications += 1
        if strong:
            figures.notifications_machine.append(f"{label.path}: {found.reason if found else ''}")
    if label.kind in ("ordinary", "reply"):
        figures.not_forwards += 1
        if kind is Kind.FORWARDED:
            figures.forward_false.append(f"{label.path}: {found.reason if found else ''}")
    if label.kind == "forward" and "original_sender" in label.expect:
        figures.forwards += 1
        details = found.details if found is not None else None
        if isinstance(details, ForwardDetails):
            got = details.original_sender.email.lower()
        else:  # not unwrapped: the ticket is the From's, right when they forwarded their own
            got = message.from_.email.lower() if message.from_ is not None else None
        if got != label.expect["original_sender"]:
            figures.forward_missed.append(f"{label.path}: {got} != "
                                          f"{label.expect['original_sender']}")
    _score_fields(figures, label, message)


def _score_bounce(figures: Figures, label: Label, found: Classification | None) -> None:
    details = found.details if found is not None else None
    if not isinstance(details, BounceDetails):
        return
    expected = label.expect.get("failed_recipients")
    if expected:
        figures.recipients_checked += 1
        got = {r.lower() for r in details.failed_recipients}
        if not set(expected) <= got:
            figures.recipients_wrong.append(f"{label.path}: {sorted(got)} != {expected}")
    if "temporary" in label.expect:
        figures.permanence_checked += 1
        if details.permanent == label.expect["temporary"]:
            figures.permanence_wrong.append(f"{label.path}: permanent={details.permanent}")


def _score_fields(figures: Figures, label: Label, message: ParsedMessage) -> None:
    expect = label.expect
    checks: list[tuple[str, bool]] = []
    if "from" in expect:
        got = message.from_.email.lower() if message.from_ else None
        checks.append(("from", got == expect["from"]))
    for name, got_addresses in (("to", message.to), ("cc", message.cc)):
        if name in expect:
            got = [a.email.lower() for a in got_addresses]
            checks.append((name, got == expect[name]))
    if "subject" in expect:
        checks.append(("subject", _same_text(message.subject, expect["subject"])))
    if "body_words" in expect:
        text = " ".join((message.text_body, message.html_body or ""))
        checks.append(("body", all(word in text for word in expect["body_words"])))
    if "attachments" in expect:
        names = [f.filename for f in message.attachments + message.inline_images]
        checks.append(("attachments", all(
            any(_same_text(name, wanted) or _same_file(name, wanted) for name in names)
            for wanted in expect["attachments"]
        )))
    for name, ok in checks:
        figures.fields_checked += 1
        if not ok:
            figures.fields_wrong.append(f"{label.path}: {name}")


def _same_text(got: str, expected: str) -> bool:
    """Equal up to blanks; a U+FFFD in the expectation (the other parser could not decode a
    byte there) stands for any one character."""
    got, expected = " ".join(got.split()), " ".join(expected.split())
    if "\ufffd" not in expected:
        return got == expected
    pattern = ".".join(re.escape(piece) for piece in expected.split("\ufffd"))
    return re.fullmatch(pattern, got) is not None


def _same_file(got: str, expected: str) -> bool:
    """The same file name, the sender's folders left out ("C:\\TEMP\\x.png" is x.png): we
    never keep a path in a file name."""
    return bool(got) and expected.replace("\\", "/").endswith(got)


def render(figures: Figures) -> str:
    got = figures.summary()
    lines = [
        f"{figures.messages} labelled messages: "
        + ", ".join(f"{k} {v}" for k, v in sorted(figures.by_kind.items())),
        "",
        "| figure | value | goal |",
        "|---|---|---|",
        f"| mails refused for their From (error folder, or ignored for want of a sender) | "
        f"{got['refused_for_from']} | 0 |",
        f"| mails with no usable address in From, Sender, Reply-To or Return-Path, ticketed "
        f"for unknown_sender | {len(figures.unknown_sender)} | - |",
        f"| customer mail (ordinary, reply, forward) classified as bounce or auto-reply | "
        f"{got['ordinary_misclassified']} of {figures.customer}, "
        f"{got['ordinary_ignored']} with a strong signal (would be ignored) | 0 |",
        f"| bounce recall | {got['bounce_recall']:.1%} of {figures.bounces} "
        f"({len(figures.bounce_weak)} only tagged) | >= 98 % |",
        f"| auto-reply recall | {got['auto_reply_recall']:.1%} of {figures.auto_replies} "
        f"({len(figures.auto_reply_weak)} only tagged) | >= 95 % |",
        f"| parsed fields matching the source's expectations | {got['fields']:.1%} of "
        f"{figures.fields_checked} | >= 98 % |",
        f"| forwards: original sender found | {got['forwards']:.1%} of {figures.forwards} "
        f"({len(figures.forward_false)} of {figures.not_forwards} other mails from staff "
        f"taken for forwards) | >= 90 % |",
        f"| crashes | {got['crashes']} | 0 |",
        "",
        "bounces: failed recipients right "
        f"{figures.recipients_checked - len(figures.recipients_wrong)} of "
        f"{figures.recipients_checked}; permanent/temporary right "
        f"{figures.permanence_checked - len(figures.permanence_wrong)} of "
        f"{figures.permanence_checked}; machine mail (ARF, challenge) recognised "
        f"{figures.machine - len(figures.machine_missed)} of {figures.machine}; "
        f"automated notifications the sender marked so (Auto-Submitted...) "
        f"{len(figures.notifications_machine)} of {figures.notifications}; "
        f"mails the parser refused {len(figures.unparsed)}",
    ]
    return "\n".join(lines)


def flufl_second_opinion(corpus: Path = CORPUS) -> str:
    """What flufl.bounce (``pip install flufl.bounce``; not a dependency) would add as a second
    opinion: bounces we miss that it finds, customer mail it would call a bounce, and bounces
    whose failed recipients it gets right where we do not. Its own test mails are in the
    corpus (flufl_bounce/), so its figures there are flattered."""
    import email

    from flufl.bounce import all_failures

    gained: list[str] = []
    false: list[str] = []
    better_recipients: list[str] = []
    for label in labels(corpus / "labels.tsv"):
        raw = (corpus / label.path).read_bytes()
        try:
            message = parse_message(raw)
            found = classify(message)
        except ParseError:
            continue
        try:
            temporary, permanent = all_failures(email.message_from_bytes(raw))
        except Exception:  # noqa: BLE001 - its failures count as "found nothing"
            temporary, permanent = frozenset(), frozenset()
        theirs = {a.decode(errors="replace").lower() for a in temporary | permanent}
        ours = found is not None and found.kind is Kind.BOUNCE
        if label.kind == "bounce" and theirs and not ours:
            gained.append(label.path)
        if label.kind in CUSTOMER_KINDS and theirs and not ours:
            false.append(label.path)
        expected = set(label.expect.get("failed_recipients", ()))
        if ours and expected and isinstance(found.details, BounceDetails):
            got = {r.lower() for r in found.details.failed_recipients}
            if not expected <= got and expected <= theirs:
                better_recipients.append(label.path)
    lines = [
        f"flufl.bounce as a second opinion: bounces it finds that we miss: {len(gained)} "
        f"{gained}",
        f"customer mail it would call a bounce (we do not): {len(false)} {false}",
        f"bounces whose failed recipients it gets right and we do not: "
        f"{len(better_recipients)} {better_recipients}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--misses", action="store_true", help="list every miss")
    parser.add_argument("--flufl", action="store_true",
                        help="measure flufl.bounce as a second opinion (needs it installed)")
    args = parser.parse_args(argv)
    figures = measure()
    print(render(figures))
    if args.flufl:
        print()
        print(flufl_second_opinion())
    if args.misses:
        for name in ("refused_for_from", "unknown_sender", "unparsed", "crashes", "misclassified",
                     "bounce_missed", "bounce_weak", "recipients_wrong", "permanence_wrong",
                     "auto_reply_missed", "auto_reply_weak", "machine_missed",
                     "notifications_machine", "fields_wrong", "forward_missed", "forward_false"):
            items = getattr(figures, name)
            if items:
                print(f"\n{name} ({len(items)}):")
                print("\n".join(f"  {item}" for item in items))
    return 0 if not figures.failures() else 1


if __name__ == "__main__":
    sys.exit(main())
