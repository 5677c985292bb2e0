"""One control vocabulary, translated by each host (issue 16 "One host interface").

Decide and the requests speak OTOBO's control words (``X-OTOBO-Queue`` ...) and carry the
account's defaults in the same words; each host's pure ``Vocabulary`` says what its API gets
and what it cannot take. The same translation reports problems before a push (decide,
``filters test``, filter checks) and builds what the adapter sends.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from bridge_cli import cli_output

from connector.config import FollowUpPolicy, HostConfig, TicketDefaults, config_from_mapping
from connector.errors import ConfigError
from connector.hosts.otobo_payload import OtoboVocabulary
from connector.hosts.vocabulary import vocabulary_for
from connector.hosts.zendesk_fields import ZendeskVocabulary

ZENDESK = ZendeskVocabulary(groups={"Billing": 99}, custom_fields={"Contract": 555})


def test_zendesk_takes_defaults_then_controls_and_keeps_a_default_it_cannot_replace() -> None:
    defaults = TicketDefaults(group_id=7, priority="normal", status="new", ticket_type="question",
                              custom_fields=((901, True),), brand_id=10,
                              brands={"billing@acme.example": 20})
    done = ZENDESK.translate(defaults.controls("billing@acme.example"), (
        ("X-OTOBO-Queue", "Nowhere"), ("X-OTOBO-Priority", "5 very high"),
        ("X-OTOBO-State", "pending auto close+"), ("X-OTOBO-DynamicField-Contract", "C-1")))
    assert done.fields == {"group_id": 7, "priority": "urgent", "status": "pending",
                           "type": "question", "brand_id": 20,
                           "custom_fields": [{"id": 555, "value": "C-1"},
                                             {"id": 901, "value": True}]}
    assert done.problems == ("queue/group 'Nowhere' is not mapped in host.groups",)


def test_zendesk_names_every_value_it_cannot_take() -> None:
    done = ZENDESK.translate((), (
        ("X-OTRS-Queue", "Billing"), ("X-OTOBO-Priority", "asap"), ("X-OTOBO-State", "limbo"),
        ("X-OTOBO-Type", "Rfc"), ("X-Bridge-Brand", "Acme"),
        ("X-OTOBO-DynamicField-Unknown", "x")))
    assert done.fields == {"group_id": 99}
    assert [p.split(" ", 1)[0] for p in done.problems] == [
        "priority", "state", "type", "brand", "dynamic"]


def test_zendesk_follow_up_reads_the_followup_twins_only() -> None:
    policy = FollowUpPolicy(status="open", priority="high")
    done = ZENDESK.translate(policy.controls(), (
        ("X-OTOBO-FollowUp-State", "closed successful"), ("X-OTOBO-Queue", "Billing"),
        ("X-OTOBO-FollowUp-DynamicField-Contract", "C-2"),
        ("X-OTOBO-FollowUp-DynamicField-Nope", "x")), follow_up=True)
    assert done.fields == {"status": "solved", "priority": "high"}
    assert done.problems == ("dynamic field 'Nope' is not mapped in host.custom_fields",)


def test_otobo_takes_the_words_natively_and_the_accounts_zendesk_words_through_its_tables() -> None:
    otobo = OtoboVocabulary()
    done = otobo.translate(
        TicketDefaults(priority="high", status="open", ticket_type="Incident").controls(None),
        (("X-OTOBO-Queue", "Postmaster::PEC"), ("X-OTOBO-DynamicField-PECIdentificativo", "id1"),
         ("X-OTOBO-SenderType", "customer")))
    assert done.problems == ()
    assert done.fields == {
        "Ticket": {"Queue": "Postmaster::PEC", "Priority": "4 high", "State": "open",
                   "Type": "Incident"},
        "Article": {"SenderType": "customer"},
        "DynamicField": {"PECIdentificativo": "id1"}}
    follow = otobo.translate(FollowUpPolicy(status="solved").controls(),
                             (("X-OTOBO-FollowUp-Priority", "2 low"),), follow_up=True)
    assert follow.fields["Ticket"] == {"State": "closed successful", "Priority": "2 low"}


def test_the_configured_host_picks_the_vocabulary() -> None:
    assert isinstance(vocabulary_for(HostConfig(type="dry-run", groups={"A": 1})),
                      ZendeskVocabulary)
    raw = {"host": _otobo_host(states={"solved": "closed resolved"}),
           "accounts": [_account()]}
    vocabulary = vocabulary_for(config_from_mapping(raw, "c.yaml", Path("."),
                                                    secrets=False).host)
    assert isinstance(vocabulary, OtoboVocabulary)
    assert vocabulary.translate((("X-OTOBO-State", "solved"),), ()).fields["Ticket"] == {
        "State": "closed resolved"}


def test_zendesk_ids_in_an_otobo_accounts_defaults_are_a_config_error() -> None:
    raw = {"host": _otobo_host(),
           "accounts": [_account(new_ticket={"group_id": 360000000001, "priority": "high"})]}
    with pytest.raises(ConfigError) as info:
        config_from_mapping(raw, "c.yaml", Path("."), secrets=False)
    assert str(info.value).count("\n") == 0  # the only problem
    assert "accounts[0].new_ticket.group_id" in str(info.value)
    assert "Zendesk ids mean nothing to OTOBO" in str(info.value)
    raw["host"] = {"type": "zendesk", "url": "https://acme.zendesk.com",
                   "auth": {"type": "api_token", "email": "a@acme.example",
                            "api_token": "${PMB_ZD_TOKEN}"}}
    config_from_mapping(raw, "c.yaml", Path("."), secrets=False)  # Zendesk's own ids


def test_filters_test_shows_the_otobo_request_without_the_agents_password(
        tmp_path: Path) -> None:
    """The request is built without any call: the password may be missing where the filters
    are tried out."""
    config = tmp_path / "config.yaml"
    (tmp_path / "imap-pw").write_text("x")
    config.write_text(yaml.safe_dump({
        "store": {"path": str(tmp_path / "ledger.sqlite3")},
        "host": {"type": "otobo", "url": "http://127.0.0.1:9/otobo/nph-genericinterface.pl/"
                 "Webservice/PostmasterBridge",
                 "otobo": {"user": "bridge", "password_file": str(tmp_path / "absent"),
                           "queue": "Postmaster"}},
        "accounts": [_account(password_file="imap-pw",
                              new_ticket={"priority": "high", "status": "open"})]}))
    mail = tmp_path / "m.eml"
    mail.write_bytes(b"From: Mario <mario@example.it>\r\nTo: support@example.com\r\n"
                     b"Subject: Fattura\r\nMessage-ID: <f1@example.it>\r\n\r\nCiao\r\n")
    code, out = cli_output("--config", str(config), "filters", "test", str(mail), "--json")
    assert code == 0, out
    decision = json.loads(out)["decision"]
    assert decision["defaults"] == {"X-OTOBO-Priority": "high", "X-OTOBO-State": "open"}
    body = decision["host_request"]["body"]
    assert decision["host_request"]["operation"] == "TicketCreate"
    assert (body["Ticket"]["Queue"], body["Ticket"]["Priority"], body["Ticket"]["State"]) == (
        "Postmaster", "4 high", "open")
    assert decision["host_fields"]["Ticket"]["Priority"] == "4 high"


def _otobo_host(**otobo: object) -> dict[str, object]:
    return {"type": "otobo",
            "url": "http://127.0.0.1:9/otobo/nph-genericinterface.pl/Webservice/Bridge",
            "otobo": {"user": "bridge", "password": "${PMB_OTOBO_PW}", **otobo}}


def _account(**extra: object) -> dict[str, object]:
    entry: dict[str, object] = {"name": "support", "protocol": "imap", "host": "127.0.0.1",
                                "security": "none", "username": "support@example.com",
                                "password": "${PMB_IMAP_PW}"}
    if "password_file" in extra:
        entry.pop("password")
    entry.update(extra)
    return entry


def test_filter_checks_ask_the_hosts_vocabulary_and_its_tag_capability() -> None:
    """``filters check`` and ``check``: a set value the host cannot take fails at load time,
    by the translation a push would use; tags are a capability the host declares."""
    from connector.service.filtering import host_check

    otobo = config_from_mapping({"host": _otobo_host(), "accounts": [_account()]}, "c.yaml",
                                Path("."), secrets=False)
    assert "keeps no tags" in (host_check(otobo)("X-Bridge-Tags", "vip") or "")
    assert host_check(otobo)("X-OTOBO-Queue", "Anything::Native") is None
    tagged = config_from_mapping({"host": _otobo_host(tags_field="PMBTags"),
                                  "accounts": [_account()]}, "c.yaml", Path("."), secrets=False)
    assert host_check(tagged)("X-Bridge-Tags", "vip") is None
    zendesk = config_from_mapping({"host": {"type": "dry-run", "groups": {"Billing": 9}},
                                   "accounts": [_account()]}, "c.yaml", Path("."),
                                  secrets=False)
    accepts = host_check(zendesk)
    assert accepts("X-Bridge-Tags", "vip") is None and accepts("X-OTOBO-Queue", "Billing") is None
    assert "not mapped in host.groups" in (accepts("X-OTOBO-Queue", "Sales") or "")
    assert "no helpdesk equivalent" in (accepts("X-OTOBO-FollowUp-Priority", "asap") or "")
    assert accepts("X-OTOBO-Queue", None) is None  # computed per mail: checked then


def test_pec_facts_land_in_the_hosts_fields_and_an_unmapped_one_is_a_problem() -> None:
    """PEC facts travel as X-OTOBO-DynamicField-<configured field> controls: a Zendesk id is
    a custom field, a name Zendesk has no mapping for is named before the push."""
    from dataclasses import replace

    from shared_material import pec_sample

    from connector.config import AccountConfig
    from connector.filters import FilterChain, FilterSettings
    from connector.service.filtering import StoreLookups
    from connector.store.sqlite import SQLiteStore
    from connector.understand import Rules, understand

    account = AccountConfig(name="support", protocol="imap", host="127.0.0.1", port=143,
                            security="none", username="assistenza@pec.example.it",
                            password="x", pec=True,
                            pec_custom_fields={"identificativo": 9001,
                                               "signature": "PECSignature"})
    rules = Rules(FilterChain(()), {"support": FilterSettings()}, HostConfig(type="dry-run"))
    raw = pec_sample("aruba-posta-certificata-2014-01.eml").read_bytes()
    understood = understand(raw, account, rules, StoreLookups(SQLiteStore(":memory:"), None))
    decision = understood.decision
    assert decision.action.value == "new_ticket"
    fields = understood.trace["decision"]["host_fields"]
    assert [f["id"] for f in fields["custom_fields"]] == [9001]
    assert decision.problems == (
        "dynamic field 'PECSignature' is not mapped in host.custom_fields",)
    mapped = replace(rules, host=HostConfig(type="dry-run",
                                            custom_fields={"PECSignature": 9004}))
    again = understand(raw, account, mapped, StoreLookups(SQLiteStore(":memory:"), None))
    assert again.decision.problems == ()
    assert [f["id"] for f in again.trace["decision"]["host_fields"]["custom_fields"]] == [
        9001, 9004]



def test_every_adapter_offers_its_vocabulary_and_one_without_is_no_host_adapter(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``vocabulary`` is part of HostAdapter: every adapter has its host's, the test's
    in-memory host one too, and a class with every call but no vocabulary is no HostAdapter."""
    import io

    from test_pipeline_recovery import MemoryHost

    from connector.hosts.base import HostAdapter
    from connector.hosts.dryrun import DryRunAdapter
    from connector.hosts.factory import make_host
    from connector.hosts.unavailable import UnavailableHost

    monkeypatch.setenv("PMB_ZD_TOKEN", "token-0123456789")
    monkeypatch.setenv("PMB_OTOBO_PW", "password-0123456789")
    monkeypatch.setenv("PMB_IMAP_PW", "password-0123456789")
    zendesk_host = {"type": "zendesk", "url": "https://acme.zendesk.com",
                    "auth": {"type": "api_token", "email": "a@acme.example",
                             "api_token": "${PMB_ZD_TOKEN}"}}
    hosts = {name: make_host(config_from_mapping({"host": host, "accounts": [_account()]},
                                                 "c.yaml", Path(".")).host)
             for name, host in (("zendesk", zendesk_host), ("otobo", _otobo_host()))}
    assert isinstance(hosts["zendesk"].vocabulary, ZendeskVocabulary)
    assert isinstance(hosts["otobo"].vocabulary, OtoboVocabulary)
    for adapter in (*hosts.values(), DryRunAdapter(io.StringIO()), MemoryHost(),
                    UnavailableHost("no secret", ZENDESK)):
        assert isinstance(adapter, HostAdapter), type(adapter).__name__

    class NoVocabulary(UnavailableHost):
        def __init__(self) -> None:
            self.why = "x"

    assert not isinstance(NoVocabulary(), HostAdapter)


def test_otobo_names_the_group_and_brand_it_cannot_take() -> None:
    """X-Bridge-Group/-Brand are Zendesk's; on OTOBO they are a problem, not silently lost."""
    done = OtoboVocabulary().translate((), (("X-OTOBO-Queue", "Postmaster::PEC"),
                                            ("X-Bridge-Group", "Legal"),
                                            ("x-bridge-brand", "7")))
    assert done.fields["Ticket"] == {"Queue": "Postmaster::PEC"}
    assert done.problems == (
        "X-Bridge-Group has no OTOBO/Znuny equivalent (route with X-OTOBO-Queue)",
        "X-Bridge-Brand has no OTOBO/Znuny equivalent (route with X-OTOBO-Queue)")
