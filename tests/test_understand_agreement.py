"""``filters test`` shows what ``run`` does: every mail the project has (tests/data and the
PEC samples in ../shared) goes through ``filters test --json`` and through ``import`` on the
dry-run host, and both must come to the same decision, requester, queue, subject and tags.
Both call connector.understand; this keeps them from drifting apart again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from bridge_cli import cli_output, cli_streams
from shared_material import SHARED_ONLY_PEC_SAMPLES, pec_sample, pec_sample_names

from connector.exitcodes import EX_DATAERR
from connector.fetch.files import iter_files

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
GROUPS = {"Billing": 11, "Sales": 12, "PEC": 13}


def mails() -> Iterator[tuple[str, str]]:
    """(account, mail): every mail file under tests/data on the ordinary account (PEC samples
    there arrive as on an ordinary mailbox), every real PEC sample on the PEC account too."""
    for path in sorted((TESTS / "data").rglob("*")):
        if path.is_file() and path.suffix in (".eml", ".txt", ".msg", ".mbox"):
            yield "support", str(path.relative_to(TESTS / "data"))
    for name in SHARED_ONLY_PEC_SAMPLES:
        yield "support", f"pec-sample:{name}"
    for name in pec_sample_names():
        yield "pec", f"pec-sample:{name}"


def mail_path(mail: str) -> Path:
    if mail.startswith("pec-sample:"):
        return pec_sample(mail.split(":", 1)[1])  # skips when shared material is missing
    return TESTS / "data" / mail


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("agreement")
    (where / "pw").write_text("x\n")
    common = {"protocol": "imap", "host": "127.0.0.1", "security": "none",
              "password_file": str(where / "pw")}
    path = where / "config.yaml"
    path.write_text(yaml.safe_dump({
        "store": {"path": str(where / "never-written.sqlite3")},
        "host": {"type": "dry-run", "groups": GROUPS},
        "filters": {"filter_dirs": [str(ROOT / "filters")],
                    "own_addresses": ["support@example.com"]},
        "accounts": [{"name": "support", "username": "support@example.com", **common},
                     {"name": "pec", "username": "helpdesk@pec.example.it", "pec": True,
                      **common}]}))
    return path


def via_filters_test(config: Path, account: str, mail: Path) -> dict[str, Any] | None:
    code, text = cli_output("-q", "-c", str(config), "filters", "test", str(mail),
                            "--account", account, "--json")
    if code == EX_DATAERR and text.startswith("cannot parse the mail"):
        return None
    assert code == 0, text
    decision = json.loads(text)["decision"]
    requester = decision["requester"]
    if requester and requester.endswith(">"):
        # "x@y <x@y>" (a display name that is the address itself) is shown as via_import
        # shows it: the helpdesk user's name and address are the same then.
        name, _, email = requester[:-1].rpartition(" <")
        requester = email if name.strip('"') == email else requester
    return {"action": decision["action"], "requester": requester,
            "group_id": decision.get("host_fields", {}).get("group_id"),
            "subject": decision["subject"],
            "tags": decision["tags"], "public": decision["public"]}


_OUTCOMES = {"ticketed": "new_ticket", "noted": "internal_note", "followed_up": "follow_up",
             "ignored": "ignore", "held": "hold"}


def via_import(config: Path, account: str, mail: Path) -> dict[str, Any] | None:
    code, out, err = cli_streams("-q", "-c", str(config), "import", "--calls", str(mail),
                                 "--account", account)
    summary_line = next(line for line in err.splitlines()
                        if line.startswith(f"{account}: fetched="))
    summary = dict(part.split("=", 1) for part in summary_line.split(": ", 1)[1].split()
                   if "=" in part)
    if summary["failed"].startswith("1"):
        return None
    assert code == 0, err
    [outcome] = [_OUTCOMES[k.replace("-", "_")] for k, v in summary.items()
                 if k.replace("-", "_") in _OUTCOMES and v.split("(")[0] == "1"]
    calls = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    created = [c["ticket"] for c in calls
               if c["method"] == "POST" and c["path"] == "/api/v2/tickets"]
    if outcome != "new_ticket":
        assert not created
        return {"action": outcome}
    [ticket] = created
    requester = ticket["requester"]
    shown = (f"{requester['name']} <{requester['email']}>"
             if requester["name"] and requester["name"] != requester["email"]
             else requester["email"])
    return {"action": outcome, "requester": shown, "group_id": ticket.get("group_id"),
            "subject": ticket["subject"], "tags": ticket["tags"], "public": ticket["public"]}


CASES = list(mails())


@pytest.mark.parametrize(("account", "mail"), CASES, ids=[f"{a}:{m}" for a, m in CASES])
def test_filters_test_and_import_agree(config: Path, account: str, mail: str,
                                       tmp_path: Path) -> None:
    path = mail_path(mail)
    for number, message in enumerate(iter_files([path])):
        assert message.raw is not None
        one = tmp_path / f"{number}.eml"  # the very bytes import reads (no mbox From_ line)
        one.write_bytes(message.raw)
        shown = via_filters_test(config, account, one)
        done = via_import(config, account, one)
        if shown is None or done is None:
            assert shown is done, f"{path}: one of them could not read the mail"
            continue
        if shown["action"] != "new_ticket":
            shown = {"action": shown["action"]}
        assert done == shown, path


def test_the_pec_filter_fires_in_filters_test_and_in_import(config: Path) -> None:
    sample = pec_sample("aruba-posta-certificata-2014-01.eml")
    shown = via_filters_test(config, "support", sample)
    done = via_import(config, "support", sample)
    assert shown is not None and shown == done
    assert shown["group_id"] == GROUPS["PEC"] and "pec-envelope" in shown["tags"]
    assert not shown["requester"].lower().startswith("per conto di")
