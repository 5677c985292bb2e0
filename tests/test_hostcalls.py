"""HostCallRecorder: every helpdesk call the pipeline makes, noted for the message's log."""

from __future__ import annotations

import io
import threading

import pytest

from connector.errors import HostError
from connector.hosts.base import Comment, NewTicket
from connector.hosts.dryrun import DryRunAdapter
from connector.hosts.unavailable import UnavailableHost
from connector.hosts.zendesk_fields import ZendeskVocabulary
from connector.service.hostcalls import HostCallRecorder


def ticket(subject: str) -> NewTicket:
    return NewTicket(subject=subject, requester_email="a@example.org", requester_name="A",
                     body_text="text")


def test_calls_are_noted_with_target_answer_and_time_then_taken_once() -> None:
    recorder = HostCallRecorder(DryRunAdapter(io.StringIO()))

    created = recorder.create_ticket(ticket("Aiuto"))
    recorder.add_comment(Comment(ticket_id=created.id, body_text="di nuovo"))
    assert recorder.get_ticket(999) is None

    calls = recorder.take()
    assert [(c.operation, c.target, c.answer, c.ok) for c in calls] == [
        ("create_ticket", "new ticket 'Aiuto'", f"ticket #{created.id}", True),
        ("add_comment", f"ticket #{created.id}", "done", True),
        ("get_ticket", "ticket #999", "not found", True)]
    assert all(c.duration_ms >= 0 for c in calls)
    assert [c.started_at for c in calls] == sorted(c.started_at for c in calls)
    assert recorder.take() == []
    assert recorder.name == "dry-run"  # everything else passes through untouched


def test_a_failed_call_is_noted_and_still_raised() -> None:
    recorder = HostCallRecorder(UnavailableHost("no secret", ZendeskVocabulary()))
    with pytest.raises(HostError, match="not asked: no secret"):
        recorder.user_exists("a@example.org")
    [call] = recorder.take()
    assert (call.operation, call.ok, call.answer) == ("user_exists", False,
                                                      "HostError: not asked: no secret")


def test_each_account_thread_takes_only_its_own_calls() -> None:
    recorder = HostCallRecorder(DryRunAdapter(io.StringIO()))
    taken: dict[str, list[str]] = {}

    def work(name: str) -> None:
        recorder.create_ticket(ticket(name))
        taken[name] = [c.target for c in recorder.take()]

    threads = [threading.Thread(target=work, args=(n,)) for n in ("uno", "due")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert taken == {"uno": ["new ticket 'uno'"], "due": ["new ticket 'due'"]}
