"""README command 1: the demo import reads on one screen, one line per mail; the helpdesk
calls come as JSON lines on stdout only when asked for."""

from __future__ import annotations

import json
from pathlib import Path

from bridge_cli import cli_streams

from connector.exitcodes import EX_OK

REPO = Path(__file__).resolve().parents[1]
DEMO = ["-q", "--config", str(REPO / "examples/demo.yaml"), "import", str(REPO / "examples/mail")]
MAILS = sorted(p.name for p in (REPO / "examples/mail").glob("*.eml"))


def test_the_demo_says_per_mail_what_it_is_what_would_happen_and_why() -> None:
    code, out, err = cli_streams(*DEMO)

    assert (code, out) == (EX_OK, "")
    lines = err.splitlines()
    assert [line.split(":")[0] for line in lines[:len(MAILS)]] == MAILS
    assert lines[0] == ('01-richiesta-assistenza.eml: giulia.bianchi@example.it "Fattura n. '
                        '2024/118: importo IVA errato" -> new ticket #-1 (no existing ticket)')
    assert lines[1].endswith("-> follow-up on #-1 (In-Reply-To/References point at "
                             "ticket #-1)")
    assert "-> new ticket #-2, tags has-attachment (no existing ticket)" in lines[2]
    assert lines[len(MAILS)] == ("demo: fetched=5 ticketed=4 followed-up=1 noted=0 ignored=0 "
                                 "held=0 failed=0 retry=0")
    calls = cli_streams(*DEMO[:-2], "import", "--calls", DEMO[-1])[1].splitlines()
    assert lines[-1] == (f"dry run: nothing was changed; {len(calls)} helpdesk call(s) not made "
                         "(--calls prints them)")
    assert len(lines) == len(MAILS) + 2  # one screen
    assert max(map(len, lines)) <= 160


def test_the_demo_prints_the_calls_as_json_lines_with_calls_or_v() -> None:
    for flag in (["--calls"], ["-v"]):
        argv = DEMO[:-2] + ["import", *flag, DEMO[-1]] if flag == ["--calls"] else \
            [flag[0], *DEMO]
        code, out, err = cli_streams(*argv)
        assert code == EX_OK
        calls = [json.loads(line) for line in out.splitlines()]
        assert len(calls) >= 5 and all(call["dry_run"] is True for call in calls)
        assert f"{len(calls)} helpdesk call(s) not made" in err
        assert [c["ticket"]["subject"] for c in calls if c["path"] == "/api/v2/tickets"] == [
            "Fattura n. 2024/118: importo IVA errato", "Invoice INV-5512 charged twice",
            "Dashboard export fails with error 500", "Cannot reset my password"]
        assert "01-richiesta-assistenza.eml: " in err


def test_the_demo_as_one_json_document() -> None:
    code, out, _ = cli_streams(*DEMO[:-2], "import", "--json", DEMO[-1])

    assert code == EX_OK
    document = json.loads(out)
    assert (document["command"], document["dry_run"], document["exit_code"]) == (
        "import", True, EX_OK)
    assert [Path(m["ref"]).name for m in document["messages"]] == MAILS
    assert [m["outcome"] for m in document["messages"]] == [
        "ticketed", "followed_up", "ticketed", "ticketed", "ticketed"]
    calls = cli_streams(*DEMO[:-2], "import", "--calls", DEMO[-1])[1].splitlines()
    assert [c for m in document["messages"] for c in m["calls"]] == [json.loads(c)
                                                                     for c in calls]
    assert document["counts"]["ticketed"] == 4
