"""The OTOBO / Znuny adapter against the GenericInterface double (tests/otobo_double.py, its own
process), which answers as RotherOSS/otobo's operations do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from otobo_double import OtoboDouble

from connector.errors import PermanentHostError, TransientHostError
from connector.hosts.base import Comment, NewTicket, Upload
from connector.hosts.otobo import OtoboAdapter


@pytest.fixture(scope="module")
def otobo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtoboDouble]:
    with OtoboDouble(tmp_path_factory.mktemp("otobo") / "state.json",
                     max_length=400_000, denied_queues=("Junk",)) as double:
        yield double


@pytest.fixture
def otobo(otobo_server: OtoboDouble) -> OtoboDouble:
    otobo_server.reset()
    return otobo_server


def adapter(double: OtoboDouble, **overrides: object) -> OtoboAdapter:
    values: dict[str, object] = {"max_length": 400_000}
    values.update(overrides)
    return OtoboAdapter(double.settings(**values), sleep=lambda _s: None)


def new_ticket(**changes: object) -> NewTicket:
    values: dict[str, object] = {
        "subject": "Richiesta documentazione", "requester_email": "mario@example.it",
        "requester_name": "Mario Rossi", "body_text": "Buongiorno",
        "body_html": "<p>Buongiorno</p>",
        "external_id": "pmb-acct-abc", "to": ("support@example.org",), "cc": ("a@example.it",),
    }
    values.update(changes)
    return NewTicket(**values)  # type: ignore[arg-type]


def test_a_new_ticket_is_a_customer_email_with_its_id_in_a_dynamic_field(
        otobo: OtoboDouble) -> None:
    host = adapter(otobo)
    pdf = Upload("allegato.pdf", "application/pdf", b"%PDF-1.4 x" * 10)
    created = host.create_ticket(new_ticket(uploads=(pdf,)))
    [ticket] = otobo.tickets()
    assert str(created.id) == ticket["TicketNumber"] and not created.replayed
    assert ticket["CustomerUserID"] == "mario@example.it" and ticket["Queue"] == "Raw"
    assert {"Name": "PMBMessageID", "Value": "pmb-acct-abc"} in ticket["DynamicField"]
    [article] = ticket["Article"]
    assert article["CommunicationChannel"] == "Email"
    assert article["SenderType"] == "customer" and article["IsVisibleForCustomer"] == 1
    assert article["From"] == '"Mario Rossi" <mario@example.it>'
    assert article["ContentType"] == "text/html; charset=utf-8"
    assert article["Cc"] == "a@example.it"
    assert article["Attachment"][0]["Filename"] == "allegato.pdf"
    assert article["Attachment"][0]["FilesizeRaw"] == 100


def test_filters_controls_become_native_ticket_parameters(otobo: OtoboDouble) -> None:
    host = adapter(otobo)
    controls = (("X-OTOBO-Queue", "PEC"), ("X-OTOBO-Priority", "5 very high"),
                ("X-OTOBO-Service", "Protocollo"), ("X-OTOBO-DynamicField-Contract", "C-17"),
                ("X-OTOBO-FollowUp-Queue", "Misc"))
    host.create_ticket(new_ticket(controls=controls))
    [ticket] = otobo.tickets()
    assert ticket["Queue"] == "PEC" and ticket["Priority"] == "5 very high"
    assert ticket["Service"] == "Protocollo"
    assert {"Name": "Contract", "Value": "C-17"} in ticket["DynamicField"]


def test_pec_facts_go_into_named_dynamic_fields(otobo: OtoboDouble) -> None:
    host = adapter(otobo)
    host.create_ticket(new_ticket(controls=(
        ("X-OTOBO-DynamicField-PECIdentificativo", "opec21.x@pec.it"),)))
    fields = {f["Name"]: f["Value"] for f in otobo.tickets()[0]["DynamicField"]}
    assert fields == {"PECIdentificativo": "opec21.x@pec.it", "PMBMessageID": "pmb-acct-abc"}


def test_a_refused_create_is_permanent_and_names_the_error_code(otobo: OtoboDouble) -> None:
    host = adapter(otobo, queue="NoSuchQueue")
    with pytest.raises(PermanentHostError, match="TicketCreate.InvalidParameter"):
        host.create_ticket(new_ticket())
    with pytest.raises(PermanentHostError, match="TicketCreate.MissingParameter"):
        adapter(otobo).create_ticket(new_ticket(requester_email=""))
    with pytest.raises(PermanentHostError, match="TicketCreate.AccessDenied"):
        adapter(otobo, queue="Junk").create_ticket(new_ticket())
    assert otobo.tickets() == []


def test_an_expired_session_is_created_again(otobo: OtoboDouble) -> None:
    host = adapter(otobo)
    host.create_ticket(new_ticket(external_id="one"))
    otobo.expire_sessions()
    host.create_ticket(new_ticket(external_id="two"))
    sessions = [r for r in otobo.requests_log() if r["path"].endswith("/Session")]
    assert len(sessions) == 2 and len(otobo.tickets()) == 2


def test_a_wrong_password_is_a_clear_permanent_error(otobo: OtoboDouble) -> None:
    with pytest.raises(PermanentHostError, match="SessionCreate.AuthFail"):
        adapter(otobo, password="wrong").check_credentials()


def test_a_create_stopped_between_ticket_and_article_is_completed_not_duplicated(
        otobo: OtoboDouble) -> None:
    otobo.inject(path_regex=r"/Ticket$", method="POST", between="ticket_and_article")
    host = adapter(otobo)
    created = host.create_ticket(new_ticket())
    [ticket] = otobo.tickets()
    assert created.replayed and str(created.id) == ticket["TicketNumber"]
    [article] = ticket["Article"]
    assert article["SenderType"] == "customer" and article["Subject"] == "Richiesta documentazione"


def test_a_resumed_create_completes_a_ticket_left_without_its_article(
        otobo: OtoboDouble) -> None:
    # OTOBO failed inside the create, and kept failing (the completing update too): the
    # ticket exists, its article not, and the mail waits for a later pass.
    otobo.inject(path_regex=r"/Ticket$", method="POST", between="ticket_and_article", count=-1)
    otobo.inject(path_regex=r"/Ticket/\d+$", method="PATCH", status=503, count=-1)
    with pytest.raises(TransientHostError):
        adapter(otobo, max_attempts=2).create_ticket(new_ticket())
    otobo.clear_faults()
    host = adapter(otobo)
    # What the pipeline's resume asks first: the half-made ticket does not count as created.
    assert host.find_tickets_by_external_id("pmb-acct-abc") == []
    created = host.create_ticket(new_ticket())
    [ticket] = otobo.tickets()
    assert created.replayed and len(ticket["Article"]) == 1
    assert [t.id for t in host.find_tickets_by_external_id("pmb-acct-abc")] == [created.id]


@pytest.mark.parametrize("fault", [{"when": "after", "drop": True},
                                   {"when": "after", "status": 500},
                                   {"when": "before", "status": 503}])
def test_an_ambiguous_create_is_searched_before_it_is_retried(
        otobo: OtoboDouble, fault: dict[str, object]) -> None:
    otobo.inject(path_regex=r"/Ticket$", method="POST", **fault)
    adapter(otobo).create_ticket(new_ticket())
    assert len(otobo.tickets()) == 1
    # A resumed create (a later run) finds the same ticket too.
    again = adapter(otobo).create_ticket(new_ticket())
    assert again.replayed and len(otobo.tickets()) == 1


def test_oversized_attachments_are_reported_in_the_article_not_dropped_silently(
        otobo: OtoboDouble) -> None:
    big = Upload("scansione.tiff", "image/tiff", b"x" * 350_000)
    small = Upload("nota.txt", "text/plain", b"ok")
    adapter(otobo).create_ticket(new_ticket(uploads=(big, small), body_html=None))
    [article] = otobo.tickets()[0]["Article"]
    assert [a["Filename"] for a in article["Attachment"]] == ["nota.txt"]
    assert "scansione.tiff (342 kB)" in article["Body"] and "MaxLength" in article["Body"]


def test_a_request_over_max_length_gets_413_as_a_permanent_error(otobo: OtoboDouble) -> None:
    # The bridge believes the limit is higher than the web service's: OTOBO answers 413.
    host = adapter(otobo, max_length=10_000_000)
    big = Upload("big.bin", "application/octet-stream", b"y" * 400_000)
    with pytest.raises(PermanentHostError, match="413"):
        host.create_ticket(new_ticket(uploads=(big,)))


def test_comments_internal_notes_state_and_dedupe_key(otobo: OtoboDouble) -> None:
    host = adapter(otobo)
    number = host.create_ticket(new_ticket()).id
    host.add_comment(Comment(ticket_id=number, body_text="ricevuta di consegna", public=False,
                             dedupe_key="pmb-r1"))
    host.add_comment(Comment(ticket_id=number, body_text="grazie", public=True,
                             author_email="mario@example.it", author_name="Mario",
                             subject="Re: Richiesta", dedupe_key="pmb-f1",
                             defaults=(("X-OTOBO-FollowUp-State", "open"),),
                             controls=(("X-OTOBO-FollowUp-Priority", "4 high"),)))
    ticket = otobo.ticket_by_number(number)
    note, reply = ticket["Article"][1:]
    assert (note["CommunicationChannel"], note["SenderType"], note["IsVisibleForCustomer"]) == \
        ("Internal", "system", 0)
    assert (reply["CommunicationChannel"], reply["SenderType"], reply["From"]) == \
        ("Email", "customer", '"Mario" <mario@example.it>')
    assert ticket["State"] == "open" and ticket["Priority"] == "4 high"
    assert host.comment_exists(number, "pmb-r1") and host.comment_exists(number, "pmb-f1")
    assert not host.comment_exists(number, "pmb-other")


def test_tickets_are_known_by_number_and_closed_states_are_closed(otobo: OtoboDouble) -> None:
    host = adapter(otobo, tags_field="PMBTags")
    number = host.create_ticket(new_ticket(tags=("pec",))).id
    info = host.get_ticket(number)
    assert info is not None and info.id == number and info.status == "new"
    assert info.requester_email == "mario@example.it" and info.tags == ("pec",)
    host.add_tags(number, ["urgent"])
    host.remove_tags(number, ["pec"])
    assert adapter(otobo, tags_field="PMBTags").get_ticket(number).tags == ("urgent",)  # type: ignore[union-attr]
    otobo.set_state(otobo.tickets()[0]["TicketID"], "closed successful")
    assert adapter(otobo).get_ticket(number).closed  # type: ignore[union-attr]
    assert adapter(otobo).get_ticket(99) is None
    assert [t.id for t in host.find_tickets_by_external_id("pmb-acct-abc")] == [number]
    assert host.find_tickets_by_external_id("nothing") == []
    assert host.user_exists("mario@example.it") and not host.user_exists("new@example.it")


def test_config_reads_an_otobo_host(tmp_path: Path) -> None:
    from connector.config import config_from_mapping

    (tmp_path / "pw").write_text("secret\n")
    cfg = config_from_mapping({
        "accounts": [{"name": "a", "protocol": "imap", "host": "127.0.0.1", "username": "u",
                      "password_file": str(tmp_path / "pw"), "security": "none"}],
        "host": {"type": "otobo",
                 "url": "https://helpdesk.example.org/otobo/nph-genericinterface.pl/"
                        "Webservice/PostmasterBridge",
                 "otobo": {"user": "pmb", "password_file": str(tmp_path / "pw"),
                           "queue": "PEC"}},
    }, "cfg.yaml", tmp_path)
    assert cfg.host.otobo is not None and cfg.host.otobo.password == "secret"
    assert cfg.host.otobo.queue == "PEC"
    # OTOBO's subject references, [Ticket#<number>], unless the account says otherwise.
    import re

    assert re.search(cfg.accounts[0].subject_ticket_pattern,
                     "Re: [Ticket#2026112310000012] Richiesta").group(1) == "2026112310000012"  # type: ignore[union-attr]


def test_unverified_tls_is_refused_for_a_remote_otobo(tmp_path: Path) -> None:
    from connector.config import config_from_mapping
    from connector.errors import ConfigError

    (tmp_path / "pw").write_text("secret\n")
    data = {
        "accounts": [{"name": "a", "protocol": "imap", "host": "127.0.0.1", "username": "u",
                      "password_file": str(tmp_path / "pw"), "security": "none"}],
        "host": {"type": "otobo", "verify_tls": False,
                 "url": "https://helpdesk.example.org/otobo/nph-genericinterface.pl/"
                        "Webservice/PostmasterBridge",
                 "otobo": {"user": "pmb", "password_file": str(tmp_path / "pw")}},
    }
    with pytest.raises(ConfigError, match="verify_tls"):
        config_from_mapping(data, "cfg.yaml", tmp_path)
