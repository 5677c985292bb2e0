"""Follow-up comments show the reply's own text; the quoted thread is kept beside them.

Unit tests run the real replies of tests/data/replies (their new text as the source's tests
state it); the end-to-end tests go through Dovecot and the Zendesk fake.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from dovecot import DovecotServer, MailUser
from zendesk_responses import Bridge, FakeZendesk, account, customer_mail

from connector.mail.parse import parse_message
from connector.mail.quoting import new_text

REPLIES = Path(__file__).parent / "data" / "replies"
EXPECTED = {k: v for k, v in json.loads((REPLIES / "expected.json").read_text("utf-8")).items()
            if not k.startswith("_")}
#: Replies the trimming leaves whole (measured, bench/reply_trimming.py): Discourse's made-up
#: "Sent from my iMachine" is no signature any client writes.
LEFT_WHOLE = {"iphone_signature.eml"}


def body(name: str) -> str:
    return parse_message((REPLIES / name).read_bytes()).text_body or ""


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_real_reply_is_trimmed_to_what_its_source_expects(name: str) -> None:
    text = body(name)
    result = new_text(text)
    if name in LEFT_WHOLE:
        assert result.unchanged and result.text == text
    else:
        assert " ".join(result.text.split()) == " ".join(EXPECTED[name].split())


def test_a_quote_header_in_another_language_ends_the_new_text() -> None:
    text = ("Va bene, grazie.\n\nIl giorno mar 14 gen 2016 alle ore 00:42 Mario Rossi "
            "<m@example.it> ha scritto:\n> ciao\n> come va\n")
    assert new_text(text).text == "Va bene, grazie."
    outlook = ("Danke!\n\nVon: Mario Rossi <m@example.it>\nGesendet: Dienstag, 14. Januar 2016\n"
               "An: support@acme.example\nBetreff: Drucker\n\nDer Drucker geht nicht.\n")
    assert new_text(outlook).text == "Danke!"


#: Quote headers in several languages and shapes (a line start, a newline, the Danish dash
#: line mid-line, a header in the first line, none at all), with text around them.
HEADER_SHAPES = [
    "Ok.\n\nOn Tue, Jan 14, 2016 at 0:42 AM, Bar Foo <wat@example.org> wrote:\n> old\n",
    "Danke!\n\nVon: Mario Rossi <m@example.it>\nGesendet: Dienstag\nAn: s@a.example\n"
    "Betreff: Drucker\n\nalt\n",
    "Tak. -----Oprindelig meddelelse-----\nFra: A <a@b.dk>\nSendt: i dag\n",
    "Le 14 janv. 2016 à 00:42, Marie <m@example.fr> a écrit :\n> vieux\n",
    "Gracias\r\n\r\nEl 14 ene 2016, a las 0:42, Ana <a@example.es> escribió:\r\n> viejo\r\n",
    "好的\n\n2016年1月14日 00:42，张三 <z@example.cn> 写道：\n> 旧\n",
    "Ja\n-----Original Message-----\nFrom: X <x@example.org>\nSent: today\nTo: y\n",
    "A plain note without any quote header -- just dashes - and lines\nand more\n",
]


@pytest.mark.parametrize("text", HEADER_SHAPES + [body(name) for name in sorted(EXPECTED)])
def test_the_quote_header_search_finds_what_the_library_alone_finds(text: str) -> None:
    # quoting reads quote headers with mail-parser-reply's own pattern behind a guard that
    # only skips where no alternative can begin; the answer must be the library's.
    from mailparser_reply import EmailReplyParser

    from connector.mail import quoting

    library = EmailReplyParser(languages=list(quoting.LANGUAGES))
    assert quoting._header_regex().pattern.startswith("(?:^|(?=[\\n-]))")  # guarded
    for chunk in (text, text[:60], text[-60:]):
        expected = (library.parse_reply(text=chunk) or "").strip()
        assert quoting._trimmed_by_headers(chunk) == expected


@pytest.mark.parametrize("text", [
    "> only a quote\n> nothing else\n",
    "On Tue, Jan 14, 2016 at 0:42 AM, Bar Foo <wat@example.org> wrote:\n> old text\n",
    "   \n",
    "A message with no quote at all.\n",
])
def test_a_reply_is_never_trimmed_to_nothing_and_plain_text_stays(text: str) -> None:
    result = new_text(text)
    assert result.unchanged and result.text == text


def test_a_short_note_on_top_of_a_long_forward_is_not_a_reply_to_trim() -> None:
    forwarded = "\n".join(f"riga {n} del messaggio inoltrato" for n in range(200))
    text = f"vedi sotto\n\n-----Original Message-----\n{forwarded}\n"
    assert new_text(text).unchanged


QUOTED_REPLY = ("Ecco il modulo firmato.\n\n"
                "Il giorno lun 2 mar 2026 alle ore 10:00 Supporto <support@example.org> "
                "ha scritto:\n> Buongiorno, ci serve il modulo firmato.\n> Grazie\n")


def ticketed(dovecot: DovecotServer, user: MailUser, zendesk: FakeZendesk,
             bridge: Bridge) -> dict:
    first = customer_mail("Richiesta modulo", "m1@example.org", text=QUOTED_REPLY)
    dovecot.append(user, first)
    bridge.poll()
    (ticket,) = zendesk.ticket_list()
    return ticket


@pytest.mark.parametrize("mode", ["attach", "collapse", "keep"])
def test_a_follow_up_shows_the_new_text_and_keeps_the_original(
    mode: str, dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    bridge = make_bridge([account(dovecot, mailbox_user, "support",
                                  follow_up={"quoted_text": mode})])
    ticket = ticketed(dovecot, mailbox_user, zendesk, bridge)
    # A first message is never trimmed, whatever it quotes.
    assert "ha scritto" in ticket["comments"][0]["plain"]
    reply = customer_mail("Re: Richiesta modulo", "m2@example.org", in_reply_to="m1@example.org",
                          text=QUOTED_REPLY)
    dovecot.append(mailbox_user, reply)

    assert bridge.poll().counts["followed_up"] == 1
    comment = ticket["comments"][1]
    names = [a["file_name"] for a in comment["attachments"]]
    if mode == "keep":
        assert "ha scritto" in comment["plain"] and names == []
    elif mode == "attach":
        assert comment["plain"] == "Ecco il modulo firmato."
        assert len(names) == 1 and names[0].endswith(".eml")
        (original,) = comment["attachments"]
        assert original["data"] == reply
    else:
        assert comment["plain"].startswith("Ecco il modulo firmato.")
        assert "<details>" in comment["html_body"] and "ha scritto" in comment["html_body"]
        assert names == []
