"""`filters check` and `filters test`: exit codes, file:line errors, human and JSON reports."""

from __future__ import annotations

import io
import json
from pathlib import Path

from connector.config import AccountConfig, HostConfig
from connector.exitcodes import EX_CONFIG, EX_DATAERR
from connector.filters import (
    FilterSettings,
    filters_check,
    filters_test,
    load_chain,
)
from connector.service.filtering import StoreLookups
from connector.store.sqlite import SQLiteStore
from connector.understand import Rules, understand

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "filters"


def test_check_passes_on_the_shipped_files():
    out = io.StringIO()
    assert filters_check([ROOT / "filters"], out=out) == 0
    assert out.getvalue() == "OK: 8 filter(s) in 5 file(s)\n"


def test_check_fails_with_file_and_line(tmp_path):
    bad = tmp_path / "10-bad.yaml"
    bad.write_text("- name: x\n  match:\n    - header: Subject\n      regex: '(oops'\n"
                   "  set: {X-OTOBO-Queu: a}\n")
    out = io.StringIO()
    assert filters_check([tmp_path], out=out) == EX_CONFIG
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"{bad}:4: filter 'x': regex '(oops' does not compile")
    assert lines[1] == (
        f"{bad}:5: filter 'x': unknown control header 'X-OTOBO-Queu' "
        "(did you mean X-OTOBO-Queue?)"
    )
    assert lines[2] == "2 error(s)"


def test_check_reports_host_mapping_errors(tmp_path):
    out = io.StringIO()
    code = filters_check(
        [ROOT / "filters"],
        out=out,
        host_check=lambda control, value: (
            f"queue {value!r} has no group" if control == "X-OTOBO-Queue" and value == "PEC"
            else None
        ),
    )
    assert code == EX_CONFIG
    assert "50-pec-on-ordinary-mailbox.yaml:" in out.getvalue()
    assert "queue 'PEC' has no group" in out.getvalue()


ACCOUNT = AccountConfig(name="support", protocol="imap", host="127.0.0.1", port=143,
                        security="none", username="support@example.com", password="x")
RULES = Rules(load_chain([ROOT / "filters"]), {"support": FilterSettings()},
              HostConfig(type="dry-run", groups={"Billing": 11, "PEC": 12}))


def lookups() -> StoreLookups:
    """An empty ledger and no helpdesk: nothing is known."""
    return StoreLookups(SQLiteStore(":memory:"), None)


def trace_of(raw: bytes) -> dict:
    return dict(understand(raw, ACCOUNT, RULES, lookups(), evaluate_all=True).trace)


def test_test_command_prints_a_human_report_with_the_decision():
    out = io.StringIO()
    raw = (DATA / "route_billing.eml").read_bytes()
    code = filters_test(raw, understand=trace_of, out=out)
    text = out.getvalue()
    assert code == 0
    assert "filter route-billing (" in text and ": MATCHED" in text
    assert "[yes] line 14: recipient is_any_of" in text
    assert "sets X-OTOBO-Queue = Billing" in text
    # evaluate_all: every condition of a failed filter says why
    assert "[no]  line 23: recipient is 'support@example.com'" in text
    assert "[no]  line 25: Subject regex" in text
    assert "X-OTOBO-Queue = Billing   (set by filter:route-billing)" in text
    assert "Decision:\n  action: new_ticket\n" in text
    assert '  controls: {' in text and '"X-OTOBO-Queue": "Billing"' in text
    assert '  host_fields: {"group_id": 11}\n' in text  # as the host (Zendesk) takes it


def test_test_command_json_output_and_stripped_headers():
    raw = (
        b"From: eve@customer.example\r\nTo: support@example.com\r\nSubject: hi\r\n"
        b"X-OTOBO-Queue: VIP\r\n\r\nhello\r\n"
    )
    out = io.StringIO()
    code = filters_test(raw, understand=trace_of, as_json=True, out=out)
    assert code == 0
    data = json.loads(out.getvalue())
    assert data["trace"]["stripped_headers"] == [{"name": "X-OTOBO-Queue", "value": "VIP"}]
    assert data["decision"]["action"] == "new_ticket"
    assert "group_id" not in data["decision"]["host_fields"]
    assert data["decision"]["requester"] == "eve@customer.example"
    assert data["trace"]["requester"] == {"address": "eve@customer.example", "source": "From",
                                          "from": "eve@customer.example"}
    filters = [s for s in data["trace"]["steps"] if s["stage"] == "filter"]
    assert len(filters) == 8 and all(s["matched"] is False for s in filters)


def test_test_command_on_something_that_is_not_a_mail():
    out = io.StringIO()
    code = filters_test(b"", understand=trace_of, out=out)
    assert code == EX_DATAERR
    assert out.getvalue().startswith("cannot parse the mail:")
