"""Install and uninstall the PEC reply channel in Zendesk: plan the difference, then apply it.

For each outbound-enabled account ``install`` wants:

- a webhook (Webhooks API, ``conditional_ticket_events`` so triggers can call it) posting
  to ``<public_url>/hooks/zendesk/<account>``, signed with ``service.signing_secret``;
- the trigger category "PEC Connector" (shared);
- the trigger "Reply by PEC Connector [<account>]": its only condition is that the ticket's
  tags include the reply tag; its actions call the webhook (JSON body with the ticket id and
  the subject and message templates), remove the reply tag, and add the pending tag (which
  the sweep looks for) and the suppression tag;
- the macro "Reply by PEC (<account>)" adding the reply tag and the suppression tag.

Objects are recognised by a marker in their description (``[managed-by=postmaster-bridge
kind=... account=...]``), or failing that by their exact name, so a second run changes
nothing and a renamed public URL or template becomes an update, not a duplicate.

Zendesk's notification triggers that e-mail the requester would also write to PEC requesters
by ordinary mail. ``install`` lists them; with ``suppress`` it adds the condition "tags do not
include pec_connector" to each. What install created or changed is recorded in the queue's
database, so ``uninstall`` removes exactly that: our webhooks, triggers, macros, the category
if install created it, and the condition it added to others' triggers.

``plan_*`` only read Zendesk; ``apply`` writes. New ids (a webhook created in the same run)
appear in planned bodies as ``{{pmb:...}}`` placeholders and are filled in while applying.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from connector.outbound.queue import OutboundQueue
from connector.outbound.settings import OutboundConfig, OutboundSettings, ServiceSettings
from connector.outbound.zendesk_api import ZendeskOutboundAPI
from connector.outbound.zendesk_install_objects import (
    CATEGORY_PLACEHOLDER,
    KIND_CATEGORY,
    KIND_MACRO,
    KIND_NOTIFICATION,
    KIND_PUBLIC_REPLY,
    KIND_SECRET,
    KIND_TRIGGER,
    KIND_WEBHOOK,
    PLACEHOLDER_RE,
    TRIGGER_KINDS,
    WEBHOOK_NAME_PREFIX,
    desired_macro,
    desired_public_reply_trigger,
    desired_trigger,
    desired_webhook,
    has_condition,
    macro_differences,
    notifies_requester,
    read_marker,
    suppression_condition,
    trigger_differences,
    webhook_differences,
    webhook_placeholder,
    with_condition,
    without_condition,
)

log = logging.getLogger(__name__)

# -- the plan ----------------------------------------------------------------------------------

@dataclass
class Change:
    kind: str
    action: str  # create | update | delete | record_secret | forget_secret | unsuppress
    key: str  # account, category name, or trigger id: the install record's key
    title: str
    remote_id: str | None = None
    body: dict[str, Any] | None = None
    details: tuple[str, ...] = ()

    def line(self) -> str:
        what = f"{self.kind.replace('_', ' ')} {self.title!r}"
        if self.remote_id:
            what += f" (id {self.remote_id})"
        detail = f": {', '.join(self.details)}" if self.details else ""
        return f"{self.action:<8} {what}{detail}"


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.changes

    def describe(self) -> list[str]:
        lines = [c.line() for c in self.changes]
        lines += [f"ok       {text}" for text in self.unchanged]
        lines += [f"warning  {text}" for text in self.warnings]
        return lines


class _Existing:
    """Zendesk's current objects, read once per plan."""

    def __init__(self, api: ZendeskOutboundAPI) -> None:
        self.webhooks = api.webhooks(WEBHOOK_NAME_PREFIX)
        self.categories = api.trigger_categories()
        self.triggers = api.triggers()
        self.macros = api.macros()

    @staticmethod
    def find(items: list[dict[str, Any]], kind: str, account: str | None, name_key: str,
             name: str) -> list[dict[str, Any]]:
        """Our objects for ``account``: by marker first, else by exact name."""
        marked = [i for i in items if read_marker(i.get("description")) == (kind, account)]
        return marked or [i for i in items if i.get(name_key) == name]


