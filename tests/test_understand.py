"""One understanding path (connector.understand): what the pipeline records is what
``filters test`` shows; classifiers run before any sender check; a classifier that fails sends
the mail to the error folder at once; weak signs only tag unless the account says otherwise."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from connector.config import AccountConfig, HostConfig, config_from_mapping
from connector.decide.decision import Action, IgnoredAs
from connector.decide.sender import Requester
from connector.errors import ConfigError
from connector.fetch.files import iter_files
from connector.filters import Classification, FilterChain, FilterSettings, Kind
from connector.filters.classifiers.base import Verdict
from connector.filters.classifiers.commands import CommandsClassifier
from connector.filters.engine import _apply_verdict, _Overlay
from connector.filters.verdicts import Strength
from connector.hosts.dryrun import DryRunAdapter
from connector.mail.model import ParsedMessage
from connector.service.filtering import StoreLookups
from connector.service.pipeline import Outcome, Pipeline
from connector.store.base import MessageState
from connector.store.sqlite import SQLiteStore
from connector.understand import Rules, understand

DATA = Path(__file__).parent / "data"
HOST = HostConfig(type="dry-run")
ACCOUNT = AccountConfig(name="support", protocol="imap", host="127.0.0.1", port=143,
                        security="none", username="support@example.com", password="x")
RULES = Rules(FilterChain(()), {"support": FilterSettings()}, HOST)


def exim_bounce(from_line: bytes) -> bytes:
    """flufl.bounce's real Exim bounce, its From line replaced."""
    [message] = iter_files([DATA / "realworld" / "flufl_bounce" / "exim_01.txt"])
    assert message.raw is not None
    original = b"From: Mail Delivery System <Mailer-Daemon@rotzorg.org>"
    assert original in message.raw
    return message.raw.replace(original, from_line, 1)


def pipeline() -> tuple[Pipeline, SQLiteStore]:
    store = SQLiteStore(":memory:")
    return Pipeline(ACCOUNT, HOST, store, DryRunAdapter(io.StringIO()), RULES), store


@pytest.mark.parametrize("from_line", [b"From: <>", b"From: MAILER-DAEMON",
                                       b"From: MAILER-DAEMON (Mail Delivery System)"])
def test_a_bounce_from_no_address_is_a_bounce_not_an_error(from_line: bytes) -> None:
    raw = exim_bounce(from_line)
    store = SQLiteStore(":memory:")
    understanding = understand(raw, ACCOUNT, RULES, StoreLookups(store, None))
    assert understanding.verdict.kind is Kind.BOUNCE
    assert understanding.decision.action is Action.IGNORE
    assert understanding.decision.ignored_as is IgnoredAs.BOUNCE

    run, store = pipeline()
    result = run.process("r1", raw)
    assert result.outcome is Outcome.IGNORED and result.ignored_as == "bounce"
    record = store.get_message("support", "r1")
    assert record is not None and record.state is MessageState.IGNORED
    assert record.error == "bounce that matches no ticket"


def test_the_trace_run_records_is_the_trace_filters_test_shows() -> None:
    raw = (DATA / "filters" / "route_billing.eml").read_bytes()
    run, store = pipeline()
    run.process("r1", raw)
    record = store.get_message("support", "r1")
    assert record is not None and record.trace is not None
    shown = understand(raw, ACCOUNT, RULES, StoreLookups(SQLiteStore(":memory:"), None),
                       evaluate_all=True).trace
    assert record.trace == json.loads(json.dumps(shown))
    assert record.trace["decision"]["action"] == "new_ticket"
    assert record.trace["requester"]["source"] == "From"


