"""Microsoft Graph mailbox (``protocol: graph``): for tenants where IMAP/POP are switched off.

The same contract as IMAP (see ``base``): ``list_new`` lists what is in ``folder`` and not yet
known, ``fetch`` downloads each message as MIME (``GET /messages/{id}/$value``), and mail leaves
the folder only when the runner calls ``mark_processed``/``mark_failed`` after its effect is
recorded (``POST /messages/{id}/move``, or DELETE with ``delete_after_processing``).

Identity: ``ref`` is the message's immutable id (``Prefer: IdType="ImmutableId"``), which a
move does not change, so a ref recorded before a crash is still found afterwards.

Listing uses a delta query on the folder ("Get incremental changes to messages in a folder"):
the first pass reads the folder whole, later passes only what changed; the mailbox keeps the
folder's contents in memory from those changes, so a message listed before and not yet
settled is listed again. A delta link Graph no longer knows (410 Gone) starts a full sync.

Folders: well-known names (``inbox``, ``archive``, ``junkemail``...) or display-name paths
from the top of the mailbox (``Inbox/Processed``, ``Helpdesk/Error``), created when missing.
Sizes are not known before the download: a message over ``max_size`` is detected while
downloading and never read whole.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from connector.errors import ConfigError, FetchError
from connector.fetch.base import (
    KnownRefs,
    ListedMessage,
    MailboxSettings,
    MailboxState,
    MessageHandle,
    RemoteMessage,
    describe,
    is_too_large,
    known_predicate,
)
from connector.graph.client import BATCH_SIZE, GraphClient, GraphError

log = logging.getLogger(__name__)

#: Graph's well-known folder names ("mailFolder resource type").
WELL_KNOWN = frozenset({
    "archive", "clutter", "conflicts", "conversationhistory", "deleteditems", "drafts",
    "inbox", "junkemail", "localfailures", "msgfolderroot", "outbox", "recoverableitemsdeletions",
    "scheduled", "searchfolders", "sentitems", "serverfailures", "syncissues"})
#: Messages per delta page (Graph's default is 10).
PAGE_SIZE = 100
_SELECT = "id,receivedDateTime,internetMessageId"


@dataclass(frozen=True)
class _Present:
    id: str
    received: str
    internet_message_id: str | None


def graph_base_url(settings: MailboxSettings) -> str:
    scheme = "http" if settings.security == "none" else "https"
    port = "" if (scheme, settings.port) in (("https", 443), ("http", 80)) else \
        f":{settings.port}"
    return f"{scheme}://{settings.host}{port}/v1.0"


def _quoted(name: str) -> str:
    return "'" + name.replace("'", "''") + "'"


class GraphMailbox:
    def __init__(self, settings: MailboxSettings, *, client: GraphClient | None = None) -> None:
        oauth2 = getattr(settings, "oauth2", None)
        if oauth2 is None:
            raise ConfigError(f"account {settings.name}: protocol graph needs auth: oauth2",
                              key="auth")
        self.settings = settings
        self.account = settings.name
        self.client = client or GraphClient(
            base_url=graph_base_url(settings), mailbox=settings.username, oauth2=oauth2,
            ca_file=settings.ca_file, timeout=settings.timeout, account=settings.name,
            verify_tls=settings.verify_tls)
        self._connected = False
        self._folder_ids: dict[str, str] = {}
        self._present: dict[str, _Present] = {}
        self._delta_link: str | None = None
        self._just_synced = False  # state() synced; the list_new() right after needs no call
        self.page_size = PAGE_SIZE

    # -- connection ------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        """Graph has no session: "connecting" gets a token and finds the folder, so a wrong
        mailbox, permission or folder shows up here as it would at an IMAP login."""
        if self._connected:
            return
        self._folder_id(self.settings.folder, create=False)
        self._connected = True
        log.debug("graph connected account=%s folder=%s", self.account, self.settings.folder)

    def close(self) -> None:
        self._connected = False
        self._just_synced = False

    def __enter__(self) -> GraphMailbox:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self) -> str:
        self.connect()
        folder = self.client.get_json(f"/mailFolders/{self._folder_id(self.settings.folder)}",
                                      {"$select": "displayName,totalItemCount"})
        return (f"Graph {describe(self.settings)}: OK, {folder.get('displayName')} has "
                f"{folder.get('totalItemCount', 0)} messages")

    def has_capability(self, name: str) -> bool:
        return False

    def noop(self) -> None:
        """Nothing to keep alive; a token about to expire is renewed by the next request."""

    # -- folders ---------------------------------------------------------------------------
    def ensure_folders(self) -> list[str]:
        created: list[str] = []
        wanted = (self.settings.processed_folder, self.settings.error_folder,
                  self.settings.held_folder, self.settings.ignored_folder)
        for folder in dict.fromkeys(f for f in wanted if f):
            if self._folder_id(folder, create=True, created=created):
                continue
        return created

    def _folder_id(self, path: str, *, create: bool = False,
                   created: list[str] | None = None) -> str:
        """The id of a folder named by a well-known name or a display-name path."""
        if path in self._folder_ids:
            return self._folder_ids[path]
        parts = [p for p in path.split("/") if p]
        if not parts:
            raise ConfigError(f"account {self.account}: empty Graph folder name")
        parent: str | None = None
        for depth, name in enumerate(parts):
            if depth == 0 and name.lower() in WELL_KNOWN:
                parent = str(self._require(f"/mailFolders/{name.lower()}", path)["id"])
                continue
            listing = f"/mailFolders/{parent}/childFolders" if parent else "/mailFolders"
            found = self.client.get_json(listing, {
                "$filter": f"displayName eq {_quoted(name)}", "$select": "id,displayName"})
            matches = found.get("value") or []
            if matches:
                parent = str(matches[0]["id"])
                continue
            if not create:
                raise FetchError(f"{describe(self.settings)}: folder {path!r} does not exist")
            made = self.client.request("POST", listing, json={"displayName": name}).json()
            parent = str(made["id"])
            log.info("graph created folder account=%s folder=%s", self.account,
                     "/".join(parts[:depth + 1]))
            if created is not None:
                created.append("/".join(parts[:depth + 1]))
        assert parent is not None
        self._folder_ids[path] = parent
        return parent

    def _require(self, path: str, name: str) -> dict[str, Any]:
        try:
            return self.client.get_json(path, {"$select": "id,displayName"})
        except GraphError as exc:
            if exc.status == 404 and exc.code == "ErrorItemNotFound":
                raise FetchError(f"{describe(self.settings)}: folder {name!r} does not exist"
                                 ) from None
            raise

    # -- listing ---------------------------------------------------------------------------
    def _sync(self) -> None:
        """Apply the folder's changes since the last delta link to ``_present``."""
        folder_id = self._folder_id(self.settings.folder)
        link = self._delta_link
        if link is None:
            self._present = {}
        try:
            pages = self.client.pages(
                link or f"/mailFolders/{folder_id}/messages/delta",
                None if link else {"$select": _SELECT}, page_size=self.page_size)
            for page in pages:
                for item in page.get("value") or []:
                    self._apply(item)
                if page.get("@odata.deltaLink"):
                    self._delta_link = str(page["@odata.deltaLink"])
        except GraphError as exc:
            if exc.status == 410 and link is not None:
                # The delta token expired or the folder was reset: read it whole again.
                log.info("graph delta link expired account=%s; full sync", self.account)
                self._delta_link = None
                self._sync()
                return
            raise

    def _apply(self, item: dict[str, Any]) -> None:
        message_id = str(item.get("id") or "")
        if not message_id:
            return
        if "@removed" in item:
            self._present.pop(message_id, None)
            return
        known = self._present.get(message_id)
        self._present[message_id] = _Present(
            id=message_id,
            received=str(item.get("receivedDateTime") or (known.received if known else "")),
            internet_message_id=item.get("internetMessageId")
            or (known.internet_message_id if known else None))

    def state(self) -> MailboxState:
        self._sync()
        self._just_synced = True
        return MailboxState(account=self.account, folder=self.settings.folder,
                            uidvalidity=None, refs=frozenset(self._present))

    def list_new(self, known: KnownRefs) -> list[ListedMessage]:
        """Messages in the folder whose ref is not known, oldest first. Size 0: Graph tells
        a message's size only by downloading it."""
        is_known = known_predicate(known)
        if not self._just_synced:
            self._sync()
        self._just_synced = False
        present = sorted(self._present.values(), key=lambda p: (p.received, p.id))
        return [ListedMessage(account=self.account, ref=p.id, size=0, folder=self.settings.folder)
                for p in present if not is_known(p.id)]

    def message_ids(self, refs: Iterable[str]) -> dict[str, str | None]:
        return {ref: (self._present[ref].internet_message_id or "").strip("<>") or None
                for ref in refs if ref in self._present}

    def fetch(self, messages: Iterable[ListedMessage]) -> Iterator[RemoteMessage]:
        """``GET /messages/{id}/$value`` for each: the message as MIME. One over ``max_size``
        is abandoned after ``max_size`` bytes and yielded with ``raw=None``."""
        limit = self.settings.max_size
        for listed in messages:
            self._check_handle(listed)
            try:
                response = self.client.request("GET", f"/messages/{listed.ref}/$value",
                                               headers={"Accept": "*/*"}, stream=True)
            except GraphError as exc:
                if exc.status == 404:
                    log.warning("graph message vanished before download account=%s ref=%s",
                                self.account, listed.ref)
                    self._present.pop(listed.ref, None)
                    continue
                raise
            with response:
                declared = int(response.headers.get("Content-Length") or 0)
                raw = b"" if not is_too_large(declared, limit) else None
                if raw is not None:
                    chunks: list[bytes] = []
                    total = 0
                    for chunk in response.iter_content(64 * 1024):
                        chunks.append(chunk)
                        total += len(chunk)
                        if is_too_large(total, limit):
                            break
                    raw = b"".join(chunks)
            size = declared or len(raw or b"")
            if raw is None or is_too_large(len(raw), limit):
                log.info("graph message too large account=%s ref=%s size>=%d max_size=%d",
                         self.account, listed.ref, max(size, len(raw or b"")), limit)
                yield RemoteMessage(account=self.account, ref=listed.ref, size=size, raw=None,
                                    folder=listed.folder)
                continue
            yield RemoteMessage(account=self.account, ref=listed.ref, size=len(raw), raw=raw,
                                folder=listed.folder)

    # -- marking ---------------------------------------------------------------------------
    def mark_processed(self, message: MessageHandle) -> None:
        if self.settings.delete_after_processing:
            self._delete(message)
        else:
            self._move(message, self.settings.processed_folder)

    def mark_failed(self, message: MessageHandle) -> None:
        self._move(message, self.settings.error_folder)

    def mark_processed_many(self, messages: Sequence[MessageHandle]) -> None:
        """Like ``mark_processed`` for several, up to 20 moves (or deletes) a request."""
        if self.settings.delete_after_processing:
            self._many(messages, "DELETE", None)
        else:
            self._many(messages, "POST", self.settings.processed_folder)

    def mark_failed_many(self, messages: Sequence[MessageHandle]) -> None:
        self._many(messages, "POST", self.settings.error_folder)

    def mark_held(self, message: MessageHandle) -> None:
        self.mark_held_many([message])

    def mark_held_many(self, messages: Sequence[MessageHandle]) -> None:
        """Over the per-sender cap: the mail waits in ``held_folder`` for ``held release``."""
        self._many(messages, "POST", self.settings.held_folder)

    def mark_ignored(self, message: MessageHandle) -> None:
        self.mark_ignored_many([message])

    def mark_ignored_many(self, messages: Sequence[MessageHandle]) -> None:
        if self.settings.ignored_folder == self.settings.processed_folder:
            self.mark_processed_many(messages)
        else:
            self._many(messages, "POST", self.settings.ignored_folder)

    def _many(self, messages: Sequence[MessageHandle], method: str, target: str | None) -> None:
        """One $batch per BATCH_SIZE messages. A message already gone (404) counts as moved:
        its effect is recorded and it left the folder before. Any other refusal ends the pass
        with a FetchError after the rest of the batch was done; the runner moves what is left
        on the next pass."""
        if not messages:
            return
        for message in messages:
            self._check_handle(message)
        destination = self._folder_id(target, create=True) if target else None
        failures: list[str] = []
        for start in range(0, len(messages), BATCH_SIZE):
            chunk = {str(i): m for i, m in enumerate(messages[start:start + BATCH_SIZE])}
            requests = [
                {"id": key, "method": method,
                 "url": f"/messages/{m.ref}" + ("/move" if target else ""),
                 **({"body": {"destinationId": destination}} if target else {})}
                for key, m in chunk.items()]
            answers = self.client.batch(requests)
            for key, message in chunk.items():
                status = int((answers.get(key) or {}).get("status", 0))
                if status in (200, 201, 204, 404):
                    self._present.pop(message.ref, None)
                    if status == 404:
                        log.warning("graph message already gone account=%s ref=%s",
                                    self.account, message.ref)
                    continue
                error = ((answers.get(key) or {}).get("body") or {}).get("error") or {}
                failures.append(f"{message.ref}: {status} {error.get('code', '')}".strip())
        done = len(messages) - len(failures)
        log.info("graph %s account=%s count=%d to=%s", "moved" if target else "deleted",
                 self.account, done, target or "-")
        if failures:
            raise FetchError(f"{describe(self.settings)}: "
                             f"{'move to ' + target if target else 'delete'} failed for "
                             f"{len(failures)} message(s): {'; '.join(failures[:5])}")

    def _move(self, message: MessageHandle, target: str) -> None:
        self._check_handle(message)
        destination = self._folder_id(target, create=True)
        try:
            moved = self.client.request("POST", f"/messages/{message.ref}/move",
                                        json={"destinationId": destination}).json()
        except GraphError as exc:
            if exc.status != 404:
                raise
            # Gone from the folder already (moved by us before a crash, or by a person):
            # its effect is recorded, so there is nothing left to do.
            log.warning("graph message already gone account=%s ref=%s", self.account,
                        message.ref)
        else:
            log.info("graph moved account=%s ref=%s to=%s new_id=%s", self.account,
                     message.ref, target, moved.get("id"))
        self._present.pop(message.ref, None)

    def _delete(self, message: MessageHandle) -> None:
        self._check_handle(message)
        try:
            self.client.request("DELETE", f"/messages/{message.ref}")
        except GraphError as exc:
            if exc.status != 404:
                raise
        self._present.pop(message.ref, None)
        log.info("graph deleted account=%s ref=%s", self.account, message.ref)

    def _check_handle(self, message: MessageHandle) -> None:
        if message.account != self.account or message.folder != self.settings.folder:
            raise FetchError(f"{self.account}: {message.ref} is not a message of this mailbox")


__all__ = ["GraphMailbox", "graph_base_url"]
