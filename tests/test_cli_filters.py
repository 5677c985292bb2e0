"""`filters check` and `filters test` through the command line, on the demo config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bridge_cli import cli_output as run

from connector.exitcodes import EX_CONFIG

REPO = Path(__file__).resolve().parents[1]


def demo(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    shutil.copytree(REPO / "filters", tmp_path / "filters")
    return tmp_path / "examples" / "demo.yaml"


def test_filters_check_ok_and_with_errors(tmp_path: Path) -> None:
    config = demo(tmp_path)
    code, out = run("--config", str(config), "filters", "check")
    assert code == 0 and out.startswith("OK:")
    bad = tmp_path / "filters" / "99-bad.yaml"
    bad.write_text("- name: broken\n  match:\n    - header: Subject\n"
                   "      regex: '(['\n  set:\n    X-OTOBO-Queeu: Billing\n")
    code, out = run("--config", str(config), "filters", "check")
    assert code == EX_CONFIG
    assert "99-bad.yaml:4:" in out  # the regex that does not compile, by line
    assert "99-bad.yaml:6:" in out and "X-OTOBO-Queue" in out  # the typo, with a did-you-mean


def test_filters_test_json_shows_the_decision_and_changes_nothing(tmp_path: Path) -> None:
    config = demo(tmp_path)
    mail = tmp_path / "examples" / "mail" / "03-invoice-attachment.eml"
    code, out = run("--config", str(config), "filters", "test", str(mail), "--json")
    assert code == 0
    report = json.loads(out)
    text = json.dumps(report)
    assert "has-attachment" in text and "new_ticket" in text
    assert not (tmp_path / "var").exists()  # no ledger written


def test_filters_test_shows_whether_a_staff_command_would_act(tmp_path: Path) -> None:
    # As `run`: the account's authserv_id results authenticate the staff sender; without
    # them the #close# is ordinary mail tagged staff_unverified.
    config = demo(tmp_path)
    text = config.read_text().replace(
        "    filters:\n      filter_dirs: [../filters]",
        "    authserv_id: mx.example.com\n    filters:\n      filter_dirs: [../filters]\n"
        "      staff: ['@example.com']")
    config.write_text(text)
    head = ("From: Anna <anna@example.com>\r\nTo: assistenza@example.com\r\n"
            "Subject: Re: Printer #close#\r\nMessage-ID: <c1@example.com>\r\n")
    for name, extra, expected in (
        ("spoofed", "", "staff_unverified"),
        ("proven", "Authentication-Results: mx.example.com; dkim=pass header.d=example.com\r\n",
         "anna@example.com issued close"),
    ):
        mail = tmp_path / f"{name}.eml"
        mail.write_bytes((extra + head + "\r\nDone.\r\n").encode())
        code, out = run("--config", str(config), "filters", "test", str(mail),
                        "--account", "demo")
        assert code == 0, out
        assert expected in out, out
        assert ("NOT authenticated" in out) is (name == "spoofed"), out
        assert ("staff_unverified" in out) is (name == "spoofed"), out
