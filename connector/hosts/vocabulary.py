"""The control vocabulary of the configured host, for the pure stages (no I/O imported)."""

from __future__ import annotations

from connector.config import HostConfig
from connector.hosts.base import Vocabulary


def vocabulary_for(host: HostConfig) -> Vocabulary:
    """OTOBO/Znuny's when the host is one (or a dry run reading one), else Zendesk's (a dry
    run without a helpdesk shows Zendesk's calls)."""
    if host.otobo is not None:
        from connector.hosts.otobo_payload import (
            DEFAULT_PRIORITIES,
            DEFAULT_STATES,
            OtoboVocabulary,
        )

        return OtoboVocabulary({**DEFAULT_STATES, **host.otobo.states},
                               {**DEFAULT_PRIORITIES, **host.otobo.priorities},
                               keeps_tags=bool(host.otobo.tags_field))
    from connector.hosts.zendesk_fields import ZendeskVocabulary

    return ZendeskVocabulary(host.groups, host.custom_fields)
