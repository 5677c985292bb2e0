"""POP3 mailbox (poplib): UIDL identifies messages, LIST gives sizes, RETR downloads, DELE
(only with ``delete_after_processing``) takes effect at QUIT."""

from __future__ import annotations

import base64
import contextlib
import logging
import poplib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from connector.errors import AuthenticationError, ConfigError, FetchError
from connector.fetch.base import (
    KnownRefs,
    ListedMessage,
    MailboxSettings,
    MailboxState,
    MessageHandle,
    RemoteMessage,
    connection_failure,
    describe,
    enable_keepalive,
    error_text,
    is_too_large,
    known_predicate,
    make_ssl_context,
)

log = logging.getLogger(__name__)

CRLF = b"\r\n"


class _LongLines:
    """poplib refuses lines over 2048 bytes (``poplib._MAXLINE``, module-wide); real mail has
    longer ones (unwrapped HTML). We only RETR messages within ``max_size``, so no line can be
    longer than that: the limit becomes ``max_size`` (None: no limit) for this connection only.
    """

    max_line: int | None = None

    def _getline(self) -> tuple[bytes, int]:
        limit = self.max_line
        line = self.file.readline(-1 if limit is None else limit + 1)
        if limit is not None and len(line) > limit:
            raise poplib.error_proto("line too long")
        if not line:
            raise poplib.error_proto("-ERR EOF")
        octets = len(line)
        # Same line-end handling as poplib: CRLF, bare LF, or CR...LF.
        if line[-2:] == CRLF:
            return line[:-2], octets
        if line[:1] == b"\r":
            return line[1:-1], octets
        return line[:-1], octets


class _POP3(_LongLines, poplib.POP3):
    pass


class _POP3_SSL(_LongLines, poplib.POP3_SSL):
    pass


@dataclass(frozen=True)
class _Entry:
    number: int
    uidl: str
    size: int


