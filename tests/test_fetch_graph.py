"""The Graph mailbox against the Graph double: delta paging, MIME download, moves that keep
immutable ids, throttling (429 + Retry-After) and an expired token renewed once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from graph_double import GraphDouble
from oauth_double import OAuthDouble
from oauth_support import generic_settings

from connector.config import AccountConfig
from connector.errors import FetchError
from connector.fetch import open_mailbox
from connector.fetch.graph import GraphMailbox, graph_base_url
from connector.graph.client import GraphClient

pytestmark = pytest.mark.usefixtures("fresh_token_sources")
MAILBOX = "support@contoso.com"


def mail(n: int, size: int = 0) -> bytes:
    return (f"From: c{n}@example.org\r\nTo: {MAILBOX}\r\nSubject: request {n}\r\n"
            f"Message-ID: <m{n}@example.org>\r\n\r\nbody {n}\r\n{'x' * size}\r\n").encode()


@pytest.fixture
def graph(oauth_server: OAuthDouble) -> Iterator[GraphDouble]:
    with GraphDouble(oauth_server, MAILBOX, page_size=10) as double:
        yield double


def account(graph: GraphDouble, oauth: OAuthDouble, tmp: Path, **overrides: Any
            ) -> AccountConfig:
    oauth.add_client(f"bridge-{MAILBOX}", secret="s3cret", app_username="")
    oauth2 = generic_settings(oauth, MAILBOX, tmp,
                              scopes=("https://graph.microsoft.com/.default",))
    values: dict[str, Any] = {
        "name": "graph", "protocol": "graph", "host": "127.0.0.1", "port": graph.port,
        "security": "none", "username": MAILBOX, "password": "", "auth": "oauth2",
        "oauth2": oauth2, "folder": "Inbox", "max_size": 0, "timeout": 10.0}
    values.update(overrides)
    return AccountConfig(**values)


def mailbox_with_sleep(settings: AccountConfig, waits: list[float]) -> GraphMailbox:
    assert settings.oauth2 is not None
    client = GraphClient(base_url=graph_base_url(settings), mailbox=settings.username,
                         oauth2=settings.oauth2, ca_file=None, timeout=10.0,
                         account=settings.name, sleep=waits.append)
    return GraphMailbox(settings, client=client)


def test_lists_every_page_then_only_changes(graph: GraphDouble, oauth_server: OAuthDouble,
                                            tmp_path: Path) -> None:
    for n in range(25):
        graph.deliver(mail(n))
    mailbox = GraphMailbox(account(graph, oauth_server, tmp_path))
    mailbox.page_size = 10  # asked for with Prefer: odata.maxpagesize on every page
    graph.page_size = 1000
    with mailbox:
        before = graph.requests["GET"]
        listed = mailbox.list_new(set())
        assert graph.requests["GET"] - before == 3  # pages of 10, 10 and 5
        assert [m.raw for m in mailbox.fetch(listed)] == [mail(n) for n in range(25)]
        # Nothing changed: the delta link answers with no items, one request.
        before = graph.requests["GET"]
        assert len(mailbox.list_new(set())) == 25  # still there, still not known
        assert graph.requests["GET"] - before == 1
        graph.deliver(mail(99))
        known = {m.ref for m in listed}
        (new,) = mailbox.list_new(known)
        assert next(iter(mailbox.fetch([new]))).raw == mail(99)


def test_processed_and_failed_mail_leave_the_inbox_with_the_same_id(
        graph: GraphDouble, oauth_server: OAuthDouble, tmp_path: Path) -> None:
    for n in range(3):
        graph.deliver(mail(n))
    settings = account(graph, oauth_server, tmp_path, processed_folder="Inbox/Processed",
                       error_folder="Helpdesk/Error", ignored_folder="Inbox/Processed")
    with open_mailbox(settings) as mailbox:
        assert mailbox.ensure_folders() == ["Inbox/Processed", "Helpdesk", "Helpdesk/Error",
                                            "Held"]
        assert mailbox.ensure_folders() == []
        first, second, third = mailbox.list_new(set())
        mailbox.mark_processed(first)
        mailbox.mark_failed(second)
        assert first.ref in graph.messages  # immutable id: unchanged by the move
        assert graph.moves_without_immutable == 0
        assert [m.ref for m in mailbox.list_new(set())] == [third.ref]
        # The runner asks for state() then list_new(): one delta request for both.
        before = graph.requests["GET"]
        assert mailbox.state().refs == {third.ref}
        assert [m.ref for m in mailbox.list_new(set())] == [third.ref]
        assert graph.requests["GET"] - before == 1
    assert graph.raws("Inbox/Processed") == [mail(0)]
    assert graph.raws("Helpdesk/Error") == [mail(1)]
    assert graph.raws("Inbox") == [mail(2)]


def test_delete_after_processing(graph: GraphDouble, oauth_server: OAuthDouble,
                                 tmp_path: Path) -> None:
    graph.deliver(mail(1))
    settings = account(graph, oauth_server, tmp_path, delete_after_processing=True)
    with open_mailbox(settings) as mailbox:
        (only,) = mailbox.list_new(set())
        mailbox.mark_processed(only)
        mailbox.mark_processed(only)  # already gone (a crash in between): not an error
    assert graph.messages == {}


def test_throttling_waits_what_retry_after_says(graph: GraphDouble, oauth_server: OAuthDouble,
                                                 tmp_path: Path) -> None:
    graph.deliver(mail(1))
    waits: list[float] = []
    mailbox = mailbox_with_sleep(account(graph, oauth_server, tmp_path), waits)
    mailbox.connect()
    graph.throttle(2, retry_after=7)
    (listed,) = mailbox.list_new(set())
    assert waits == [7.0, 7.0]
    graph.throttle(1, retry_after=3600)  # longer than a pass should hold a thread
    with pytest.raises(FetchError, match="retry after 3600"):
        list(mailbox.fetch([listed]))


def test_an_expired_token_is_renewed_once(graph: GraphDouble, oauth_server: OAuthDouble,
                                          tmp_path: Path) -> None:
    graph.deliver(mail(1))
    with open_mailbox(account(graph, oauth_server, tmp_path)) as mailbox:
        issued = oauth_server.requests["token"]
        oauth_server.expire_access_tokens()
        assert len(mailbox.list_new(set())) == 1
        assert oauth_server.requests["token"] == issued + 1


def test_too_large_mail_is_not_read_whole(graph: GraphDouble, oauth_server: OAuthDouble,
                                          tmp_path: Path) -> None:
    graph.deliver(mail(1, size=50_000))
    graph.deliver(mail(2))
    with open_mailbox(account(graph, oauth_server, tmp_path, max_size=10_000)) as mailbox:
        big, small = mailbox.fetch(mailbox.list_new(set()))
    assert big.raw is None and big.too_large
    assert small.raw == mail(2)


def test_missing_folder_and_unknown_mailbox_are_clear(graph: GraphDouble,
                                                      oauth_server: OAuthDouble,
                                                      tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="folder 'Support' does not exist"):
        open_mailbox(account(graph, oauth_server, tmp_path, folder="Support")).connect()
    with pytest.raises(FetchError, match="ErrorInvalidUser"):
        open_mailbox(account(graph, oauth_server, tmp_path, username="nobody@contoso.com")
                     ).connect()


def test_links_outside_the_graph_endpoint_never_get_the_token(
        graph: GraphDouble, oauth_server: OAuthDouble, tmp_path: Path) -> None:
    settings = account(graph, oauth_server, tmp_path)
    client = mailbox_with_sleep(settings, []).client
    assert client.url(f"{graph_base_url(settings)}/users/x/messages?$skiptoken=1")
    with pytest.raises(FetchError, match="outside"):
        client.request("GET", "https://graph.example.net/v1.0/users/x/messages")
    assert graph.requests["GET"] == 0


def test_moves_go_twenty_to_a_batch_and_throttled_items_are_sent_again(
        graph: GraphDouble, oauth_server: OAuthDouble, tmp_path: Path) -> None:
    for n in range(45):
        graph.deliver(mail(n))
    waits: list[float] = []
    mailbox = mailbox_with_sleep(account(graph, oauth_server, tmp_path), waits)
    with mailbox:
        mailbox.ensure_folders()
        listed = mailbox.list_new(set())
        graph.throttle_batch_items = 3
        before = graph.requests["POST"]
        mailbox.mark_processed_many(listed[:40])
        mailbox.mark_failed_many(listed[40:])
        # 20 + 20 moves, the 3 throttled ones again after Retry-After, then 5 to Error.
        assert graph.requests["POST"] - before == 4
        assert waits == [1.0]
        assert mailbox.list_new(set()) == []
    assert sorted(graph.raws("Processed")) == sorted(mail(n) for n in range(40))
    assert sorted(graph.raws("Error")) == sorted(mail(n) for n in range(40, 45))


def test_a_batch_item_refused_ends_the_pass_and_a_later_pass_finishes(
        graph: GraphDouble, oauth_server: OAuthDouble, tmp_path: Path) -> None:
    for n in range(3):
        graph.deliver(mail(n))
    waits: list[float] = []
    mailbox = mailbox_with_sleep(account(graph, oauth_server, tmp_path), waits)
    with mailbox:
        mailbox.ensure_folders()
        listed = mailbox.list_new(set())
        graph.throttle_batch_items = 100  # throttled past every retry
        with pytest.raises(FetchError, match="failed for 3 message"):
            mailbox.mark_processed_many(listed)
        assert len(waits) == 5 and graph.count("Inbox") == 3
        graph.throttle_batch_items = 0
        graph.messages.pop(listed[1].ref)  # gone meanwhile (a person moved it): not an error
        mailbox.mark_processed_many(listed)
    assert sorted(graph.raws("Processed")) == [mail(0), mail(2)]


def test_held_and_ignored_mail_go_to_their_folders(graph: GraphDouble,
                                                   oauth_server: OAuthDouble,
                                                   tmp_path: Path) -> None:
    for n in range(3):
        graph.deliver(mail(n))
    settings = account(graph, oauth_server, tmp_path, held_folder="Held",
                       ignored_folder="Ignored")
    with open_mailbox(settings) as mailbox:
        assert mailbox.ensure_folders() == ["Processed", "Error", "Held", "Ignored"]
        first, second, third = mailbox.list_new(set())
        mailbox.mark_held(first)  # type: ignore[attr-defined]
        mailbox.mark_ignored(second)  # type: ignore[attr-defined]
    assert graph.raws("Held") == [mail(0)] and graph.raws("Ignored") == [mail(1)]
    assert graph.raws("Inbox") == [mail(2)]