def plan_install(api: ZendeskOutboundAPI, config: OutboundConfig, queue: OutboundQueue | None,
                 *, suppress: bool = False) -> Plan:
    service = config.service
    if service is None:
        raise ValueError("install needs the service: section")
    existing = _Existing(api)
    plan = Plan()
    category_id = _plan_category(plan, existing, service)
    later: list[Change] = []
    for settings in config.enabled_accounts:
        webhook_id = _plan_webhook(plan, later, existing, api, queue, settings, service)
        _plan_trigger(plan, later, existing, settings, service, webhook_id, category_id)
        _plan_macro(plan, later, existing, settings, service)
    _plan_notifications(plan, existing, service, suppress)
    plan.changes.extend(later)  # deletions last: the replacements are in place by then
    return plan


def _plan_category(plan: Plan, existing: _Existing, service: ServiceSettings) -> str:
    name = service.category_name
    found = [c for c in existing.categories if c.get("name") == name]
    if found:
        plan.unchanged.append(f"trigger category {name!r} (id {found[0]['id']})")
        return str(found[0]["id"])
    plan.changes.append(Change(KIND_CATEGORY, "create", name, name, body={"name": name}))
    return CATEGORY_PLACEHOLDER


def _plan_webhook(plan: Plan, later: list[Change], existing: _Existing, api: ZendeskOutboundAPI,
                  queue: OutboundQueue | None, settings: OutboundSettings,
                  service: ServiceSettings) -> str:
    wanted = desired_webhook(settings, service)
    name = wanted["name"]
    found = _Existing.find(existing.webhooks, KIND_WEBHOOK, settings.account, "name", name)
    for extra in found[1:]:
        later.append(Change(KIND_WEBHOOK, "delete", settings.account, str(extra.get("name")),
                            str(extra["id"]), details=("duplicate",)))
    create_body = {**wanted, "signing_secret": {"algorithm": "SHA256",
                                                "secret": service.signing_secret}}
    if not found:
        plan.changes.append(Change(KIND_WEBHOOK, "create", settings.account, name,
                                   body=create_body, details=(wanted["endpoint"],)))
        return webhook_placeholder(settings.account)
    current = found[0]
    webhook_id = str(current["id"])
    diffs = webhook_differences(current, wanted)
    if "subscriptions" in diffs:
        # Zendesk cannot change how a webhook is connected: make a new one, move the trigger.
        plan.changes.append(Change(KIND_WEBHOOK, "create", settings.account, name,
                                   body=create_body, details=(f"replaces {webhook_id}, whose "
                                                              "subscriptions cannot change",)))
        later.append(Change(KIND_WEBHOOK, "delete", settings.account, name, webhook_id,
                            details=("replaced",)))
        return webhook_placeholder(settings.account)
    if diffs:
        plan.changes.append(Change(KIND_WEBHOOK, "update", settings.account, name, webhook_id,
                                   body={k: wanted[k] for k in diffs}, details=tuple(diffs)))
    else:
        plan.unchanged.append(f"webhook {name!r} (id {webhook_id})")
    _plan_secret(plan, api, queue, settings, service, webhook_id)
    return webhook_id


