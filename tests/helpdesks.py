"""Both helpdesk doubles behind one view, so an end-to-end test runs against either host.

``Helpdesk`` wraps the Zendesk double (tests/zendesk_double.py) or the OTOBO double
(tests/otobo_double.py) and shows what an agent would see on either: tickets by the id the bridge
knows them by (Zendesk's id, OTOBO's TicketNumber), their requester, subject and fields, and their
articles (public or internal, text, attachment names and sizes).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

from otobo_double import OtoboDouble
from zendesk_double import ZendeskDouble

HOSTS = ("zendesk", "otobo")


@dataclass(frozen=True)
class Article:
    public: bool
    text: str
    author: str  # e-mail of the author (Zendesk: the user; OTOBO: the From address)
    attachments: tuple[tuple[str, int], ...]  # (file name, size)


@dataclass(frozen=True)
class Ticket:
    id: str  # as the bridge knows it: Zendesk id or OTOBO TicketNumber, as text
    subject: str
    requester: str
    closed: bool
    fields: dict[str, Any]  # Zendesk: field id as a string; OTOBO: dynamic field name
    articles: tuple[Article, ...]

    @property
    def notes(self) -> list[Article]:
        return [a for a in self.articles if not a.public]


def _plain(body: str) -> str:
    return unescape(re.sub(r"<[^>]+>", "", body))


def _email(value: str) -> str:
    m = re.search(r"<([^>]+)>", value)
    return (m.group(1) if m else value).strip()


class Helpdesk:
    def __init__(self, kind: str, double: ZendeskDouble | OtoboDouble) -> None:
        self.kind = kind
        self.double = double

    # -- config -------------------------------------------------------------------------------
    def host_section(self, directory: Path) -> dict[str, Any]:
        if isinstance(self.double, OtoboDouble):
            return {**self.double.host_config(directory / "otobo-password",
                                              tags_field="PMBTags",
                                              receipt_state_field="PECReceiptState"),
                    "max_in_flight": 1}
        (directory / "zendesk-token").write_text(self.double.api_token)
        # One mail at a time: these tests read articles in arrival order (tests/test_inflight.py
        # and the crash tests run several at once).
        return {"type": "zendesk", "url": self.double.url, "timeout": 10, "max_attempts": 2,
                "max_in_flight": 1,
                "auth": {"type": "api_token", "email": self.double.email,
                         "api_token_file": str(directory / "zendesk-token")}}

    def pec_fields(self) -> dict[str, int | str]:
        """``pec_custom_fields`` for this host: Zendesk field ids, OTOBO dynamic field names."""
        if self.kind == "otobo":
            return {"identificativo": "PECIdentificativo", "certified_at": "PECCertifiedTime",
                    "signature": "PECSignature"}
        return {"identificativo": 9001, "certified_at": 9003, "signature": 9004}

    def field(self, ticket: Ticket, fact: str) -> Any:
        return ticket.fields.get(str(self.pec_fields()[fact]))

    def reference(self, ticket_id: str) -> str:
        """How an agent's reply puts the ticket in the subject on this host."""
        return f"[Ticket#{ticket_id}]" if self.kind == "otobo" else f"[#{ticket_id}]"

    # -- what an agent sees ----------------------------------------------------------------------
    def tickets(self) -> list[Ticket]:
        if isinstance(self.double, OtoboDouble):
            return [self._otobo_ticket(t) for t in self.double.tickets()]
        state = self.double.state()
        users = state["users"]
        out = []
        for t in sorted(state["tickets"].values(), key=lambda t: t["id"]):
            articles = tuple(
                Article(bool(c["public"]), c.get("plain_body") or c.get("body") or "",
                        users.get(str(c.get("author_id")), {}).get("email", ""),
                        tuple((a["file_name"], int(a.get("size") or 0))
                              for a in c.get("attachments") or []))
                for c in t.get("comments") or [])
            out.append(Ticket(str(t["id"]), t["subject"], users[str(t["requester_id"])]["email"],
                              t["status"] == "closed",
                              {str(f["id"]): f["value"] for f in t.get("custom_fields") or []},
                              articles))
        return out

    def _otobo_ticket(self, t: dict[str, Any]) -> Ticket:
        articles = tuple(
            Article(a["IsVisibleForCustomer"] == 1,
                    _plain(a["Body"]) if a["ContentType"].startswith("text/html") else a["Body"],
                    _email(a["From"]),
                    tuple((x["Filename"], int(x["FilesizeRaw"])) for x in a["Attachment"]))
            for a in t["Article"])
        return Ticket(str(t["TicketNumber"]), t["Title"], t["CustomerUserID"],
                      t["StateType"] in ("closed", "merged", "removed"),
                      {f["Name"]: f["Value"] for f in t["DynamicField"]}, articles)

    def ticket(self, ticket_id: str) -> Ticket:
        return next(t for t in self.tickets() if t.id == ticket_id)

    def tags(self, ticket_id: str) -> set[str]:
        if isinstance(self.double, OtoboDouble):
            return set(str(self.ticket(ticket_id).fields.get("PMBTags") or "").split())
        return set(self.double.ticket(ticket_id)["tags"])

    # -- what the test does to the host -----------------------------------------------------------
    def close(self, ticket_id: str) -> None:
        if isinstance(self.double, OtoboDouble):
            raw = self.double.ticket_by_number(ticket_id)
            self.double.set_state(raw["TicketID"], "closed successful")
        else:
            self.double.set_status(ticket_id, "closed")

    def lose_create_answer(self) -> None:
        """The next ticket create is committed, and its answer never arrives."""
        if isinstance(self.double, OtoboDouble):
            self.double.inject(path_regex=r"/Ticket$", method="POST", when="after", drop=True)
        else:
            self.double.inject(r"^/api/v2/tickets$", None, method="POST", when="after",
                               drop=True)

    def attachment_bytes(self, ticket_id: str, name_prefix: str) -> bytes | None:
        """The bytes of the first attachment whose name starts so, as an agent downloads it."""
        if isinstance(self.double, OtoboDouble):
            raw = self.double.ticket_by_number(ticket_id)
            for article in raw["Article"]:
                for att in article["Attachment"]:
                    if att["Filename"].startswith(name_prefix):
                        return base64.b64decode(att["Content"])
            return None
        import requests

        ticket = self.double.ticket(ticket_id)
        for comment in ticket.get("comments") or []:
            for att in comment.get("attachments") or []:
                if att["file_name"].startswith(name_prefix):
                    session = requests.Session()
                    session.trust_env = False
                    resp = session.get(f"{self.double.url}/attachments/token/{att['token']}/",
                                       timeout=10)
                    resp.raise_for_status()
                    return resp.content
        return None
