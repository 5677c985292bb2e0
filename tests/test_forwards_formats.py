"""Issue 11 section 6: forwarded-message blocks of the common clients, in their languages,
with or without a forward prefix, and attached messages. The real forwards of the
development corpus are measured by tests/test_realworld_figures.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.filters import FilterChain, FilterSettings, ForwardDetails, Kind, run_filters
from connector.filters.authentication import AuthMethod, SenderAuthentication
from connector.filters.lookups import NullLookups
from connector.mail.parse import parse_message

STAFF = FilterSettings(staff=("anna@staff.example.com",))
ORIGINAL = "luigi.bianchi@cliente.example.it"
REALWORLD = Path(__file__).parent / "data" / "realworld"


def proven(message):  # noqa: ANN001, ANN201 - the staff sender, authenticated as DKIM would
    return SenderAuthentication(message.from_.normalized, True, AuthMethod.DKIM_RESULT,
                                "test: dkim=pass")


def classify(message, settings: FilterSettings = STAFF):  # noqa: ANN001, ANN201
    return run_filters(message, account="support", trusted=False, chain=FilterChain(),
                       settings=settings, lookups=NullLookups(), authentication=proven(message))


def forward(subject: str, body: str, *, extra: str = ""):  # noqa: ANN201
    raw = (f"From: Anna <anna@staff.example.com>\nTo: support@example.com\nSubject: {subject}\n"
           f"{extra}Content-Type: text/plain; charset=utf-8\n\n{body}").encode()
    return classify(parse_message(raw))


BLOCKS = {
    "gmail en": "---------- Forwarded message ---------\nFrom: Luigi Bianchi <{o}>\n"
                "Date: Mon, 3 Jun 2024 at 10:12\nSubject: Stampante guasta\nTo: <a@x.example>\n",
    "gmail it": "---------- Messaggio inoltrato ---------\nDa: Luigi Bianchi <{o}>\n"
                "Date: lun 3 giu 2024 alle ore 10:12\nSubject: Stampante guasta\n",
    "gmail de": "---------- Weitergeleitete Nachricht ---------\nVon: Luigi Bianchi <{o}>\n"
                "Date: Mo., 3. Juni 2024 um 10:12 Uhr\nSubject: Stampante guasta\n",
    "gmail fr": "---------- Message transféré ---------\nDe : Luigi Bianchi <{o}>\n"
                "Date: lun. 3 juin 2024 à 10:12\nSubject: Stampante guasta\n",
    "gmail es": "---------- Mensaje reenviado ---------\nDe: Luigi Bianchi <{o}>\n"
                "Date: lun, 3 jun 2024 a las 10:12\nSubject: Stampante guasta\n",
    "gmail pl": "---------- Wiadomość przekazana dalej ---------\nOd: Luigi Bianchi <{o}>\n"
                "Date: pon., 3 cze 2024 o 10:12\nSubject: Stampante guasta\n",
    "gmail tr": "---------- Yönlendirilen ileti ----------\nGönderen: Luigi Bianchi <{o}>\n"
                "Date: 3 Haz 2024 Pzt 10:12\nSubject: Stampante guasta\n",
    "outlook en": "________________________________\nFrom: Luigi Bianchi <{o}>\n"
                  "Sent: Monday, June 3, 2024 10:12 AM\nTo: Anna <a@x.example>\n"
                  "Subject: Stampante guasta\n",
    "outlook en classic": "-----Original Message-----\nFrom: Luigi Bianchi [mailto:{o}]\n"
                          "Sent: Monday, June 3, 2024 10:12 AM\nTo: Anna\n"
                          "Subject: Stampante guasta\n",
    "outlook it": "________________________________\nDa: Bianchi, Luigi <{o}>\n"
                  "Inviato: lunedì 3 giugno 2024 10:12\nA: Anna <a@x.example>\n"
                  "Oggetto: Stampante guasta\n",
    "outlook de": "-----Ursprüngliche Nachricht-----\nVon: Luigi Bianchi <{o}>\n"
                  "Gesendet: Montag, 3. Juni 2024 10:12\nAn: Anna\nBetreff: Stampante guasta\n",
    "outlook fr": "-----Message d'origine-----\nDe : Luigi Bianchi <{o}>\n"
                  "Envoyé : lundi 3 juin 2024 10:12\nÀ : Anna\nObjet : Stampante guasta\n",
    "outlook es": "-----Mensaje original-----\nDe: Luigi Bianchi <{o}>\n"
                  "Enviado el: lunes, 3 de junio de 2024 10:12\nPara: Anna\n"
                  "Asunto: Stampante guasta\n",
    "outlook pl": "-----Oryginalna wiadomość-----\nOd: Luigi Bianchi <{o}>\n"
                  "Wysłano: poniedziałek, 3 czerwca 2024 10:12\nDo: Anna\n"
                  "Temat: Stampante guasta\n",
    "outlook tr": "-----Özgün İleti-----\nKimden: Luigi Bianchi <{o}>\n"
                  "Gönderildi: 3 Haziran 2024 Pazartesi 10:12\nKime: Anna\n"
                  "Konu: Stampante guasta\n",
    "outlook nl": "-----Oorspronkelijk bericht-----\nVan: Luigi Bianchi <{o}>\n"
                  "Verzonden: maandag 3 juni 2024 10:12\nAan: Anna\nOnderwerp: Stampante guasta\n",
    "outlook pt": "-----Mensagem original-----\nDe: Luigi Bianchi <{o}>\n"
                  "Enviada em: segunda-feira, 3 de junho de 2024 10:12\nPara: Anna\n"
                  "Assunto: Stampante guasta\n",
    "thunderbird en": "-------- Forwarded Message --------\nSubject: \tStampante guasta\n"
                      "Date: \tMon, 3 Jun 2024 10:12:00 +0200\nFrom: \tLuigi Bianchi <{o}>\n"
                      "To: \tanna@staff.example.com\n",
    "thunderbird it": "-------- Messaggio Inoltrato --------\nOggetto: \tStampante guasta\n"
                      "Data: \tMon, 3 Jun 2024 10:12:00 +0200\nMittente: \tLuigi Bianchi <{o}>\n"
                      "A: \tanna@staff.example.com\n",
    "thunderbird old": "-------- Original Message --------\nSubject: Stampante guasta\n"
                       "Date: Mon, 3 Jun 2024 10:12:00 +0200\nFrom: Luigi Bianchi <{o}>\n",
    "apple en": "Begin forwarded message:\n\nFrom: Luigi Bianchi <{o}>\n"
                "Subject: Stampante guasta\nDate: 3 June 2024 at 10:12:00 CEST\n",
    "apple it": "Inizio messaggio inoltrato:\n\nDa: Luigi Bianchi <{o}>\n"
                "Oggetto: Stampante guasta\nData: 3 giugno 2024 10:12:00 CEST\n",
    "apple de": "Anfang der weitergeleiteten Nachricht:\n\nVon: Luigi Bianchi <{o}>\n"
                "Betreff: Stampante guasta\nDatum: 3. Juni 2024 um 10:12:00 MESZ\n",
    "apple fr": "Début du message réexpédié :\n\nDe: Luigi Bianchi <{o}>\n"
                "Objet: Stampante guasta\nDate: 3 juin 2024 à 10:12:00 UTC+2\n",
    "apple es": "Inicio del mensaje reenviado:\n\nDe: Luigi Bianchi <{o}>\n"
                "Asunto: Stampante guasta\nFecha: 3 de junio de 2024, 10:12:00 CEST\n",
    "lotus notes": "----- Forwarded by Anna Rossi/IT/ACME on 03/06/2024 10:15 -----\n\n"
                   "Luigi Bianchi <{o}>\n03/06/2024 10:12\n\nTo\nanna@staff.example.com\ncc\n\n"
                   "Subject\nStampante guasta\n",
    "lotus notes classic": "---------------------- Forwarded by Anna Rossi/ACME on 03/06/2024 "
                           "10:15 ---------------------------\n\n\"Luigi Bianchi\" <{o}> on "
                           "03/06/2024 10:12:00\n\nTo:   anna@staff.example.com\ncc:\n"
                           "Subject:  Stampante guasta\n",
}
TEXT = "Buongiorno, la stampante del secondo piano non stampa più."


@pytest.mark.parametrize("prefix", ["Fwd: ", ""])
@pytest.mark.parametrize("client", BLOCKS)
def test_forward_blocks_of_clients_and_languages(client: str, prefix: str) -> None:
    block = BLOCKS[client].format(o=ORIGINAL)
    outcome = forward(f"{prefix}Stampante guasta", f"Please handle this.\n\n{block}\n{TEXT}\n")
    classification = outcome.classification
    assert classification is not None and classification.kind is Kind.FORWARDED, client
    details = classification.details
    assert isinstance(details, ForwardDetails)
    assert details.original_sender.email == ORIGINAL
    assert details.subject == "Stampante guasta"
    assert TEXT in details.text_body
    assert details.forwarder_text == "Please handle this."


def test_a_reply_quoting_an_original_message_is_not_a_forward() -> None:
    block = BLOCKS["outlook en classic"].format(o=ORIGINAL)
    outcome = forward("RE: Stampante guasta", f"Done, thanks.\n\n{block}\n{TEXT}\n",
                      extra="In-Reply-To: <x@cliente.example.it>\n")
    assert outcome.classification is None


def test_an_attached_message_is_the_forwarded_original() -> None:
    attached = (f"From: Luigi Bianchi <{ORIGINAL}>\nSubject: Stampante guasta\n\n{TEXT}\n")
    raw = ("From: anna@staff.example.com\nSubject: Stampante guasta\nMIME-Version: 1.0\n"
           'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\n'
           "See attached.\n--b\nContent-Type: message/rfc822\n\n" + attached + "--b--\n").encode()
    outcome = classify(parse_message(raw))
    details = outcome.classification.details
    assert isinstance(details, ForwardDetails)
    assert (details.original_sender.email, details.source) == (ORIGINAL, "attachment")


@pytest.mark.parametrize(
    ("path", "original"),
    [
        # Gmail in French, no Fwd: prefix.
        ("roundcube/attached-image-with-content-id-in-multipart-alternative.eml",
         "sender.name@gmail.com"),
        # Thunderbird's "Original Message" table, no prefix, threaded to the original.
        ("webklex_php_imap/issue-348.eml", "anothersender@testaddres.com"),
        ("roundcube/fwd_lines.eml", "thomas@roundcube.net"),
    ],
)
def test_real_forwards(path: str, original: str) -> None:
    message = parse_message((REALWORLD / path).read_bytes())
    assert message.from_ is not None
    outcome = classify(message, FilterSettings(staff=(message.from_.email.lower(),)))
    details = outcome.classification.details
    assert isinstance(details, ForwardDetails)
    assert details.original_sender.email.lower() == original


@pytest.mark.parametrize("line", [
    "---------- Forwarded message ---------", "-------- MESSAGGIO INOLTRATO --------",
    "---------- Weitergeleitete Nachricht ----------", "-------- Message transféré --------",
    "---------- İLETİLEN İLETİ ----------", "---- YÖNLENDİRİLMİŞ İLETİ ----",
    "Begin forwarded message:", "-----Ursprüngliche Nachricht-----",
    "-----ORIGINAL MESSAGE-----", "-------- Wiadomość przekazana dalej --------",
    "----- Forwarded by Anna Rossi/IT/ACME on 03/06/2024 10:15 -----",
    "----- Transféré par Anna -----", "________________________________",
    "-------- Mensagem encaminhada --------", "---- Orijinal mesaj ----",
])
def test_the_separator_pre_check_never_hides_a_separator_line(line: str) -> None:
    # Mail without any separator word skips the per-line separator matching; every line
    # the separator patterns match must hold one of those words, in any case.
    from connector.filters.classifiers import forwarded

    patterns = (forwarded._SEPARATOR, forwarded._RULE, forwarded._NOTES_SEPARATOR)
    assert any(p.match(line) for p in patterns), line
    assert forwarded._may_hold_separator(f"Hello,\n\n{line}\nFrom: x")
    assert not forwarded._may_hold_separator("Hello,\n\nplease call me back.\n-- \nAnna")