def _plan_secret(plan: Plan, api: ZendeskOutboundAPI, queue: OutboundQueue | None,
                 settings: OutboundSettings, service: ServiceSettings, webhook_id: str) -> None:
    secret = api.webhook_signing_secret(webhook_id)
    stored = queue.webhook_secret(settings.account) if queue is not None else None
    if secret is None:
        plan.warnings.append(f"cannot read the signing secret of webhook {webhook_id}; if it "
                             "is not service.signing_secret, deliveries are refused (401)")
        return
    if hmac.compare_digest(secret.encode(), service.signing_secret.encode()):
        if stored is not None:
            plan.changes.append(Change(KIND_SECRET, "forget_secret", settings.account,
                                       settings.account, webhook_id,
                                       details=("the webhook uses service.signing_secret",)))
        return
    if stored is not None and hmac.compare_digest(secret.encode(), stored.encode()):
        return
    plan.changes.append(Change(KIND_SECRET, "record_secret", settings.account, settings.account,
                               webhook_id, details=("the webhook signs with a secret of its "
                                                    "own; the bridge will accept it",)))


def _plan_trigger(plan: Plan, later: list[Change], existing: _Existing,
                  settings: OutboundSettings, service: ServiceSettings, webhook_id: str,
                  category_id: str) -> None:
    wanted = desired_trigger(settings, service, webhook_id, category_id)
    _plan_titled(plan, later, KIND_TRIGGER, existing.triggers, settings.account, wanted,
                 trigger_differences)
    public = desired_public_reply_trigger(settings, service, webhook_id, category_id)
    if settings.public_reply:
        _plan_titled(plan, later, KIND_PUBLIC_REPLY, existing.triggers, settings.account,
                     public, trigger_differences)
        return
    for found in _Existing.find(existing.triggers, KIND_PUBLIC_REPLY, settings.account,
                                "title", public["title"]):
        later.append(Change(KIND_PUBLIC_REPLY, "delete", settings.account,
                            str(found.get("title")), str(found["id"]),
                            details=("outbound.public_reply is off",)))


def _plan_macro(plan: Plan, later: list[Change], existing: _Existing,
                settings: OutboundSettings, service: ServiceSettings) -> None:
    _plan_titled(plan, later, KIND_MACRO, existing.macros, settings.account,
                 desired_macro(settings, service), macro_differences)


def _plan_titled(plan: Plan, later: list[Change], kind: str, items: Any, account: str,
                 wanted: dict[str, Any],
                 differences: Callable[[Any, dict[str, Any]], list[str]]) -> None:
    """Create, update or keep one object found by its title; later copies are deleted."""
    title = wanted["title"]
    found = _Existing.find(items, kind, account, "title", title)
    for extra in found[1:]:
        later.append(Change(kind, "delete", account, str(extra.get("title")),
                            str(extra["id"]), details=("duplicate",)))
    if not found:
        plan.changes.append(Change(kind, "create", account, title, body=wanted))
        return
    diffs = differences(found[0], wanted)
    if diffs:
        plan.changes.append(Change(kind, "update", account, title, str(found[0]["id"]),
                                   body=wanted, details=tuple(diffs)))
    else:
        plan.unchanged.append(f"{kind} {title!r} (id {found[0]['id']})")


def _plan_notifications(plan: Plan, existing: _Existing, service: ServiceSettings,
                        suppress: bool) -> None:
    condition = suppression_condition(service)
    for trigger in existing.triggers:
        if read_marker(trigger.get("description")) is not None or not trigger.get("active"):
            continue
        if not notifies_requester(trigger) or has_condition(trigger, condition):
            continue
        title = str(trigger.get("title"))
        if not suppress:
            plan.warnings.append(
                f"trigger {title!r} (id {trigger['id']}) e-mails the requester, so PEC "
                f"requesters also get ordinary mail; run install --suppress-email-notifications"
                f" to add the condition 'tags do not include {service.suppress_tag}' to it")
            continue
        body = with_condition(trigger, condition)
        plan.changes.append(Change(KIND_NOTIFICATION, "update", str(trigger["id"]), title,
                                   str(trigger["id"]), body=body,
                                   details=(f"add condition: tags do not include "
                                            f"{service.suppress_tag}",)))


