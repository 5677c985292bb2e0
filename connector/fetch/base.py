"""What the service sees of a mailbox, whatever the protocol.

One poll of one account, in order::

    with open_mailbox(settings) as mailbox:          # connect() + login; close() at the end
        mailbox.ensure_folders()                      # IMAP: create processed/error folders
        state = mailbox.state()                       # uidvalidity + every ref present
        pending = mailbox.list_new(store.is_known)    # sizes, nothing downloaded yet
        for message in mailbox.fetch(pending):        # downloads in batches
            if message.raw is None:                   # over max_size: never downloaded
                mailbox.mark_failed(message)
                continue
            ...process...
            mailbox.mark_processed(message)           # or mark_failed(message)

Identity: ``ref`` is the stable key of a message inside one account. IMAP:
``"{folder}:{uidvalidity}:{uid}"``, so a UIDVALIDITY change makes every ref new (compare
``state().uidvalidity`` with the one stored to notice it). POP3: the UIDL.

Nothing here deletes by sequence number. Any protocol or connection failure raises
``FetchError``; a refused login raises ``AuthenticationError`` (a ``FetchError``). After a
``FetchError`` the connection is unusable: ``close()`` it and open a new one on the next poll.
Messages yielded before the failure that were not marked stay where they are, so the next
poll lists them again.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from connector.tls import client_context

Security = Literal["tls", "starttls", "none"]

#: What ``list_new`` accepts to tell which refs were already handled: a set of refs or a
#: predicate (e.g. the store's ``is_known(ref)``).
KnownRefs = Callable[[str], bool] | Collection[str]


class MailboxSettings(Protocol):
    """The account settings the fetch stage reads (``config.AccountConfig`` satisfies it).

    ``max_size`` in bytes, 0 for no limit. ``timeout`` in seconds, for connect and each read.
    ``verify_tls`` False accepts any certificate (only for test servers); ``ca_file`` trusts
    that CA bundle instead of the system's. ``tcp_keepalive_seconds``: TCP keepalive probes
    after that much silence (0: off); ``idle_renew_seconds``: IMAP IDLE is ended and renewed
    that often, which also proves the server still answers.
    """

    name: str
    protocol: str
    host: str
    port: int
    security: str
    username: str
    password: str
    ca_file: str | None
    verify_tls: bool
    folder: str
    processed_folder: str
    error_folder: str
    held_folder: str
    ignored_folder: str
    delete_after_processing: bool
    max_size: int
    batch_size: int
    timeout: float
    tcp_keepalive_seconds: float
    idle_renew_seconds: float


@dataclass(frozen=True)
class ListedMessage:
    """A message seen in a listing: identity and size, body not downloaded.

    IMAP fills ``folder``, ``uidvalidity`` and ``uid``; POP3 fills ``uidl``.
    ``too_large`` is ``size > max_size`` (``fetch`` will not download it).
    """

    account: str
    ref: str
    size: int
    too_large: bool = False
    folder: str | None = None
    uidvalidity: int | None = None
    uid: int | None = None
    uidl: str | None = None


@dataclass(frozen=True)
class RemoteMessage:
    """A fetched message. ``raw`` is the exact bytes, or None when it was too large to download.

    Files read by ``connector.fetch.files`` use the same class with ``ref`` naming the file.
    """

    account: str
    ref: str
    size: int
    raw: bytes | None = field(repr=False)
    folder: str | None = None
    uidvalidity: int | None = None
    uid: int | None = None
    uidl: str | None = None

    @property
    def too_large(self) -> bool:
        return self.raw is None

    @classmethod
    def from_listing(cls, listed: ListedMessage, raw: bytes | None) -> RemoteMessage:
        return cls(
            account=listed.account,
            ref=listed.ref,
            size=listed.size,
            raw=raw,
            folder=listed.folder,
            uidvalidity=listed.uidvalidity,
            uid=listed.uid,
            uidl=listed.uidl,
        )


#: Either form identifies a message for ``mark_processed`` / ``mark_failed``.
MessageHandle = ListedMessage | RemoteMessage


@dataclass(frozen=True)
class MailboxState:
    """What the mailbox holds now. ``uidvalidity`` is None for POP3.

    ``refs`` are the refs of every message present (for ``initial_sync: skip_existing``:
    record them all as known without processing).
    """

    account: str
    folder: str | None
    uidvalidity: int | None
    refs: frozenset[str]


@runtime_checkable
class Mailbox(Protocol):
    """One connection to one account's mailbox. Also a context manager (connect/close)."""

    account: str

    @property
    def connected(self) -> bool:
        """True between a successful ``connect()`` and ``close()`` or a lost connection."""

    def connect(self) -> None:
        """Open the connection and log in (IMAP also selects ``settings.folder``)."""

    def close(self) -> None:
        """Log out (POP3: QUIT, which commits deletions). Never raises; safe to repeat."""

    def check(self) -> str:
        """Connect, log in, look at the folder; one human line for ``check`` commands."""

    def has_capability(self, name: str) -> bool:
        """Server capability (IMAP CAPABILITY, POP3 CAPA), e.g. ``"IDLE"``."""

    def ensure_folders(self) -> list[str]:
        """Create the processed/error folders if missing; returns the ones created.

        POP3 has no folders: returns ``[]``.
        """

    def state(self) -> MailboxState:
        """UIDVALIDITY and the refs of every message present now."""

    def list_new(self, known: KnownRefs) -> list[ListedMessage]:
        """Messages whose ref is not ``known``, oldest first, with sizes; nothing downloaded."""

    def fetch(self, messages: Iterable[ListedMessage]) -> Iterator[RemoteMessage]:
        """Download ``messages`` in batches of ``batch_size``, in the order given.

        Too-large ones are yielded with ``raw=None`` without being downloaded; ones that
        vanished from the server meanwhile are skipped. Nothing is marked or flagged (IMAP
        uses BODY.PEEK, so \\Seen stays as it was).
        """

    def mark_processed(self, message: MessageHandle) -> None:
        """IMAP: move to the processed folder (or delete if ``delete_after_processing``).
        POP3: DELE if ``delete_after_processing`` (committed at QUIT), else nothing."""

    def mark_failed(self, message: MessageHandle) -> None:
        """IMAP: move to the error folder. POP3: leave the message on the server."""

    def mark_held(self, message: MessageHandle) -> None:
        """Over the per-sender cap. IMAP: move to the held folder. POP3: leave it there."""

    def mark_ignored(self, message: MessageHandle) -> None:
        """Deliberately not ticketed. IMAP: move to the ignored folder (by default the
        processed one, where delete_after_processing deletes it). POP3: as processed."""

    def __enter__(self) -> Mailbox: ...

    def __exit__(self, *exc: object) -> None: ...


