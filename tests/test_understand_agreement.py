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
from bridge_cli import cli_output
from shared_material import PEC_SAMPLES

from connector.fetch.files import iter_files

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
GROUPS = {"Billing": 11, "Sales": 12, "PEC": 13}


def mails() -> Iterator[tuple[str, Path]]:
    for path in sorted((TESTS / "data").rglob("*")):
        if path.is_file() and path.suffix in (".eml", ".txt", ".msg", ".mbox"):
            yield "support", path
    for path in sorted(PEC_SAMPLES.glob("*.eml")):
        yield "support", path  # a PEC envelope or receipt on an ordinary mailbox
        yield "pec", path


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
    if code == 2 and text.startswith("cannot parse the mail"):
        return None
    assert code == 0, text
    decision = json.loads(text)["decision"]
    return {"action": decision["action"], "requester": decision["requester"],
            "group_id": decision["group_id"], "subject": decision["subject"],
            "tags": decision["tags"], "public": decision["public"]}


_OUTCOMES = {"ticketed": "new_ticket", "noted": "internal_note", "followed_up": "follow_up",
             "ignored": "ignore", "held": "hold"}


def via_import(config: Path, account: str, mail: Path) -> dict[str, Any] | None:
    code, text = cli_output("-q", "-c", str(config), "import", str(mail), "--account", account)
    lines = text.splitlines()
    summary = dict(part.split("=", 1) for part in lines[-1].split(": ", 1)[1].split()
                   if "=" in part)
    if summary["failed"].startswith("1"):
        return None
    assert code == 0, text
    [outcome] = [_OUTCOMES[k.replace("-", "_")] for k, v in summary.items()
                 if k.replace("-", "_") in _OUTCOMES and v.split("(")[0] == "1"]
    calls = [json.loads(line) for line in lines[:-1] if line.startswith("{")]
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
    return {"action": outcome, "requester": shown, "group_id": ticket["group_id"],
            "subject": ticket["subject"], "tags": ticket["tags"], "public": ticket["public"]}


CASES = list(mails())


@pytest.mark.parametrize(("account", "path"), CASES,
                         ids=[f"{a}:{p.relative_to(p.parents[1])}" for a, p in CASES])
def test_filters_test_and_import_agree(config: Path, account: str, path: Path,
                                       tmp_path: Path) -> None:
    for number, message in enumerate(iter_files([path])):
        assert message.raw is not None
        mail = tmp_path / f"{number}.eml"  # the very bytes import reads (no mbox From_ line)
        mail.write_bytes(message.raw)
        shown = via_filters_test(config, account, mail)
        done = via_import(config, account, mail)
        if shown is None or done is None:
            assert shown is done, f"{path}: one of them could not read the mail"
            continue
        if shown["action"] != "new_ticket":
            shown = {"action": shown["action"]}
        assert done == shown, path


def test_the_pec_filter_fires_in_filters_test_and_in_import(config: Path) -> None:
    sample = PEC_SAMPLES / "aruba-posta-certificata-2014-01.eml"
    shown = via_filters_test(config, "support", sample)
    done = via_import(config, "support", sample)
    assert shown is not None and shown == done
    assert shown["group_id"] == GROUPS["PEC"] and "pec-envelope" in shown["tags"]
    assert not shown["requester"].lower().startswith("per conto di")