def plan_uninstall(api: ZendeskOutboundAPI, config: OutboundConfig,
                   queue: OutboundQueue | None) -> Plan:
    """Remove our objects (by marker, for the configured and recorded accounts), the category
    if install created it, and the suppression condition install added elsewhere."""
    service = config.service
    records = queue.installed() if queue is not None else []
    accounts = {a.account for a in config.accounts}
    accounts |= {r.key for r in records
                 if r.kind in (KIND_WEBHOOK, *TRIGGER_KINDS, KIND_MACRO)}
    existing = _Existing(api)
    plan = Plan()
    ours_in_category: set[str] = set()
    for kind, items, name_key in ((KIND_TRIGGER, existing.triggers, "title"),
                                  (KIND_PUBLIC_REPLY, existing.triggers, "title"),
                                  (KIND_MACRO, existing.macros, "title"),
                                  (KIND_WEBHOOK, existing.webhooks, "name")):
        for item in items:
            mark = read_marker(item.get("description"))
            if mark is None or mark[0] != kind or mark[1] not in accounts:
                continue
            plan.changes.append(Change(kind, "delete", str(mark[1]), str(item.get(name_key)),
                                       str(item["id"])))
            if kind in TRIGGER_KINDS:
                ours_in_category.add(str(item["id"]))
    if queue is not None:
        for record in queue.installed(KIND_SECRET):
            plan.changes.append(Change(KIND_SECRET, "forget_secret", record.key, record.key,
                                       record.remote_id))
    condition = suppression_condition(service) if service is not None else None
    by_id = {str(t.get("id")): t for t in existing.triggers}
    for record in (r for r in records if r.kind == KIND_NOTIFICATION):
        trigger = by_id.get(record.remote_id)
        if trigger is None or condition is None or not has_condition(trigger, condition):
            plan.unchanged.append(f"notification trigger {record.remote_id}: nothing to undo")
            plan.changes.append(Change(KIND_NOTIFICATION, "forget", record.key,
                                       str(trigger.get("title") if trigger else record.key),
                                       record.remote_id))
            continue
        body = without_condition(trigger, condition)
        plan.changes.append(Change(KIND_NOTIFICATION, "unsuppress", record.key,
                                   str(trigger.get("title")), record.remote_id, body=body,
                                   details=("remove the condition install added",)))
    for record in (r for r in records if r.kind == KIND_CATEGORY):
        category = next((c for c in existing.categories
                         if str(c.get("id")) == record.remote_id), None)
        if category is None:
            plan.changes.append(Change(KIND_CATEGORY, "forget", record.key, record.key,
                                       record.remote_id))
            continue
        others = [t for t in existing.triggers if str(t.get("category_id")) == record.remote_id
                  and str(t.get("id")) not in ours_in_category]
        if not record.created:
            plan.unchanged.append(f"trigger category {record.key!r}: it existed before install")
            plan.changes.append(Change(KIND_CATEGORY, "forget", record.key, record.key,
                                       record.remote_id))
        elif others:
            plan.warnings.append(f"trigger category {record.key!r} still holds {len(others)} "
                                 "other trigger(s); left in place")
            plan.changes.append(Change(KIND_CATEGORY, "forget", record.key, record.key,
                                       record.remote_id))
        else:
            plan.changes.append(Change(KIND_CATEGORY, "delete", record.key, record.key,
                                       record.remote_id))
    return plan


# -- applying ----------------------------------------------------------------------------------