def known_predicate(known: KnownRefs) -> Callable[[str], bool]:
    """Turn a set of refs or a predicate into a predicate."""
    if callable(known):
        return known
    return known.__contains__


def is_too_large(size: int, max_size: int) -> bool:
    """``max_size`` of 0 (or less) means no limit."""
    return max_size > 0 and size > max_size


def make_ssl_context(settings: MailboxSettings) -> ssl.SSLContext:
    """Client TLS context for one connection (connector.tls: verified against the system CAs
    or ``ca_file``, TLS 1.2 at least; ``verify_tls=False`` only as configuration allows, with
    a warning per connection to a non-loopback host)."""
    return client_context(host=settings.host, ca_file=settings.ca_file,
                          verify_tls=settings.verify_tls,
                          who=f"account={settings.name} {settings.protocol}")


#: Keepalive probes once the connection was silent for ``tcp_keepalive_seconds``: this many,
#: this far apart, unanswered, and the kernel reports the connection dead.
KEEPALIVE_PROBES = 3
KEEPALIVE_PROBE_INTERVAL = 10


def enable_keepalive(sock: socket.socket, idle_seconds: float) -> None:
    """TCP keepalive on a mailbox socket: a peer that vanished without a FIN or RST (server
    power loss, a NAT or firewall that forgot the connection) is reported as a socket error
    within ``idle_seconds + 30`` s of silence, instead of never; the probes also keep NAT
    mappings alive. ``TCP_USER_TIMEOUT`` bounds the wait for unacknowledged data the same
    way. Options the platform lacks are skipped."""
    if idle_seconds <= 0:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    options = (("TCP_KEEPIDLE", max(1, int(idle_seconds))),
               ("TCP_KEEPINTVL", KEEPALIVE_PROBE_INTERVAL),
               ("TCP_KEEPCNT", KEEPALIVE_PROBES),
               ("TCP_USER_TIMEOUT",
                int((idle_seconds + KEEPALIVE_PROBES * KEEPALIVE_PROBE_INTERVAL) * 1000)))
    for name, value in options:
        option = getattr(socket, name, None)
        if option is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
            except OSError:
                continue


def describe(settings: MailboxSettings) -> str:
    """``account (user@host:port)`` for messages and logs; never the password."""
    return f"{settings.name} ({settings.username}@{settings.host}:{settings.port})"


def error_text(exc: BaseException) -> str:
    """An exception's text without bytes reprs (imaplib and poplib carry server replies as
    bytes)."""
    parts = [
        arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)
        for arg in exc.args
    ]
    return " ".join(parts) or type(exc).__name__


def connection_failure(exc: BaseException, *, connected: bool) -> str:
    """Why a connection failed, in words: TLS refused, timed out, could not connect, or lost."""
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {error_text(exc)}"
    if isinstance(exc, TimeoutError):
        return f"timed out: {error_text(exc)}"
    if not connected:
        return f"cannot connect: {error_text(exc)}"
    return f"connection lost: {error_text(exc)}"
