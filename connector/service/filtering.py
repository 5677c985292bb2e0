"""Understanding as the service runs it: the rules loaded once from the config, and the
lookups answered from the ledger and the helpdesk."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path

import dkim.dnsplug

from connector.config import Config
from connector.filters import FilterChain, FilterLoadError, FilterSettings, load_chain
from connector.filters.authentication import DnsLookup
from connector.hosts.base import HostAdapter, TicketInfo
from connector.store.base import Store
from connector.understand import Rules


class StoreLookups:
    """What understanding asks, answered from the ledger and the helpdesk (tickets are read
    once per message: ``forget()`` between messages)."""

    def __init__(self, store: Store, host: HostAdapter | None,
                 exclude_id: int | None = None) -> None:
        self.store = store
        self.host = host
        self.exclude_id = exclude_id
        self._tickets: dict[str, TicketInfo | None] = {}

    def for_record(self, record_id: int | None) -> StoreLookups:
        """Counting a sender's mails leaves this record out; the ticket cache starts empty."""
        self.exclude_id = record_id
        self._tickets.clear()
        return self

    # -- the filter stage's questions ------------------------------------------------------
    def is_own_message_id(self, message_id: str) -> bool:
        return self.store.is_own_message_id(message_id)

    def sender_count_on(self, address: str, day: date, *, proven: bool | None = None) -> int:
        return self.store.sender_count_on(address, day, exclude_id=self.exclude_id,
                                          proven=proven)

    def known_ticket_for(self, message_ids: Sequence[str]) -> str | None:
        return self.store.ticket_for_message_ids(message_ids)

    # -- the decide stage's questions ------------------------------------------------------
    def get_ticket(self, ticket_id: str) -> TicketInfo | None:
        if self.host is None:
            return None
        if ticket_id not in self._tickets:
            self._tickets[ticket_id] = self.host.get_ticket(ticket_id)
        return self._tickets[ticket_id]

    def ticket_for_message_ids(self, message_ids: Sequence[str]) -> str | None:
        return self.store.ticket_for_message_ids(message_ids)

    def ticket_for_sent_message_ids(self, message_ids: Sequence[str],
                                    account: str) -> str | None:
        return self.store.ticket_for_sent_message_ids(message_ids, account)

    def user_exists(self, email: str) -> bool:
        return self.host is not None and self.host.user_exists(email)

    def cached(self, ticket_id: str) -> TicketInfo | None:
        """The ticket as read for this message, without asking the host again."""
        return self._tickets.get(ticket_id)


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


def host_check(config: Config):  # noqa: ANN201 - returns the HostCheck callable
    """Checks a filter's set value against what the host can take (``None``: computed value,
    checked per message instead), through the host's vocabulary: the same translation the
    decision and the adapter use."""
    from connector.hosts.vocabulary import vocabulary_for

    vocabulary = vocabulary_for(config.host)

    def accepts(control: str, value: str | None) -> str | None:
        if not vocabulary.keeps_tags and control.lower() == "x-bridge-tags":
            return "the helpdesk keeps no tags: set host.otobo.tags_field to keep them"
        follow_up = "-followup-" in control.lower()
        problems = vocabulary.translate((), [(control, value or "")],
                                        follow_up=follow_up).problems
        return problems[0] if problems else None

    return accepts


def dns_txt(name: bytes, timeout: float = 5) -> bytes | None:
    """DKIM key lookup through DNS (dkimpy's resolver, dnspython)."""
    return dkim.dnsplug.get_txt(name, timeout=timeout)


def load_rules(config: Config, dnsfunc: DnsLookup | None = None) -> Rules:
    """The filter chain, every account's filter settings, the host mappings and the DKIM key
    lookup (``dns_txt`` unless another is given); raises FilterLoadError when a filter file is
    invalid or sets what the host cannot take."""
    _, settings = filter_settings(config)
    chain: FilterChain = load_chain(filter_dirs(config, settings))
    problems = chain.host_errors(host_check(config))
    if problems:
        raise FilterLoadError(problems)
    return Rules(chain, settings, config.host, dnsfunc if dnsfunc is not None else dns_txt)
