"""Subject and message templates with Zendesk-style placeholders, filled from the API.

The bridge renders the templates itself, from what the API says at send time: the webhook is
only the signal, and the sweep (which has no webhook body) must produce the same message.
Only placeholders the bridge can fill are allowed; an unknown one is a configuration error
instead of text silently vanishing, as it would in Zendesk.

In the bridge ``{{ticket.latest_comment}}`` and ``{{ticket.latest_comment_html}}`` mean *the
comment being sent* (the latest public comment unless ``reply_comment: any``), so a template
can never leak an internal note written after the reply.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

from connector.mail.html import html_to_text, sanitize_html
from connector.outbound.model import CommentView, TicketView

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")
_FIELD = re.compile(r"^ticket\.ticket_field_(\d+)$")
_LOOKS_HTML = re.compile(r"<\s*/?\s*[A-Za-z][^>]*>")

#: Placeholders whose value is HTML (inserted as sanitized markup, not escaped).
HTML_PLACEHOLDERS = frozenset({"ticket.latest_comment_html", "ticket.latest_public_comment_html"})

KNOWN_PLACEHOLDERS: tuple[str, ...] = (
    "ticket.id",
    "ticket.title",
    "ticket.status",
    "ticket.external_id",
    "ticket.url",
    "ticket.requester.name",
    "ticket.requester.email",
    "ticket.latest_comment",
    "ticket.latest_comment_html",
    "ticket.latest_public_comment",
    "ticket.latest_public_comment_html",
    "current_user.name",
    "current_user.email",
    "account.from_address",
    "account.display_name",
    "ticket.ticket_field_<id>",
)


def unknown_placeholders(template: str) -> list[str]:
    """The placeholders in ``template`` the bridge cannot fill, in order of appearance."""
    known = set(KNOWN_PLACEHOLDERS)
    return [name for name in PLACEHOLDER.findall(template)
            if name not in known and not _FIELD.match(name)]


def has_line_break(value: str) -> bool:
    return "\r" in value or "\n" in value


class TemplateContext:
    """Values for the placeholders of one message."""

    def __init__(self, ticket: TicketView, reply: CommentView, latest_public: CommentView | None,
                 *, from_address: str, display_name: str) -> None:
        self.ticket = ticket
        self.reply = reply
        self.latest_public = latest_public or reply
        self.from_address = from_address
        self.display_name = display_name

    def text(self, name: str) -> str:
        """The plain-text value of placeholder ``name`` (empty for a field with no value)."""
        t = self.ticket
        simple: dict[str, Callable[[], str]] = {
            "ticket.id": lambda: str(t.id),
            "ticket.title": lambda: t.title,
            "ticket.status": lambda: t.status,
            "ticket.external_id": lambda: t.external_id,
            "ticket.url": lambda: t.url,
            "ticket.requester.name": lambda: t.requester_name,
            "ticket.requester.email": lambda: t.requester_email,
            "ticket.latest_comment": lambda: self.reply.text,
            "ticket.latest_comment_html": lambda: self.reply.text,
            "ticket.latest_public_comment": lambda: self.latest_public.text,
            "ticket.latest_public_comment_html": lambda: self.latest_public.text,
            "current_user.name": lambda: self.reply.author_name,
            "current_user.email": lambda: self.reply.author_email,
            "account.from_address": lambda: self.from_address,
            "account.display_name": lambda: self.display_name,
        }
        if name in simple:
            return simple[name]()
        match = _FIELD.match(name)
        if match:
            return t.fields.get(int(match.group(1)), "")
        raise KeyError(name)

    def html(self, name: str) -> str:
        """The value of ``name`` as HTML: comment bodies as sanitized markup, the rest escaped."""
        if name == "ticket.latest_comment_html":
            return _comment_html(self.reply.html) if self.reply.html else \
                _escape(self.reply.text)
        if name == "ticket.latest_public_comment_html":
            comment = self.latest_public
            return _comment_html(comment.html) if comment.html else _escape(comment.text)
        if name in ("ticket.latest_comment", "ticket.latest_public_comment"):
            return _escape(self.text(name))
        return html.escape(self.text(name), quote=True)


def _escape(text: str) -> str:
    return html.escape(text, quote=False).replace("\n", "<br>\n")


def render_subject(template: str, ctx: TemplateContext) -> str:
    """The subject: placeholders filled with plain text, runs of blanks folded to one space.

    Line breaks in values are kept on purpose: a ticket title holding CR/LF is an injection
    attempt (no helpdesk UI makes one), and compose refuses it with a clear error rather
    than the bridge quietly sending something else.
    """
    rendered = PLACEHOLDER.sub(lambda m: ctx.text(m.group(1)), template)
    return re.sub(r"[ \t]+", " ", rendered).strip()


def render_bodies(template: str, ctx: TemplateContext) -> tuple[str, str]:
    """(text, html) bodies from the message template.

    A plain template using no HTML placeholder is filled with plain values and the HTML part
    is derived from it. Otherwise the HTML is rendered first (markup of the template kept,
    values escaped, comment HTML sanitized) and the text part is derived from it.
    """
    markup = bool(_LOOKS_HTML.search(template))
    names = PLACEHOLDER.findall(template)
    if not markup and not any(n in HTML_PLACEHOLDERS for n in names):
        text = PLACEHOLDER.sub(lambda m: ctx.text(m.group(1)), template)
        return text, _escape(text)
    parts: list[str] = []
    pos = 0
    for match in PLACEHOLDER.finditer(template):
        literal = template[pos:match.start()]
        # A plain template keeps its line breaks in the HTML part too.
        parts.append(literal if markup else _escape(literal))
        parts.append(ctx.html(match.group(1)))
        pos = match.end()
    tail = template[pos:]
    parts.append(tail if markup else _escape(tail))
    html_body = "".join(parts)
    return html_to_text(html_body), html_body


def _comment_html(html: str) -> str:
    # An agent's reply going out by mail: its images (Zendesk attachment URLs) stay; the
    # remote-content rule protects agents' browsers from what customers send.
    return sanitize_html(html, remote_content=True)