def test_the_requester_is_resolved_once_per_mail(monkeypatch: pytest.MonkeyPatch) -> None:
    # understand records it in the trace and decide (and its new ticket) use the same one.
    import connector.decide.decision as decision_module
    calls: list[str] = []
    resolve = decision_module.resolve_requester

    def counted(message: ParsedMessage, **options: Any) -> Requester:
        calls.append(message.subject)
        return resolve(message, **options)

    monkeypatch.setattr(decision_module, "resolve_requester", counted)
    raw = (DATA / "filters" / "route_billing.eml").read_bytes()
    understanding = understand(raw, ACCOUNT, RULES, StoreLookups(SQLiteStore(":memory:"), None))
    assert understanding.decision.action is Action.NEW_TICKET
    assert understanding.decision.requester == understanding.requester.address
    assert len(calls) == 1


def test_a_failing_classifier_sends_the_mail_to_the_error_folder_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(self: CommandsClassifier, ctx: object) -> Verdict:
        raise ValueError("cannot read this mail")

    monkeypatch.setattr(CommandsClassifier, "run", explode)
    raw = (DATA / "filters" / "route_billing.eml").read_bytes()
    run, store = pipeline()

    result = run.process("r1", raw)

    assert result.outcome is Outcome.FAILED  # not RETRY: no five attempts
    assert result.reason.startswith("FilterError: classifier commands failed: ValueError")
    record = store.get_message("support", "r1")
    assert record is not None and (record.state, record.attempts) == (MessageState.FAILED, 1)
    assert store.quarantined_raw(record.id) == raw  # for errors replay


def test_a_strong_classification_replaces_a_weak_one_and_not_the_other_way() -> None:
    class Step:
        name = "test"
        sets: tuple[str, ...] = ()

    weak = Classification(Kind.AUTO_REPLY, "Precedence: bulk", "auto_reply",
                          strength=Strength.WEAK)
    strong = Classification(Kind.BOUNCE, "RFC 3464 report", "bounce")
    overlay = _Overlay()
    _apply_verdict(Step(), Verdict(True, "weak", classification=weak), overlay)  # type: ignore[arg-type]
    _apply_verdict(Step(), Verdict(True, "strong", classification=strong), overlay)  # type: ignore[arg-type]
    assert overlay.classification is strong
    _apply_verdict(Step(), Verdict(True, "weak", classification=weak), overlay)  # type: ignore[arg-type]
    assert overlay.classification is strong


def accounts(**settings: object) -> AccountConfig:
    entry = {"name": "support", "protocol": "imap", "host": "127.0.0.1", "security": "none",
             "username": "help@acme.example", "password": "${HOME}", **settings}
    return config_from_mapping({"host": {"type": "dry-run"}, "accounts": [entry]}, "c.yaml",
                               Path(".")).accounts[0]


def test_account_options_for_senders_weak_signals_and_folders() -> None:
    default = accounts()
    assert default.unknown_sender == "unknown-sender@acme.example"
    assert (default.weak_signals, default.held_folder, default.ignored_folder) == (
        "tag", "Held", "Processed")
    assert accounts(processed_folder="Done").ignored_folder == "Done"
    assert accounts(username="help", own_addresses=["Help@Acme.example"]).unknown_sender == (
        "unknown-sender@acme.example")
    assert accounts(unknown_sender="ignore").unknown_sender == "ignore"
    assert accounts(weak_signals="ignore").weak_signals == "ignore"
    with pytest.raises(ConfigError, match="unknown_sender"):
        accounts(unknown_sender="nobody")
    with pytest.raises(ConfigError, match="weak_signals"):
        accounts(weak_signals="drop")
    with pytest.raises(ConfigError, match="held_folder"):
        accounts(held_folder="INBOX")


def test_the_pipeline_asks_the_store_only_what_the_store_protocol_declares() -> None:
    import ast
    import inspect

    from connector.service import filtering
    from connector.service import pipeline as pipeline_module
    from connector.store.base import Store

    used: set[str] = set()
    for module in (pipeline_module, filtering):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                    and node.value.attr == "store"):
                used.add(node.attr)
    declared = {name for name, _ in inspect.getmembers(Store) if not name.startswith("_")}
    assert used and used <= declared, sorted(used - declared)
    assert "SQLiteStore" not in inspect.getsource(pipeline_module)
