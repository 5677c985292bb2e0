"""State that must survive restarts: the message ledger, Message-ID map, mailbox marks."""

from connector.store.base import MailboxMark, MessageRecord, MessageState, Store
from connector.store.sqlite import SQLiteStore

__all__ = ["MailboxMark", "MessageRecord", "MessageState", "SQLiteStore", "Store"]
