"""The filter stage as the pipeline uses it: chain and settings loaded once, lookups on the
store, the outcome translated into the decide stage's FilterVerdict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dkim.dnsplug

from connector.config import AccountConfig, Config
from connector.decide import FilterVerdict
from connector.filters import (
    BounceDetails,
    CommandDetails,
    FilterChain,
    FilterLoadError,
    FilterOutcome,
    FilterSettings,
    Kind,
    load_chain,
    run_filters,
)
from connector.filters.authentication import DnsLookup, authenticate_sender
from connector.mail.model import ParsedMessage
from connector.store.sqlite import SQLiteStore


class StoreFilterLookups:
    """FilterLookups answered from the ledger."""

    def __init__(self, store: SQLiteStore, exclude_id: int | None = None) -> None:
        self.store = store
        self.exclude_id = exclude_id

    def is_own_message_id(self, message_id: str) -> bool:
        return self.store.is_own_message_id(message_id)

    def sender_count_today(self, address: str) -> int:
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return self.store.sender_count_since(address, midnight, exclude_id=self.exclude_id)

    def known_ticket_for(self, message_ids: Sequence[str]) -> int | None:
        return self.store.ticket_for_message_ids(message_ids)


def filter_settings(config: Config) -> tuple[FilterSettings, dict[str, FilterSettings]]:
    """Global ``filters:`` settings and each account's (inheriting the global ones)."""
    where = str(config.path)
    base = FilterSettings.from_mapping(config.raw.get("filters"), path=where, key="filters")
    per_account: dict[str, FilterSettings] = {}
    for index, account in enumerate(config.accounts):
        raw_account = config.raw["accounts"][index]
        settings = FilterSettings.from_mapping(raw_account.get("filters"), path=where,
                                               key=f"accounts[{index}].filters", base=base)
        own = settings.own_addresses | set(account.own_addresses) | {account.username.lower()}
        per_account[account.name] = replace(settings, own_addresses=frozenset(own))
    return base, per_account


def filter_dirs(config: Config, settings: dict[str, FilterSettings]) -> list[Path]:
    dirs: list[Path] = []
    for each in settings.values():
        for directory in each.filter_dirs:  # already resolved against the config's folder
            path = directory.resolve()
            if path not in dirs:
                dirs.append(path)
    return dirs


def to_verdict(outcome: FilterOutcome) -> FilterVerdict:
    """The filter outcome in the terms of the decide stage."""
    classification = outcome.classification
    kind: str | None = None
    note: str | None = None
    hint: int | None = None
    if classification is not None:
        kind = str(classification.kind)
        note = classification.reason
        details = classification.details
        if isinstance(details, BounceDetails):
            note = details.note()
            hint = details.ticket_id
        elif isinstance(details, CommandDetails):
            # The first command decides the comment kind; "unsubscribe" is a tag.
            if "close" in details.commands:
                kind = "command:close"
            elif "tech" in details.commands:
                kind = "command:tech"
            else:
                kind = None
        elif classification.kind is Kind.FORWARDED:
            kind = None  # the forwarded original is ticketed like any new mail
        elif getattr(details, "thread_ticket_id", None):
            hint = details.thread_ticket_id  # type: ignore[union-attr]
    message = outcome.effective_message
    return FilterVerdict(
        controls=dict(outcome.controls),
        add_tags=outcome.add_tags,
        remove_tags=outcome.remove_tags,
        classification=kind,
        note=note,
        ticket_hint=hint,
        message=message if message is not outcome.message else None,
    )


def host_check(config: Config):  # noqa: ANN201 - returns the HostCheck callable
    """Checks a filter's set value against what the host can take (``None``: computed value,
    checked per message instead)."""
    from connector.decide.decision import map_priority, map_state

    groups = config.host.groups
    fields = config.host.custom_fields

    def accepts(control: str, value: str | None) -> str | None:
        name = control.lower()
        for prefix in ("x-otobo-", "x-otrs-", "x-bridge-"):
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        if name.startswith("dynamicfield-") or name.startswith("followup-dynamicfield-"):
            field_name = control.split("DynamicField-", 1)[-1]
            if field_name not in fields:
                return (f"dynamic field {field_name!r} is not mapped to a custom field id in "
                        "host.custom_fields")
            return None
        if value is None:
            return None
        if name in ("queue", "group") and not value.isdigit() and value not in groups:
            return f"queue/group {value!r} is not mapped to a group id in host.groups"
        if name in ("priority", "followup-priority") and map_priority(value) is None:
            return f"priority {value!r} has no helpdesk equivalent (low, normal, high, urgent)"
        if name in ("state", "followup-state") and map_state(value) is None:
            return f"state {value!r} has no helpdesk equivalent"
        if name == "type" and value.lower() not in ("problem", "incident", "question", "task"):
            return f"type {value!r} has no helpdesk equivalent (problem, incident, question, task)"
        return None

    return accepts


def dns_txt(name: bytes, timeout: float = 5) -> bytes | None:
    """DKIM key lookup through DNS (dkimpy's resolver, dnspython)."""
    return dkim.dnsplug.get_txt(name, timeout=timeout)


class FilterStage:
    """Callable the pipeline runs for each message.

    The sender is authenticated once per mail before the filters run. The bridge checks a
    DKIM signature itself (a DNS query) only for a staff address the account's MTA results
    do not already prove: only staff mail acts in its sender's name."""

    def __init__(self, config: Config, store: SQLiteStore,
                 dnsfunc: DnsLookup | None = None) -> None:
        self.dnsfunc: DnsLookup = dnsfunc if dnsfunc is not None else dns_txt
        self.store = store
        self.global_settings, self.settings = filter_settings(config)
        self.chain: FilterChain = load_chain(filter_dirs(config, self.settings))
        problems = self.chain.host_errors(host_check(config))
        if problems:
            raise FilterLoadError(problems)

    def __call__(self, message: ParsedMessage, account: AccountConfig,
                 record_id: int | None = None) -> tuple[FilterVerdict, dict[str, Any]]:
        settings = self.settings[account.name]
        sender = message.from_.email if message.from_ else None
        check_dkim = account.verify_dkim and settings.is_staff(sender)
        authentication = authenticate_sender(
            message, trusted=account.trusted, authserv_ids=account.authserv_ids,
            dnsfunc=self.dnsfunc if check_dkim else None)
        outcome = run_filters(message, account=account.name, trusted=account.trusted,
                              chain=self.chain, settings=settings,
                              lookups=StoreFilterLookups(self.store, record_id),
                              authentication=authentication)
        return to_verdict(outcome), dict(outcome.trace)


def make_filter_stage(config: Config, store: SQLiteStore,
                      dnsfunc: DnsLookup | None = None) -> FilterStage:
    return FilterStage(config, store, dnsfunc)
