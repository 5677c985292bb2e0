"""The command line with OTOBO/Znuny as the host: ``filters test`` and the dry run show the
GenericInterface calls as they would be sent (the filters' X-OTOBO controls landing as native
parameters), ``install --host otobo|znuny`` writes the web service and dynamic fields and prints
the import steps, ``uninstall`` prints how to remove them. The GenericInterface double
(tests/otobo_double.py) answers the reads; nothing is written to it."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from bridge_cli import cli_output as run
from otobo_double import OtoboDouble

REPO = Path(__file__).resolve().parents[1]
ROUTE = """- name: route-invoices
  match:
    - header: Subject
      contains: fattura
  set:
    X-OTOBO-Queue: Postmaster
    X-OTOBO-Priority: 4 high
    X-OTOBO-Service: Contabilita
    X-OTOBO-DynamicField-Contract: C-2026-17
"""


@pytest.fixture(scope="module")
def otobo() -> Iterator[OtoboDouble]:
    with OtoboDouble(Path(os.environ.get("TMPDIR", "/tmp")) / f"otobo-cli-{os.getpid()}.json"
                     ) as double:
        double.reset()
        yield double


def write_config(tmp_path: Path, otobo: OtoboDouble, host_type: str = "otobo",
                 **top: object) -> Path:
    (tmp_path / "filters").mkdir(exist_ok=True)
    (tmp_path / "filters" / "10-route.yaml").write_text(ROUTE)
    (tmp_path / "imap-pw").write_text("x")
    (tmp_path / "secret").write_text("shared-secret-for-otobo-0001")
    host = otobo.host_config(tmp_path / "otobo-pw", tags_field="PMBTags",
                             receipt_state_field="PECReceiptState")
    host["type"] = host_type
    data = {
        "store": {"path": str(tmp_path / "ledger.sqlite3")},
        "host": host,
        "accounts": [{
            "name": "pec-main", "protocol": "imap", "host": "127.0.0.1", "security": "none",
            "username": "assistenza@pec.example.it", "password_file": "imap-pw",
            "own_addresses": ["assistenza@pec.example.it"],
            "pec_custom_fields": {"identificativo": "PECIdentificativo"},
            "filters": {"filter_dirs": ["filters"]},
            "outbound": {"smtp": {"host": "127.0.0.1", "port": 2525, "security": "starttls"}},
        }],
        "service": {"public_url": "https://bridge.example.it", "signing_secret_file": "secret",
                    "host": "127.0.0.1", "port": 0},
        **top,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def mail(tmp_path: Path) -> Path:
    path = tmp_path / "fattura.eml"
    path.write_bytes(b"From: Mario Rossi <mario@example.it>\r\nTo: assistenza@pec.example.it\r\n"
                     b"Subject: Invio fattura 17\r\nMessage-ID: <f17@example.it>\r\n"
                     b"Date: Mon, 1 Dec 2026 10:00:00 +0100\r\n\r\nIn allegato la fattura.\r\n")
    return path


def test_filters_test_shows_the_ticketcreate_with_the_native_controls(
        tmp_path: Path, otobo: OtoboDouble) -> None:
    config = write_config(tmp_path, otobo)
    code, out = run("--config", str(config), "filters", "test", str(mail(tmp_path)), "--json")
    assert code == 0, out
    decision = json.loads(out)["decision"]
    assert decision["action"] == "new_ticket" and "problems" not in decision or \
        not decision.get("problems")
    request = decision["host_request"]
    assert (request["method"], request["path"], request["operation"]) == \
        ("POST", "/Ticket", "TicketCreate")
    body = request["body"]
    assert body["Ticket"]["Queue"] == "Postmaster" and body["Ticket"]["Priority"] == "4 high"
    assert body["Ticket"]["Service"] == "Contabilita"
    assert body["Ticket"]["CustomerUser"] == "mario@example.it"
    assert body["Article"]["CommunicationChannel"] == "Email"
    assert body["Article"]["SenderType"] == "customer"
    assert body["Article"]["Body"]["preview"] == "In allegato la fattura."
    assert {"Name": "Contract", "Value": "C-2026-17"} in body["DynamicField"]
    assert otobo.tickets() == []


def test_dry_run_import_prints_the_genericinterface_calls(tmp_path: Path,
                                                          otobo: OtoboDouble) -> None:
    config = write_config(tmp_path, otobo, host_type="dry-run")
    maildir = tmp_path / "mail"
    maildir.mkdir()
    shutil.copy(mail(tmp_path), maildir / "fattura.eml")
    code, out = run("--config", str(config), "import", "--calls", str(maildir), "--account",
                    "pec-main")
    assert code == 0, out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    create = next(line for line in lines if line.get("operation") == "TicketCreate")
    assert create["path"] == "/Ticket" and create["body"]["Ticket"]["Queue"] == "Postmaster"
    search = next(line for line in lines if line.get("operation") == "TicketSearch")
    assert "DynamicField_PMBMessageID" in search["body"]
    # Every line is an OTOBO call (reads included), none a Zendesk one.
    assert all(line.get("operation") for line in lines), lines
    assert not [line for line in lines if line["path"].startswith("/api/v2")]
    assert otobo.tickets() == []


@pytest.mark.parametrize(("flavor", "console", "invoker"), [
    ("otobo", "bin/otobo.Console.pl", "Generic::PassThrough"),
    ("znuny", "bin/otrs.Console.pl", "Ticket::Generic"),
])
def test_install_writes_the_web_service_and_fields_and_prints_the_steps(
        tmp_path: Path, otobo: OtoboDouble, flavor: str, console: str, invoker: str) -> None:
    config = write_config(tmp_path, otobo)
    out_dir = tmp_path / "ws"
    code, out = run("--config", str(config), "install", "--host", flavor,
                    "--output", str(out_dir))
    assert code == 0, out
    assert f"{console} Admin::WebService::Add --name PostmasterBridge" in out
    assert "shared-secret-for-otobo-0001" not in out  # the secret is in the file only
    ws_file = out_dir / "PostmasterBridge.yml"
    assert ws_file.stat().st_mode & 0o077 == 0
    ws = yaml.safe_load(ws_file.read_text())
    routes = ws["Provider"]["Transport"]["Config"]["RouteOperationMapping"]
    assert routes["TicketSearch"] == {"RequestMethod": ["POST"], "Route": "/TicketSearch"}
    assert routes["TicketUpdate"] == {"RequestMethod": ["PATCH"], "Route": "/Ticket/:TicketID"}
    assert ws["Provider"]["Transport"]["Config"]["MaxLength"] == "100000000"
    invoker_cfg = ws["Requester"]["Invoker"]["PECReply_pec-main"]
    assert invoker_cfg["Type"] == invoker
    [event] = invoker_cfg["Events"]
    assert event["Event"] == "TicketDynamicFieldUpdate_PECReply"
    transport = ws["Requester"]["Transport"]["Config"]
    assert transport["Host"] == "https://bridge.example.it"
    assert transport["InvokerControllerMapping"]["PECReply_pec-main"]["Controller"] == \
        "/hooks/otobo/pec-main"
    assert transport["Authentication"]["BasicAuthPassword"] == "shared-secret-for-otobo-0001"
    fields = yaml.safe_load((out_dir / "dynamic-fields.yml").read_text())["DynamicFields"]
    assert {"PMBMessageID", "PMBArticleKey", "PMBTags", "PECReceiptState",
            "PECIdentificativo", "PECReply"} <= set(fields)
    assert fields["PMBArticleKey"]["ObjectType"] == "Article"
    assert fields["PECReply"]["Config"]["PossibleValues"] == {"pec-main": "pec-main"}

    code, out = run("--config", str(config), "uninstall", "--host", flavor)
    assert code == 0 and f"{console} Admin::WebService::Delete" in out
    assert "PMBMessageID" in out


def test_check_logs_in_as_the_agent(tmp_path: Path, otobo: OtoboDouble) -> None:
    config = write_config(tmp_path, otobo)
    code, out = run("--config", str(config), "check")
    assert "OTOBO/Znuny agent pmb-agent" in out, out
    (tmp_path / "otobo-pw").write_text("wrong\n")
    code, out = run("--config", str(config), "check")
    assert code != 0 and "SessionCreate.AuthFail" in out


def test_run_serves_the_otobo_hook_with_the_configured_secret(tmp_path: Path,
                                                              otobo: OtoboDouble) -> None:
    """``run`` / ``serve`` wire the OTOBO path: the hook resolves the invoker's TicketID
    through TicketGet and queues the ticket by its number."""
    import base64
    import http.client

    from connector.config import load_config
    from connector.hosts.base import NewTicket
    from connector.hosts.otobo import OtoboAdapter
    from connector.outbound.commands import start_outbound

    config = load_config(write_config(tmp_path, otobo))
    number = OtoboAdapter(otobo.settings()).create_ticket(NewTicket(
        subject="s", requester_email="m@example.it", requester_name="m", body_text="b",
        external_id="pmb-serve-1")).id
    internal = otobo.ticket_by_number(number)["TicketID"]
    service = start_outbound(config)
    assert service is not None
    try:
        service.worker.stop_event.set()  # the hook only: nothing is sent in this test
        for secret, expected in (("wrong", 401), ("shared-secret-for-otobo-0001", 202)):
            auth = base64.b64encode(f"otobo:{secret}".encode()).decode()
            conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
            conn.request("POST", "/hooks/otobo/pec-main",
                         body=json.dumps({"Event": "x", "TicketID": internal}),
                         headers={"Authorization": f"Basic {auth}",
                                  "Content-Type": "application/json"})
            assert conn.getresponse().status == expected
            conn.close()
        [job] = service.queue.jobs()
        assert (job.account, job.ticket_id) == ("pec-main", number)
    finally:
        service.stop()
        service.queue.close()


def test_tags_set_by_a_filter_need_a_place_on_otobo(tmp_path: Path, otobo: OtoboDouble) -> None:
    config = write_config(tmp_path, otobo)
    (tmp_path / "filters" / "20-tag.yaml").write_text(
        "- name: tag-it\n  match:\n    - header: Subject\n      contains: x\n"
        "  set:\n    X-Bridge-Tags: vip\n")
    code, out = run("--config", str(config), "filters", "check")
    assert code == 0, out  # tags_field is set: tags are kept
    text = config.read_text().replace("tags_field: PMBTags", "message_id_field: PMBMessageID")
    config.write_text(text)
    code, out = run("--config", str(config), "filters", "check")
    assert code == 78 and "host.otobo.tags_field" in out  # EX_CONFIG: a filter file problem
