"""Fetch stage: read messages from IMAP, POP3 or local files. See ``base`` for the contract.

Every transport that keeps connections to a mail server also goes through ``pacing`` (the
per-server login limiter), reports its connection's state to ``status`` (what ``accounts``
and /metrics show) and waits on sockets with ``wakeup`` (no polling, prompt on shutdown).
"""

from __future__ import annotations

from connector.errors import ConfigError
from connector.fetch.base import (
    KnownRefs,
    ListedMessage,
    Mailbox,
    MailboxSettings,
    MailboxState,
    MessageHandle,
    RemoteMessage,
)


def open_mailbox(settings: MailboxSettings) -> Mailbox:
    """The mailbox for ``settings.protocol`` ('imap', 'pop3' or 'graph'), not yet connected.

    Use it as a context manager (connects and logs in on enter, logs out on exit) or call
    ``connect()`` / ``close()``.
    """
    protocol = settings.protocol.lower()
    if protocol == "imap":
        from connector.fetch.imap import ImapMailbox

        return ImapMailbox(settings)
    if protocol == "pop3":
        from connector.fetch.pop3 import Pop3Mailbox

        return Pop3Mailbox(settings)
    if protocol == "graph":
        from connector.fetch.graph import GraphMailbox

        return GraphMailbox(settings)
    raise ConfigError(
        f"account {settings.name}: unknown mailbox protocol {settings.protocol!r}", key="protocol"
    )


__all__ = [
    "KnownRefs",
    "ListedMessage",
    "Mailbox",
    "MailboxSettings",
    "MailboxState",
    "MessageHandle",
    "RemoteMessage",
    "open_mailbox",
]
