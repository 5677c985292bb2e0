"""Classification by marker headers (never by subject), subject helpers, id normalisation."""

from __future__ import annotations

import pytest

from connector.pec import (
    PecKind,
    ReceiptKind,
    classify_headers,
    looks_like_pec_subject,
    normalize_msgid,
    strip_pec_prefix,
    strip_service_prefix,
)
from connector.pec.classify import kind_from_tipo
from connector.pec.ids import msgid_list, unique


@pytest.mark.parametrize(
    "value,kind",
    [
        ("accettazione", ReceiptKind.ACCETTAZIONE),
        ("non-accettazione", ReceiptKind.NON_ACCETTAZIONE),
        ("presa-in-carico", ReceiptKind.PRESA_IN_CARICO),
        ("avvenuta-consegna", ReceiptKind.AVVENUTA_CONSEGNA),
        ("errore-consegna", ReceiptKind.ERRORE_CONSEGNA),
        ("preavviso-errore-consegna", ReceiptKind.PREAVVISO_ERRORE_CONSEGNA),
        ("rilevazione-virus", ReceiptKind.RILEVAZIONE_VIRUS),
        (" Avvenuta-Consegna ", ReceiptKind.AVVENUTA_CONSEGNA),
    ],
)
def test_every_receipt_kind(value: str, kind: ReceiptKind) -> None:
    result = classify_headers([("X-Ricevuta", value)])
    assert result.kind is PecKind.RECEIPT
    assert result.receipt_kind is kind
    assert result.notes == ()


@pytest.mark.parametrize(
    "trasporto,ricevuta",
    [("X-Trasporto", "X-Ricevuta"), ("x-trasporto", "x-ricevuta"),
     ("X-TRASPORTO", "X-RICEVUTA"), ("x-TrAsPoRtO", "x-RiCeVuTa")],
)
def test_header_names_are_case_insensitive(trasporto: str, ricevuta: str) -> None:
    assert classify_headers([(trasporto, "posta-certificata")]).kind is PecKind.TRANSPORT
    assert classify_headers([(ricevuta, "accettazione")]).kind is PecKind.RECEIPT


def test_transport_anomaly_and_ordinary() -> None:
    assert classify_headers([("X-Trasporto", "posta-certificata")]).kind is PecKind.TRANSPORT
    assert classify_headers([("X-Trasporto", "Errore")]).kind is PecKind.ANOMALY
    assert classify_headers([("Subject", "hello")]).kind is PecKind.ORDINARY
    assert classify_headers([]).kind is PecKind.ORDINARY


def test_subjects_never_decide() -> None:
    # SdI notices titled like receipts are envelopes; a human "CONSEGNA:" subject is ordinary.
    sdi = classify_headers([
        ("Subject", "POSTA CERTIFICATA: Ricevuta di consegna 7339338"),
        ("X-Trasporto", "posta-certificata"),
    ])
    assert sdi.kind is PecKind.TRANSPORT
    human = classify_headers([("Subject", "CONSEGNA: ACCETTAZIONE: POSTA CERTIFICATA: x")])
    assert human.kind is PecKind.ORDINARY


def test_x_riferimento_message_id_does_not_make_a_receipt() -> None:
    result = classify_headers([("X-Riferimento-Message-ID", "<a@b>"),
                               ("X-Trasporto", "posta-certificata")])
    assert result.kind is PecKind.TRANSPORT
    assert classify_headers([("X-Riferimento-Message-ID", "<a@b>")]).kind is PecKind.ORDINARY


def test_unknown_values_and_conflicts_are_noted() -> None:
    other = classify_headers([("X-Ricevuta", "rem-evidence-new")])
    assert other.kind is PecKind.RECEIPT and other.receipt_kind is ReceiptKind.OTHER
    assert any("unknown X-Ricevuta" in n for n in other.notes)
    both = classify_headers([("X-Trasporto", "posta-certificata"), ("X-Ricevuta", "accettazione")])
    assert both.kind is PecKind.RECEIPT
    assert any("both" in n for n in both.notes)
    odd = classify_headers([("X-Trasporto", "boh")])
    assert odd.kind is PecKind.ORDINARY and odd.notes
    twice = classify_headers([("X-Ricevuta", "accettazione"), ("X-Ricevuta", "errore-consegna")])
    assert twice.receipt_kind is ReceiptKind.ACCETTAZIONE and twice.notes


def test_kind_from_daticert_tipo() -> None:
    assert kind_from_tipo("posta-certificata") == (PecKind.TRANSPORT, None)
    assert kind_from_tipo("Avvenuta-Consegna") == (PecKind.RECEIPT,
                                                   ReceiptKind.AVVENUTA_CONSEGNA)
    assert kind_from_tipo("fattura") == (PecKind.ORDINARY, None)


@pytest.mark.parametrize(
    "subject,expected",
    [
        ("POSTA CERTIFICATA: Fattura 12", True),
        ("posta certificata: fattura", True),
        ("[List] [SPAM] POSTA CERTIFICATA: x", True),
        ("Re: POSTA CERTIFICATA: x", False),
        ("ACCETTAZIONE: x", False),
        ("", False),
        (None, False),
    ],
)
def test_looks_like_pec_subject(subject: str | None, expected: bool) -> None:
    assert looks_like_pec_subject(subject) is expected


def test_strip_exactly_one_prefix() -> None:
    assert strip_pec_prefix("POSTA CERTIFICATA: POSTA CERTIFICATA: EXAMPLE") == (
        "POSTA CERTIFICATA: EXAMPLE"
    )
    assert strip_pec_prefix("POSTA CERTIFICATA: Re: archetipo") == "Re: archetipo"
    assert strip_pec_prefix("posta certificata:x") == "x"
    assert strip_pec_prefix("Hello") == "Hello"


def test_strip_service_prefix_prefers_the_longest() -> None:
    assert strip_service_prefix(
        "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: Pratica 1") == "Pratica 1"
    assert strip_service_prefix("AVVISO DI MANCATA CONSEGNA: Test PEC") == "Test PEC"
    assert strip_service_prefix("ACCETTAZIONE: test private") == "test private"
    assert strip_service_prefix("ANOMALIA MESSAGGIO: ciao") == "ciao"
    assert strip_service_prefix("CONSEGNA: CONSEGNA: x") == "CONSEGNA: x"
    assert strip_service_prefix("Nothing") == "Nothing"


def test_msgid_forms() -> None:
    assert normalize_msgid("opec1.2@pec.it") == "opec1.2@pec.it"
    assert normalize_msgid(" <a@b> ") == "a@b"
    assert normalize_msgid("<a@b> (comment)") == "a@b"
    assert normalize_msgid("<a@\r\n b>") == "a@b"
    assert normalize_msgid("") is None and normalize_msgid(None) is None
    assert normalize_msgid("<>") is None and normalize_msgid("  ") is None
    assert msgid_list("<a@b>\r\n <c@d> <>") == ("a@b", "c@d")
    assert unique(["<a>", None, "<b>", "<a>"]) == ("<a>", "<b>")