def _fill(value: Any, ids: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return PLACEHOLDER_RE.sub(lambda m: ids[m.group(0)], value)
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


def apply(plan: Plan, api: ZendeskOutboundAPI, queue: OutboundQueue | None,
          config: OutboundConfig, out: TextIO) -> None:
    """Carry the plan out in order, recording what was made. Raises HostError on failure
    (what was done until then is recorded; running install again finishes the job)."""
    service = config.service
    ids: dict[str, str] = {}
    record: Callable[..., None] = queue.record_installed if queue is not None else \
        (lambda *a, **k: None)
    for change in plan.changes:
        body = _fill(change.body, ids) if change.body is not None else None
        remote = change.remote_id
        if change.kind == KIND_CATEGORY:
            if change.action == "create":
                created = api.create_trigger_category(change.title)
                ids[CATEGORY_PLACEHOLDER] = remote = str(created["id"])
                record(KIND_CATEGORY, change.key, remote, created=True)
            elif change.action == "delete" and remote:
                api.delete_trigger_category(remote)
            if change.action in ("delete", "forget") and queue is not None:
                queue.forget_installed(KIND_CATEGORY, change.key)
        elif change.kind == KIND_WEBHOOK:
            if change.action == "create":
                created = api.create_webhook(body or {})
                ids[webhook_placeholder(change.key)] = remote = str(created["id"])
                record(KIND_WEBHOOK, change.key, remote, created=True)
                _check_new_secret(api, queue, change.key, remote, service, out)
            elif change.action == "update" and remote:
                api.patch_webhook(remote, body or {})
                record(KIND_WEBHOOK, change.key, remote, created=False)
            elif change.action == "delete" and remote:
                api.delete_webhook(remote)
                if queue is not None and not _replacement(change):
                    queue.forget_installed(KIND_WEBHOOK, change.key)
        elif change.kind in (*TRIGGER_KINDS, KIND_MACRO):
            create, update, delete = (
                (api.create_trigger, api.update_trigger, api.delete_trigger)
                if change.kind in TRIGGER_KINDS else
                (api.create_macro, api.update_macro, api.delete_macro))
            if change.action == "create":
                remote = str(create(body or {}).get("id"))
                record(change.kind, change.key, remote, created=True)
            elif change.action == "update" and remote:
                update(int(remote), body or {})
                record(change.kind, change.key, remote, created=False)
            elif change.action == "delete" and remote:
                delete(int(remote))
                if queue is not None and not _replacement(change):
                    queue.forget_installed(change.kind, change.key)
        elif change.kind == KIND_NOTIFICATION:
            if change.action in ("update", "unsuppress") and remote:
                api.update_trigger(int(remote), body or {})
            if change.action == "update" and remote:
                record(KIND_NOTIFICATION, change.key, remote, created=False)
            elif queue is not None:
                queue.forget_installed(KIND_NOTIFICATION, change.key)
        elif change.kind == KIND_SECRET and queue is not None:
            if change.action == "record_secret" and remote:
                secret = api.webhook_signing_secret(remote)
                if secret:
                    queue.set_webhook_secret(change.key, remote, secret)
                    record(KIND_SECRET, change.key, remote, created=False)
            elif change.action == "forget_secret":
                queue.forget_webhook_secret(change.key)
                queue.forget_installed(KIND_SECRET, change.key)
        print(f"done     {change.line().strip()}" + (f" -> id {remote}" if remote and
                                                     change.action == "create" else ""),
              file=out)


def _replacement(change: Change) -> bool:
    """A delete that clears a duplicate or a replaced object: the record stays (it names the
    object that remains)."""
    return change.details in (("duplicate",), ("replaced",))


def _check_new_secret(api: ZendeskOutboundAPI, queue: OutboundQueue | None, account: str,
                      webhook_id: str, service: ServiceSettings | None, out: TextIO) -> None:
    """Zendesk may ignore the secret we asked for; then the bridge must accept Zendesk's."""
    if service is None:
        return
    secret = api.webhook_signing_secret(webhook_id)
    if secret is None or hmac.compare_digest(secret.encode(), service.signing_secret.encode()):
        return
    if queue is not None:
        queue.set_webhook_secret(account, webhook_id, secret)
        queue.record_installed(KIND_SECRET, account, webhook_id, created=False)
        print(f"note     webhook {webhook_id} signs with a secret Zendesk chose; it is kept in "
              "the store and accepted", file=out)
