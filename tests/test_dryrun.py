"""DryRunAdapter: one JSON line per call, nothing sent, fake tickets remembered for the run."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

from connector.hosts.base import Comment, HostAdapter, NewTicket, TicketInfo, Upload
from connector.hosts.dryrun import DryRunAdapter

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 4


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def new_ticket(**kw: Any) -> NewTicket:
    values: dict[str, Any] = dict(
        subject="Richiesta", requester_email="mario@pec.example.it", requester_name="Mario",
        body_text="Buongiorno " * 40, body_html="<p>Buongiorno</p>",
        uploads=(Upload("modulo.pdf", "application/pdf", PDF),), tags=("pmb_acct1",),
        external_id="pmb:acct1:<m1@x>", idempotency_key="k1",
        controls=(("X-OTOBO-Priority", "4 high"),))
    values.update(kw)
    return NewTicket(**values)


def test_is_a_host_adapter() -> None:
    assert isinstance(DryRunAdapter(io.StringIO()), HostAdapter)


def test_create_prints_uploads_and_ticket_without_attachment_bytes() -> None:
    out = io.StringIO()
    adapter = DryRunAdapter(out)

    first = adapter.create_ticket(new_ticket())
    second = adapter.create_ticket(new_ticket(external_id="other", uploads=()))

    assert (first.id, second.id) == ("-1", "-2") and not first.replayed
    upload, create, create2 = lines(out)
    assert all(line["dry_run"] is True for line in (upload, create, create2))
    assert (upload["method"], upload["path"]) == ("POST", "/api/v2/uploads")
    assert upload["upload"] == {"filename": "modulo.pdf", "content_type": "application/pdf",
                                "size": len(PDF), "sha256": hashlib.sha256(PDF).hexdigest()}
    assert (create["method"], create["path"]) == ("POST", "/api/v2/tickets")
    assert create["result"] == {"id": "-1"} and create["idempotency_key"] == "k1"
    t = create["ticket"]
    assert t["requester"] == {"name": "Mario", "email": "mario@pec.example.it"}
    assert t["body_text"]["chars"] == len("Buongiorno " * 40)
    assert len(t["body_text"]["preview"]) <= 120 and t["uploads"] == 1
    assert (t["tags"], t["priority"], t["external_id"]) == (["pmb_acct1"], "high",
                                                           "pmb:acct1:<m1@x>")
    assert "%PDF" not in out.getvalue()


def test_created_tickets_are_known_for_the_run_and_follow_comments_and_tags() -> None:
    out = io.StringIO()
    adapter = DryRunAdapter(out)
    created = adapter.create_ticket(new_ticket())

    adapter.add_comment(Comment(ticket_id=created.id, body_text="risposta",
                                defaults=(("X-OTOBO-FollowUp-State", "open"),),
                                add_tags=("pec_reply",), remove_tags=("pmb_acct1",),
                                dedupe_key="dk", uploads=(Upload("r.txt", "text/plain", b"r"),)))
    adapter.add_tags(created.id, ["pec_sent"])
    adapter.remove_tags(created.id, ["pec_reply"])

    info = adapter.get_ticket(created.id)
    assert info == TicketInfo(id="-1", status="open", subject="Richiesta",
                              requester_email="mario@pec.example.it", tags=("pec_sent",),
                              external_id="pmb:acct1:<m1@x>")
    assert adapter.find_tickets_by_external_id("pmb:acct1:<m1@x>") == [info]
    assert adapter.find_tickets_by_external_id("unknown") == []
    assert adapter.get_ticket("4711") is None
    assert adapter.comment_exists(created.id, "dk") is False
    assert adapter.user_exists("mario@pec.example.it") is False
    assert adapter.created == [info]
    put = [line for line in lines(out) if line["method"] == "PUT"]
    assert put[0]["path"] == "/api/v2/tickets/-1"
    assert put[0]["comment"]["dedupe_key"] == "dk" and put[0]["status"] == "open"
    assert put[0]["add_tags"] == ["pec_reply"] and put[0]["remove_tags"] == ["pmb_acct1"]
    assert put[1] == {"dry_run": True, "method": "PUT", "path": "/api/v2/tickets/-1/tags",
                      "tags": ["pec_sent"]}


class _Reader:
    """A stand-in for a real adapter: answers reads, must never be asked to write."""

    name = "reader"

    def __init__(self) -> None:
        self.reads: list[str] = []

    def check_credentials(self) -> str:
        return "Bot <bot@x> (admin)"

    def get_ticket(self, ticket_id: str) -> TicketInfo | None:
        self.reads.append(f"get {ticket_id}")
        return TicketInfo(id=ticket_id, status="open")

    def find_tickets_by_external_id(self, external_id: str) -> list[TicketInfo]:
        self.reads.append(f"find {external_id}")
        return [TicketInfo(id="7", status="open", external_id=external_id)]

    def user_exists(self, email: str) -> bool:
        return email == "known@x"

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"dry run called {name} on the real host")


def test_reader_answers_reads_about_real_tickets_and_nothing_is_written() -> None:
    reader = _Reader()
    out = io.StringIO()
    adapter = DryRunAdapter(out, reader=reader)  # type: ignore[arg-type]

    assert adapter.check_credentials() == "dry run (reads as Bot <bot@x> (admin))"
    assert adapter.get_ticket("7") == TicketInfo(id="7", status="open")
    assert adapter.user_exists("known@x") and not adapter.user_exists("else@x")
    created = adapter.create_ticket(new_ticket(uploads=()))
    adapter.add_comment(Comment(ticket_id="7", body_text="x"))
    adapter.add_tags("7", ["t"])
    assert adapter.get_ticket(created.id) is not None
    assert [t.id for t in adapter.find_tickets_by_external_id("pmb:acct1:<m1@x>")] == ["-1", "7"]
    assert reader.reads == ["get 7", "find pmb:acct1:<m1@x>"]
    assert len(lines(out)) == 9
