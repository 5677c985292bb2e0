"""install / uninstall against an OAS-checked Zendesk fake: idempotent, dry-run, exact undo."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from outbound_oas import BASE, FakeZendesk

from connector.config import Config, HostConfig, StoreConfig
from connector.hosts.zendesk import ApiTokenAuth, ZendeskAdapter, ZendeskSettings
from connector.outbound import zendesk_commands
from connector.outbound.queue import OutboundQueue
from connector.outbound.zendesk_install_objects import read_marker

SECRET = "whsec-install-0123456789"


def notification(title: str, target: str) -> dict[str, Any]:
    return {"title": title, "active": True, "description": "Zendesk default",
            "conditions": {"all": [{"field": "update_type", "operator": "is", "value": "Change"},
                                   {"field": "comment_is_public", "operator": "is",
                                    "value": "true"}], "any": []},
            "actions": [{"field": "notification_user",
                         "value": [target, "[{{ticket.account}}] Re: {{ticket.title}}",
                                   "{{ticket.comments_formatted}}"]}]}


@pytest.fixture
def zendesk() -> Iterator[FakeZendesk]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeZendesk(rsps)
        fake.requester_trigger = fake.add_trigger(  # type: ignore[attr-defined]
            notification("Notify requester and CCs of comment update", "requester_and_ccs"))
        fake.received_trigger = fake.add_trigger(  # type: ignore[attr-defined]
            notification("Notify requester of new proactive ticket", "requester_id"))
        fake.assignee_trigger = fake.add_trigger(  # type: ignore[attr-defined]
            notification("Notify assignee of assignment", "assignee_id"))
        fake.add_trigger({**notification("Old, inactive", "requester_id"), "active": False})
        yield fake


def make_config(tmp_path: Path, *, public_url: str = "https://bridge.example.it",
                subject: str = "{{ticket.title}} [#{{ticket.id}}]") -> Config:
    (tmp_path / "pw").write_text("pw")
    (tmp_path / "secret").write_text(SECRET)
    raw = {
        "accounts": [
            {"name": "pec-main", "username": "assistenza@pec.example.it", "password_file": "pw",
             "outbound": {"provider": "aruba", "subject_template": subject}},
            {"name": "pec-legal", "username": "ufficio@legalmail.it", "password_file": "pw",
             "outbound": {"provider": "legalmail"}},
            {"name": "inbound-only", "username": "x@example.it", "password_file": "pw"},
        ],
        "service": {"public_url": public_url, "signing_secret_file": "secret"},
    }
    return Config(path=tmp_path / "config.yaml", accounts=(),
                  host=HostConfig(type="zendesk", url=BASE),
                  store=StoreConfig(path=tmp_path / "bridge.sqlite3"), raw=raw)


@pytest.fixture
def adapter() -> ZendeskAdapter:
    return ZendeskAdapter(ZendeskSettings(base_url=BASE,
                                          auth=ApiTokenAuth("admin@example.it", "tok"),
                                          max_attempts=2, max_backoff=0.01),
                          sleep=lambda _s: None)


def install(config: Config, adapter: ZendeskAdapter, *, dry_run: bool = False,
            suppress: bool = False) -> tuple[int, str]:
    out = io.StringIO()
    code = zendesk_commands.install(config, dry_run, suppress, out, adapter=adapter)
    return code, out.getvalue()


def uninstall(config: Config, adapter: ZendeskAdapter, *, dry_run: bool = False) -> \
        tuple[int, str]:
    out = io.StringIO()
    code = zendesk_commands.uninstall(config, dry_run, out, adapter=adapter)
    return code, out.getvalue()


def ours(items: dict[Any, dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    found = {}
    for item in items.values():
        mark = read_marker(item.get("description"))
        if mark and mark[0] == kind:
            found[mark[1]] = item
    return found


def test_install_creates_the_channel(tmp_path: Path, zendesk: FakeZendesk,
                                     adapter: ZendeskAdapter) -> None:
    code, out = install(make_config(tmp_path), adapter)
    assert code == 0, out
    (category,) = zendesk.categories.values()
    assert category["name"] == "PEC Connector"

    webhooks = ours(zendesk.webhooks, "webhook")
    assert set(webhooks) == {"pec-main", "pec-legal"}
    hook = webhooks["pec-main"]
    assert hook["endpoint"] == "https://bridge.example.it/hooks/zendesk/pec-main"
    assert (hook["http_method"], hook["request_format"], hook["status"]) == \
        ("POST", "json", "active")
    assert hook["subscriptions"] == ["conditional_ticket_events"]
    assert zendesk.secrets[hook["id"]] == SECRET  # set at creation

    triggers = ours(zendesk.triggers, "trigger")
    trigger = triggers["pec-main"]
    assert trigger["title"] == "Reply by PEC Connector [pec-main]"
    assert trigger["category_id"] == category["id"]
    assert trigger["conditions"] == {"all": [{"field": "current_tags", "operator": "includes",
                                              "value": "pec_connector_reply_pec_main"}],
                                     "any": []}
    call, remove, add = trigger["actions"]
    assert call["field"] == "notification_webhook" and call["value"][0] == hook["id"]
    payload = json.loads(call["value"][1])
    assert payload == {"ticket_id": "{{ticket.id}}", "account": "pec-main", "v": 1,
                       "subject": "{{ticket.title}} [#{{ticket.id}}]",
                       "message": "{{ticket.latest_comment_html}}"}
    assert remove == {"field": "remove_tags", "value": "pec_connector_reply_pec_main"}
    assert add == {"field": "current_tags",
                   "value": "pec_connector_reply_pec_main_pending pec_connector"}

    macros = ours(zendesk.macros, "macro")
    assert macros["pec-main"]["title"] == "Reply by PEC (pec-main)"
    assert macros["pec-main"]["actions"] == [
        {"field": "current_tags", "value": "pec_connector_reply_pec_main pec_connector"}]
    assert "inbound-only" not in macros

    assert "warning  trigger 'Notify requester and CCs of comment update'" in out
    assert "Notify requester of new proactive ticket" in out
    assert "Notify assignee" not in out and "Old, inactive" not in out
    assert "installed: 9 change(s)" in out


def test_install_creates_the_public_reply_trigger(tmp_path: Path, zendesk: FakeZendesk,
                                                  adapter: ZendeskAdapter) -> None:
    """Every public reply an agent writes on a PEC ticket of the account goes out by PEC;
    the bridge's own API updates (customers' follow-ups) never do."""
    code, out = install(make_config(tmp_path), adapter)
    assert code == 0, out
    hook = ours(zendesk.webhooks, "webhook")["pec-main"]
    public = ours(zendesk.triggers, "public_reply_trigger")
    assert set(public) == {"pec-main", "pec-legal"}
    trigger = public["pec-main"]
    assert trigger["title"] == "Public reply by PEC [pec-main]"
    assert trigger["conditions"] == {"all": [
        {"field": "update_type", "operator": "is", "value": "Change"},
        {"field": "comment_is_public", "operator": "is", "value": "true"},
        {"field": "role", "operator": "is", "value": "agent"},
        {"field": "current_via_id", "operator": "is_not", "value": "5"},
        {"field": "current_tags", "operator": "includes", "value": "pmb_pec_main"},
        {"field": "current_tags", "operator": "includes", "value": "pec_connector"},
    ], "any": []}
    call, add = trigger["actions"]
    assert call["field"] == "notification_webhook" and call["value"][0] == hook["id"]
    assert json.loads(call["value"][1])["account"] == "pec-main"
    # The pending tag is what the worker's re-read of the ticket looks for before sending.
    assert add == {"field": "current_tags",
                   "value": "pec_connector_reply_pec_main_pending pec_connector"}


def test_public_reply_off_removes_only_that_trigger(tmp_path: Path, zendesk: FakeZendesk,
                                                    adapter: ZendeskAdapter) -> None:
    install(make_config(tmp_path), adapter)
    config = make_config(tmp_path)
    config.raw["accounts"][0]["outbound"]["public_reply"] = False
    code, out = install(config, adapter)
    assert code == 0, out
    assert "delete   public reply trigger 'Public reply by PEC [pec-main]'" in out
    assert set(ours(zendesk.triggers, "public_reply_trigger")) == {"pec-legal"}
    assert set(ours(zendesk.triggers, "trigger")) == {"pec-main", "pec-legal"}
    assert "nothing to change" in install(config, adapter)[1]


def test_second_install_changes_nothing(tmp_path: Path, zendesk: FakeZendesk,
                                        adapter: ZendeskAdapter) -> None:
    install(make_config(tmp_path), adapter)
    before = len(zendesk.writes())
    code, out = install(make_config(tmp_path), adapter)
    assert code == 0 and "nothing to change" in out
    assert len(zendesk.writes()) == before


def test_dry_run_writes_nothing(tmp_path: Path, zendesk: FakeZendesk,
                                adapter: ZendeskAdapter) -> None:
    code, out = install(make_config(tmp_path), adapter, dry_run=True, suppress=True)
    assert code == 0
    assert zendesk.writes() == []
    assert "create   trigger category 'PEC Connector'" in out
    assert "create   webhook 'postmaster-bridge PEC reply (pec-main)'" in out
    assert "create   trigger 'Reply by PEC Connector [pec-legal]'" in out
    assert "create   macro 'Reply by PEC (pec-main)'" in out
    assert "update   notification trigger 'Notify requester and CCs of comment update'" in out
    assert "create   public reply trigger 'Public reply by PEC [pec-main]'" in out
    assert "dry run: 11 change(s) not made" in out
    assert not (tmp_path / "bridge.sqlite3").exists()  # a dry run creates no store either


def test_changed_settings_become_updates(tmp_path: Path, zendesk: FakeZendesk,
                                         adapter: ZendeskAdapter) -> None:
    install(make_config(tmp_path), adapter)
    before = len(zendesk.writes())
    changed = make_config(tmp_path, public_url="https://pec-bridge.example.it",
                          subject="Re: {{ticket.title}} [#{{ticket.id}}]")
    code, out = install(changed, adapter, dry_run=True)
    assert "update   webhook 'postmaster-bridge PEC reply (pec-main)'" in out
    assert "endpoint" in out and "actions" in out
    assert len(zendesk.writes()) == before
    code, out = install(changed, adapter)
    assert code == 0, out
    writes = [(c.method, c.path) for c in zendesk.writes()[before:]]
    # 2 endpoints; the reply trigger and the public-reply trigger both carry the subject
    assert sorted(m for m, _ in writes) == ["PATCH", "PATCH", "PUT", "PUT"]
    hook = ours(zendesk.webhooks, "webhook")["pec-main"]
    assert hook["endpoint"] == "https://pec-bridge.example.it/hooks/zendesk/pec-main"
    trigger = ours(zendesk.triggers, "trigger")["pec-main"]
    assert json.loads(trigger["actions"][0]["value"][1])["subject"].startswith("Re: ")
    assert len(ours(zendesk.webhooks, "webhook")) == 2  # updated, not duplicated
    assert "nothing to change" in install(changed, adapter)[1]


def test_an_edited_trigger_is_restored(tmp_path: Path, zendesk: FakeZendesk,
                                       adapter: ZendeskAdapter) -> None:
    install(make_config(tmp_path), adapter)
    trigger = ours(zendesk.triggers, "trigger")["pec-main"]
    wanted = copy.deepcopy(trigger["actions"])
    trigger["actions"] = trigger["actions"][:1]  # an admin removed the tag actions
    code, out = install(make_config(tmp_path), adapter)
    assert "update   trigger 'Reply by PEC Connector [pec-main]'" in out and "actions" in out
    assert ours(zendesk.triggers, "trigger")["pec-main"]["actions"] == wanted


def test_webhook_with_wrong_connection_is_replaced(tmp_path: Path, zendesk: FakeZendesk,
                                                   adapter: ZendeskAdapter) -> None:
    install(make_config(tmp_path), adapter)
    old = ours(zendesk.webhooks, "webhook")["pec-main"]
    old["subscriptions"] = ["zen:event-type:ticket.created"]
    code, out = install(make_config(tmp_path), adapter)
    assert code == 0, out
    new = ours(zendesk.webhooks, "webhook")["pec-main"]
    assert new["id"] != old["id"] and old["id"] not in zendesk.webhooks
    trigger = ours(zendesk.triggers, "trigger")["pec-main"]
    assert trigger["actions"][0]["value"][0] == new["id"]


def test_suppression_and_exact_uninstall(tmp_path: Path, zendesk: FakeZendesk,
                                         adapter: ZendeskAdapter) -> None:
    originals = copy.deepcopy(zendesk.triggers)
    config = make_config(tmp_path)
    code, out = install(config, adapter, suppress=True)
    assert code == 0 and "warning  trigger" not in out
    condition = {"field": "current_tags", "operator": "not_includes", "value": "pec_connector"}
    for tid in (zendesk.requester_trigger, zendesk.received_trigger):  # type: ignore[attr-defined]
        conditions = zendesk.triggers[tid]["conditions"]
        assert conditions["all"][-1] == condition
        assert conditions["all"][:-1] == originals[tid]["conditions"]["all"]
        assert zendesk.triggers[tid]["actions"] == originals[tid]["actions"]
    assert zendesk.triggers[zendesk.assignee_trigger] == \
        originals[zendesk.assignee_trigger]  # type: ignore[attr-defined]
    assert "nothing to change" in install(config, adapter, suppress=True)[1]

    code, out = uninstall(config, adapter, dry_run=True)
    assert "delete   trigger 'Reply by PEC Connector [pec-main]'" in out
    assert "unsuppress notification trigger" in out
    assert ours(zendesk.triggers, "trigger")

    code, out = uninstall(config, adapter)
    assert code == 0, out
    assert ours(zendesk.triggers, "trigger") == {} and ours(zendesk.macros, "macro") == {}
    assert ours(zendesk.webhooks, "webhook") == {} and zendesk.categories == {}
    for tid, original in originals.items():
        assert zendesk.triggers[tid]["conditions"] == original["conditions"]
    assert OutboundQueue(tmp_path / "bridge.sqlite3").installed() == []
    assert "nothing to remove" in uninstall(config, adapter)[1]


def test_a_category_that_existed_is_kept(tmp_path: Path, zendesk: FakeZendesk,
                                         adapter: ZendeskAdapter) -> None:
    zendesk.categories["77"] = {"id": "77", "name": "PEC Connector", "position": 0,
                                "created_at": "2024-01-01T00:00:00Z",
                                "updated_at": "2024-01-01T00:00:00Z"}
    config = make_config(tmp_path)
    install(config, adapter)
    assert all(t["category_id"] == "77" for t in ours(zendesk.triggers, "trigger").values())
    uninstall(config, adapter)
    assert "77" in zendesk.categories


def test_a_secret_zendesk_chose_is_recorded_and_accepted(tmp_path: Path, zendesk: FakeZendesk,
                                                         adapter: ZendeskAdapter) -> None:
    zendesk.own_secret = "zendesk-picked-this-one"
    config = make_config(tmp_path)
    code, out = install(config, adapter)
    assert code == 0 and "signs with a secret Zendesk chose" in out
    queue = OutboundQueue(tmp_path / "bridge.sqlite3")
    assert queue.webhook_secret("pec-main") == "zendesk-picked-this-one"
    assert "nothing to change" in install(config, adapter)[1]
    uninstall(config, adapter)
    assert queue.webhook_secret("pec-main") is None


def test_zendesk_errors_fail_the_command(tmp_path: Path, zendesk: FakeZendesk,
                                         adapter: ZendeskAdapter) -> None:
    zendesk.fail_next("POST", r"/api/v2/trigger_categories$", 403,
                      {"errors": [{"code": "TriggerCategoriesNotEnabled",
                                   "title": "Ticket trigger categories are not enabled"}]})
    code, out = install(make_config(tmp_path), adapter)
    assert code == 1 and "TriggerCategoriesNotEnabled" in out