class Pop3Mailbox:
    """One POP3 account. The maildrop is a snapshot per session: new mail shows up on the next
    connection. ``ref`` is the UIDL."""

    def __init__(self, settings: MailboxSettings) -> None:
        self.settings = settings
        self.account = settings.name
        self._conn: poplib.POP3 | None = None
        self._entries: dict[str, _Entry] | None = None
        self._deleted: set[str] = set()
        self._capabilities: dict[str, list[str]] | None = None

    # -- connection ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def connect(self) -> None:
        if self._conn is not None:
            return
        s = self.settings
        if s.security not in ("tls", "starttls", "none"):
            raise ConfigError(f"account {s.name}: unknown security {s.security!r}", key="security")
        try:
            with self._errors("connect"):
                conn = self._conn = self._open()
                self._login(conn)
        except BaseException:
            self._drop()
            raise
        self._entries = None
        self._deleted = set()
        log.debug("pop3 connected account=%s", self.account)

    def _open(self) -> poplib.POP3:
        """TCP (and TLS) up to the greeting, with keepalive on the socket; not logged in."""
        s = self.settings
        context = make_ssl_context(s) if s.security != "none" else None
        if s.security == "tls":
            conn: poplib.POP3 = _POP3_SSL(s.host, s.port, context=context, timeout=s.timeout)
        else:
            conn = _POP3(s.host, s.port, timeout=s.timeout)
        enable_keepalive(conn.sock, s.tcp_keepalive_seconds)
        conn.max_line = max(s.max_size + 2, 4096) if s.max_size > 0 else None
        if s.security == "starttls":
            try:
                conn.stls(context)
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.close()
                raise
        return conn

    def _login(self, conn: poplib.POP3) -> None:
        """USER/PASS, or AUTH OAUTHBEARER/XOAUTH2 with the account's token (refreshed and
        tried once more when refused)."""
        s = self.settings
        if getattr(s, "auth", "password") != "oauth2":
            try:
                conn.user(s.username)
                conn.pass_(s.password)
            except poplib.error_proto as exc:
                if _is_server_reply(exc):
                    raise AuthenticationError(
                        f"{describe(s)}: login refused: {error_text(exc)}") from None
                raise
            return
        from connector.auth import sasl
        from connector.auth.login import login_with_token

        oauth2 = s.oauth2  # type: ignore[attr-defined]
        try:
            capabilities = conn.capa()
        except poplib.error_proto:
            capabilities = {}
        # RFC 2449 lets a server leave SASL out of CAPA; Exchange's XOAUTH2 is the best guess.
        announced = capabilities.get("SASL") or [sasl.XOAUTH2]
        mechanism = sasl.choose_mechanism(announced, oauth2.mechanism, describe(s))

        def attempt(token: Any) -> None:
            response = sasl.initial_response(mechanism, s.username, token.value, s.host, s.port)
            try:
                pop3_sasl_login(conn, mechanism, response, sasl.ABORT_RESPONSE[mechanism])
            except poplib.error_proto as exc:
                if not _is_server_reply(exc):
                    raise
                raise AuthenticationError(f"{describe(s)}: {mechanism} login refused: "
                                          f"{error_text(exc)}") from None

        login_with_token(oauth2, attempt, describe(s))

    def close(self) -> None:
        """QUIT: the server commits the DELEs of this session now."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.quit()
        except Exception:  # closing a broken connection must not raise
            with contextlib.suppress(Exception):
                conn.close()
        if self._deleted:
            log.info(
                "pop3 committed deletions account=%s count=%d", self.account, len(self._deleted)
            )

    def __enter__(self) -> Pop3Mailbox:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self) -> str:
        self.connect()
        conn = self._require_conn()
        with self._errors("check"):
            count, octets = conn.stat()
        return f"POP3 {describe(self.settings)}: OK, {count} messages ({octets} bytes)"

    def has_capability(self, name: str) -> bool:
        conn = self._require_conn()
        if self._capabilities is None:
            try:
                with self._errors("capa"):
                    self._capabilities = conn.capa()
            except FetchError:
                if self._conn is None:
                    raise
                self._capabilities = {}  # server without CAPA
        return name.upper() in {key.upper() for key in self._capabilities}

    def ensure_folders(self) -> list[str]:
        return []

    # -- listing ---------------------------------------------------------------------------

    def state(self) -> MailboxState:
        entries = self._listing()
        return MailboxState(
            account=self.account,
            folder=None,
            uidvalidity=None,
            refs=frozenset(uidl for uidl in entries if uidl not in self._deleted),
        )

    def list_new(self, known: KnownRefs) -> list[ListedMessage]:
        """Messages whose UIDL is not known, in maildrop order, with LIST sizes."""
        is_known = known_predicate(known)
        return [
            ListedMessage(
                account=self.account,
                ref=entry.uidl,
                size=entry.size,
                too_large=is_too_large(entry.size, self.settings.max_size),
                uidl=entry.uidl,
            )
            for entry in sorted(self._listing().values(), key=lambda e: e.number)
            if entry.uidl not in self._deleted and not is_known(entry.uidl)
        ]

    def fetch(self, messages: Iterable[ListedMessage]) -> Iterator[RemoteMessage]:
        """RETR each message in turn (POP3 has no batched download); too-large ones are
        yielded with ``raw=None`` and never retrieved."""
        conn = self._require_conn()
        for listed in messages:
            entry = self._entry(listed)
            if listed.too_large:
                log.info(
                    "pop3 message too large account=%s ref=%s size=%d max_size=%d",
                    self.account,
                    listed.ref,
                    listed.size,
                    self.settings.max_size,
                )
                yield RemoteMessage.from_listing(listed, None)
                continue
            with self._errors(f"retr {listed.ref}"):
                _resp, lines, _octets = conn.retr(entry.number)
            # poplib strips line ends and dot-stuffing; put CRLF back after every line.
            raw = CRLF.join(lines) + CRLF if lines else b""
            yield RemoteMessage.from_listing(listed, raw)

    # -- marking ---------------------------------------------------------------------------

    def mark_processed(self, message: MessageHandle) -> None:
        """DELE when ``delete_after_processing``; the deletion is committed at QUIT
        (``close()``). Otherwise the message stays and the store remembers its UIDL."""
        entry = self._entry(message)
        if not self.settings.delete_after_processing:
            return
        conn = self._require_conn()
        with self._errors(f"dele {message.ref}"):
            conn.dele(entry.number)
        self._deleted.add(entry.uidl)
        log.debug("pop3 marked for deletion account=%s ref=%s", self.account, message.ref)

    def mark_failed(self, message: MessageHandle) -> None:
        """POP3 has no error folder: the message stays on the server."""
        self._entry(message)

    def mark_held(self, message: MessageHandle) -> None:
        """POP3 has no held folder: the message stays on the server (`held release` works
        from the ledger's copy)."""
        self._entry(message)

    def mark_ignored(self, message: MessageHandle) -> None:
        """As processed: deleted with delete_after_processing, else left and remembered."""
        self.mark_processed(message)

    # -- helpers ---------------------------------------------------------------------------

    def _listing(self) -> dict[str, _Entry]:
        """UIDL + LIST once per session (message numbers are fixed within a session)."""
        if self._entries is not None:
            return self._entries
        conn = self._require_conn()
        with self._errors("uidl"):
            _resp, uidl_lines, _ = conn.uidl()
        with self._errors("list"):
            _resp, list_lines, _ = conn.list()
        sizes = {}
        for line in list_lines:
            number, size = line.split()[:2]
            sizes[int(number)] = int(size)
        entries = {}
        for line in uidl_lines:
            number_text, uidl_bytes = line.split()[:2]
            number = int(number_text)
            uidl = uidl_bytes.decode("ascii", "replace")
            if number in sizes:
                entries[uidl] = _Entry(number=number, uidl=uidl, size=sizes[number])
        self._entries = entries
        return entries

    def _entry(self, message: MessageHandle) -> _Entry:
        if message.uidl is None or message.account != self.account:
            raise FetchError(f"{self.account}: {message.ref} is not a message of this mailbox")
        entry = self._listing().get(message.uidl)
        if entry is None or message.uidl in self._deleted:
            raise FetchError(f"{self.account}: {message.ref} is not in this POP3 session")
        return entry

    def _require_conn(self) -> poplib.POP3:
        if self._conn is None:
            raise FetchError(f"{describe(self.settings)}: not connected")
        return self._conn

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Library and socket errors become FetchError. A ``-ERR`` reply leaves the session
        usable; anything else (EOF, timeout, TLS failure) drops it (uncommitted DELEs are then
        rolled back by the server, as POP3 specifies)."""
        try:
            yield
        except FetchError:
            raise
        except poplib.error_proto as exc:
            if not _is_server_reply(exc):
                self._drop()
                raise FetchError(
                    f"{describe(self.settings)}: {action}: connection lost: {error_text(exc)}"
                ) from exc
            raise FetchError(f"{describe(self.settings)}: {action}: {error_text(exc)}") from exc
        except OSError as exc:
            reason = connection_failure(exc, connected=self._conn is not None)
            self._drop()
            raise FetchError(f"{describe(self.settings)}: {action}: {reason}") from exc

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._entries = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def pop3_sasl_login(conn: poplib.POP3, mechanism: str, response: bytes, abort: bytes) -> None:
    """RFC 5034 AUTH: ``AUTH <mechanism>``, the server's ``+`` continuation, the base64
    response. A second ``+`` carries the server's error status for a refused token; answering
    ``abort`` makes it send its -ERR (raised as error_proto). poplib has no AUTH command."""
    conn._putcmd(f"AUTH {mechanism}")
    conn._getresp()  # "+ " (a -ERR, e.g. an unknown mechanism, raises)
    conn._putline(base64.b64encode(response))
    reply = conn._getresp()
    if reply.startswith(b"+OK"):
        return
    conn._putline(base64.b64encode(abort))
    conn._getresp()
    raise poplib.error_proto(b"-ERR authentication failed")


def _is_server_reply(exc: poplib.error_proto) -> bool:
    """poplib raises error_proto with the server's bytes for ``-ERR`` replies and with a str
    for its own failures ('-ERR EOF', 'line too long')."""
    return bool(exc.args) and isinstance(exc.args[0], bytes)


__all__ = ["Pop3Mailbox"]
