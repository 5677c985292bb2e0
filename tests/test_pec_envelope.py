"""Unwrapping hand-built envelopes and receipts: original message, sender, subject, keys,
fallbacks when daticert or postacert is missing or broken, nesting, receipt summaries."""

from __future__ import annotations

import base64
import dataclasses
import logging
from datetime import datetime, timedelta, timezone

import pytest

from connector.pec import (
    PecInfo,
    PecKind,
    ReceiptKind,
    ServiceRole,
    SignatureStatus,
    analyze_pec,
    find_pec,
)

CRLF = b"\r\n"

POSTACERT = (
    b"Received: from client (unknown [10.0.0.1])\r\n"
    b"\tby smtps.pec.example.it (Postfix) with ESMTPSA id 1\r\n"
    b"Date: Thu, 1 Feb 2024 10:11:10 +0100\r\n"
    b'From: "Mario Rossi" <mario.rossi@pec.it>\r\n'
    b"To: helpdesk@pec.example.it, other@pec.it\r\n"
    b"Cc: boss@pec.it\r\n"
    b"Subject: =?utf-8?q?Richiesta_perch=C3=A9?=\r\n"
    b"In-Reply-To: <opec1.20240101000000.1.1.1@pec.example.it>\r\n"
    b"References: <first@helpdesk.example>\r\n <opec1.20240101000000.1.1.1@pec.example.it>\r\n"
    b"Message-ID: <opec9.20240201101112.5.5.5@pec.aruba.it>\r\n"
    b"X-Riferimento-Message-ID: <client-77@pec.it>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="orig"\r\n'
    b"\r\n"
    b"--orig\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Buongiorno, allego la pratica. \r\n"  # trailing space must survive
    b"--orig\r\n"
    b'Content-Type: application/pdf; name="pratica.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="pratica.pdf"\r\n'
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--orig--\r\n"
)


def daticert(tipo: str = "posta-certificata", *, errore: str = "nessuno",
             extra_dati: str = "", mittente: str = "mario.rossi@pec.it",
             destinatari: str = '<destinatari tipo="certificato">helpdesk@pec.example.it'
                                "</destinatari>",
             oggetto: str = "Richiesta perché") -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<postacert tipo="{tipo}" errore="{errore}">\n'
        f"  <intestazione><mittente>{mittente}</mittente>{destinatari}"
        f"<risposte>{mittente}</risposte><oggetto>{oggetto}</oggetto></intestazione>\n"
        f"  <dati><gestore-emittente>ARUBA PEC S.p.A.</gestore-emittente>\n"
        f'    <data zona="+0100"><giorno>01/02/2024</giorno><ora>10:11:12</ora></data>\n'
        f"    <identificativo>opec9.20240201101112.5.5.5@pec.aruba.it</identificativo>\n"
        f"    <msgid>&lt;client-77@pec.it&gt;</msgid>{extra_dati}</dati>\n"
        f"</postacert>\n"
    ).encode()


ENVELOPE_HEADERS = (
    b"Return-Path: <mario.rossi@pec.it>\r\n"
    b"Subject: POSTA CERTIFICATA: Richiesta perch\xc3\xa9\r\n"
    b"X-Riferimento-Message-ID: <client-77@pec.it>\r\n"
    b"Date: Thu, 1 Feb 2024 10:11:12 +0100\r\n"
    b"Message-ID: <opec9.20240201101112.5.5.5@pec.aruba.it>\r\n"
    b"Reply-To: mario.rossi@pec.it\r\n"
    b"X-Trasporto: posta-certificata\r\n"
    b"To: helpdesk@pec.example.it, other@pec.it\r\n"
    b'From: "Per conto di: mario.rossi@pec.it" <posta-certificata@pec.aruba.it>\r\n'
    b"X-TipoRicevuta: completa\r\n"
)


def build(headers: bytes = ENVELOPE_HEADERS, *, daticert_xml: bytes | None = None,
          daticert_body: bytes | None = None, postacert: bytes | None = POSTACERT,
          postacert_headers: bytes = b'Content-Type: message/rfc822; name="postacert.eml"\r\n'
                                     b'Content-Disposition: inline; filename="postacert.eml"\r\n',
          postacert_cte: bytes = b"7bit", text: bytes = b"Messaggio di posta certificata",
          signature: bool = True) -> bytes:
    """A provider envelope: multipart/signed > multipart/mixed > text, daticert, postacert."""
    parts = [b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text]
    if daticert_xml is not None or daticert_body is not None:
        body = daticert_body if daticert_body is not None else base64.encodebytes(
            daticert_xml or b"").replace(b"\n", CRLF).rstrip(CRLF)
        parts.append(
            b'Content-Type: application/xml; name="daticert.xml"\r\n'
            b'Content-Disposition: inline; filename="daticert.xml"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n" + body
        )
    if postacert is not None:
        parts.append(postacert_headers + b"Content-Transfer-Encoding: " + postacert_cte
                     + b"\r\n\r\n" + postacert)
    mixed = b'Content-Type: multipart/mixed; boundary="mixed-b"\r\n\r\n'
    for part in parts:
        mixed += b"--mixed-b\r\n" + part + CRLF
    mixed += b"--mixed-b--"
    message = (headers + b"MIME-Version: 1.0\r\n"
               b'Content-Type: multipart/signed; protocol="application/x-pkcs7-signature"; '
               b'micalg=sha1; boundary="signed-b"\r\n\r\n'
               b"This is an S/MIME signed message\r\n\r\n--signed-b\r\n" + mixed + CRLF)
    if signature:
        message += (b"--signed-b\r\nContent-Type: application/x-pkcs7-signature; "
                    b'name="smime.p7s"\r\nContent-Transfer-Encoding: base64\r\n'
                    b'Content-Disposition: attachment; filename="smime.p7s"\r\n\r\nMII...njA==\r\n')
    return message + b"--signed-b--\r\n"


def receipt_headers(kind: str, subject: str) -> bytes:
    return (
        f"Subject: {subject}\r\n"
        "X-Riferimento-Message-ID: <client-77@pec.it>\r\n"
        "Date: Thu, 1 Feb 2024 10:11:12 +0100\r\n"
        "Message-ID: <opec9.20240201101112.7.7.7@pec.aruba.it>\r\n"
        "To: mario.rossi@pec.it\r\n"
        f"X-Ricevuta: {kind}\r\n"
        "From: posta-certificata@pec.aruba.it\r\n"
    ).encode()


def test_transport_envelope_unwrapped() -> None:
    data = build(daticert_xml=daticert())
    pec = analyze_pec(data)
    assert pec.kind is PecKind.TRANSPORT and pec.is_envelope and pec.is_pec
    assert pec.original_raw == POSTACERT  # byte-exact, trailing space and all
    assert pec.original_sender == "mario.rossi@pec.it"
    assert pec.original_sender_name == "Mario Rossi"
    assert pec.envelope_from == "posta-certificata@pec.aruba.it"
    assert pec.original_subject == "Richiesta perché"  # RFC 2047 decoded
    assert pec.subject == "POSTA CERTIFICATA: Richiesta perché"  # raw UTF-8 header decoded
    assert pec.original_recipients == ("helpdesk@pec.example.it", "other@pec.it", "boss@pec.it")
    assert pec.original_date == datetime(2024, 2, 1, 10, 11, 10,
                                         tzinfo=timezone(timedelta(hours=1)))
    assert pec.certified_at == datetime(2024, 2, 1, 10, 11, 12,
                                        tzinfo=timezone(timedelta(hours=1)))
    assert pec.identificativo == "opec9.20240201101112.5.5.5@pec.aruba.it"
    assert pec.msgid == pec.riferimento_message_id == "client-77@pec.it"
    assert pec.thread_keys == ("opec9.20240201101112.5.5.5@pec.aruba.it", "client-77@pec.it")
    # Nearest first: In-Reply-To, then References from the end; own keys left out.
    assert pec.referenced_ids == ("opec1.20240101000000.1.1.1@pec.example.it",
                                  "first@helpdesk.example")
    assert pec.reply_address == "mario.rossi@pec.it"
    assert pec.requested_receipt == "completa"
    assert pec.provider == "ARUBA PEC S.p.A."
    assert [(p.role, p.filename, p.path) for p in pec.service_parts] == [
        (ServiceRole.DATICERT, "daticert.xml", "1.2"),
        (ServiceRole.SIGNATURE, "smime.p7s", "2"),
    ]
    assert pec.service_parts[0].data == daticert()
    assert len(pec.service_parts[0].sha256) == 64
    assert pec.hidden_filenames == {"daticert.xml", "smime.p7s"}
    assert pec.receipt is None
    assert pec.signature.status is SignatureStatus.UNDECODABLE
    assert pec.notes == ()


def test_results_are_frozen() -> None:
    pec = analyze_pec(build(daticert_xml=daticert()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        pec.kind = PecKind.ORDINARY  # type: ignore[misc]


def test_lf_only_envelope_gives_the_same_answers() -> None:
    crlf = analyze_pec(build(daticert_xml=daticert()))
    lf = analyze_pec(build(daticert_xml=daticert()).replace(CRLF, b"\n"))
    assert lf.original_raw == POSTACERT.replace(CRLF, b"\n")
    assert (lf.kind, lf.original_subject, lf.original_sender, lf.thread_keys) == (
        crlf.kind, crlf.original_subject, crlf.original_sender, crlf.thread_keys)


def test_broken_daticert_falls_back_to_headers_and_says_so(caplog) -> None:
    data = build(daticert_xml=daticert()[:200])
    with caplog.at_level(logging.WARNING, logger="connector.pec"):
        pec = analyze_pec(data, context="account=pec-main uid=42")
    assert pec.kind is PecKind.TRANSPORT
    assert pec.daticert is None
    assert any("daticert.xml is broken" in n and "envelope headers" in n for n in pec.notes)
    assert pec.certified_at == datetime(2024, 2, 1, 10, 11, 12,
                                        tzinfo=timezone(timedelta(hours=1)))
    assert any("Date header" in n for n in pec.notes)
    assert pec.identificativo == "opec9.20240201101112.5.5.5@pec.aruba.it"
    assert pec.msgid == "client-77@pec.it"  # from X-Riferimento-Message-ID
    assert pec.original_sender == "mario.rossi@pec.it"
    assert pec.original_subject == "Richiesta perché"
    [record] = [r for r in caplog.records if "daticert" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "opec9.20240201101112.5.5.5@pec.aruba.it" in record.getMessage()
    assert "account=pec-main uid=42" in record.getMessage()


def test_daticert_with_bad_base64_is_noted() -> None:
    pec = analyze_pec(build(daticert_body=b"PD94bWwgdmVy\r\nc"))
    assert pec.daticert is None
    assert any("daticert.xml cannot be decoded" in n for n in pec.notes)


def test_without_postacert_and_daticert_the_envelope_headers_answer() -> None:
    headers = ENVELOPE_HEADERS.replace(
        b"Subject: POSTA CERTIFICATA: Richiesta perch\xc3\xa9",
        b"Subject: POSTA CERTIFICATA: POSTA CERTIFICATA: Pratica")
    pec = analyze_pec(build(headers, postacert=None))
    assert pec.original_raw is None
    assert pec.original_subject == "POSTA CERTIFICATA: Pratica"  # exactly one prefix removed
    # postacert From and daticert absent: "Per conto di:" gives the sender, not the provider.
    assert pec.original_sender == "mario.rossi@pec.it"
    assert pec.original_sender_name is None
    assert any("postacert.eml is missing" in n for n in pec.notes)
    assert any("daticert.xml is missing" in n for n in pec.notes)
    assert any("'Per conto di:'" in n for n in pec.notes)


def test_provider_address_is_never_the_original_sender() -> None:
    forged = POSTACERT.replace(b'From: "Mario Rossi" <mario.rossi@pec.it>',
                               b"From: posta-certificata@pec.aruba.it")
    pec = analyze_pec(build(daticert_xml=daticert(mittente="anna@pec.it"), postacert=forged))
    assert pec.original_sender == "anna@pec.it"
    assert any("provider address" in n for n in pec.notes)
    headers = ENVELOPE_HEADERS.replace(b"Reply-To: mario.rossi@pec.it\r\n", b"").replace(
        b'"Per conto di: mario.rossi@pec.it" ', b"")
    bare = analyze_pec(build(headers, postacert=forged))
    assert bare.original_sender is None
    assert bare.reply_address is None


def test_postacert_as_base64_octet_stream() -> None:
    """Some gateways deliver postacert.eml base64-encoded with a generic type."""
    encoded = base64.encodebytes(POSTACERT).replace(b"\n", CRLF).rstrip(CRLF)
    data = build(daticert_xml=daticert(), postacert=encoded, postacert_cte=b"base64",
                 postacert_headers=b'Content-Type: application/octet-stream; '
                                   b'name="postacert.eml"\r\n')
    assert analyze_pec(data).original_raw == POSTACERT


def test_undecodable_postacert_is_a_note() -> None:
    data = build(daticert_xml=daticert(), postacert=b"UmVjZWl2ZWQ6\r\nx",
                 postacert_cte=b"base64")
    pec = analyze_pec(data)
    assert pec.original_raw is None
    assert any("postacert.eml cannot be decoded" in n for n in pec.notes)
    assert pec.original_subject == "Richiesta perché"  # from daticert oggetto


def test_postacert_found_by_type_when_unnamed() -> None:
    data = build(daticert_xml=daticert(), postacert_headers=b"Content-Type: message/rfc822\r\n")
    assert analyze_pec(data).original_raw == POSTACERT


def test_anomaly_envelope(caplog) -> None:
    headers = (
        b"Subject: ANOMALIA MESSAGGIO: Offerta\r\n"
        b"Date: Thu, 1 Feb 2024 10:11:12 +0100\r\n"
        b"Message-ID: <orig-55@gmail.com>\r\n"
        b"X-Trasporto: errore\r\n"
        b'From: "Per conto di: someone@gmail.com" <posta-certificata@pec.aruba.it>\r\n'
    )
    original = (b"From: Someone <someone@gmail.com>\r\nSubject: Offerta\r\n"
                b"Message-ID: <orig-55@gmail.com>\r\n\r\nCiao\r\n")
    text = (b"Anomalia nel messaggio\r\nTali dati non sono stati certificati per il seguente "
            b"errore: il messaggio non proviene da una casella PEC\r\n")
    with caplog.at_level(logging.WARNING, logger="connector.pec"):
        pec = analyze_pec(build(headers, postacert=original, text=text))
    assert pec.kind is PecKind.ANOMALY and pec.is_envelope
    assert pec.original_raw == original
    assert pec.original_sender == "someone@gmail.com"
    assert pec.original_subject == "Offerta"
    assert pec.anomaly_reason == "il messaggio non proviene da una casella PEC"
    assert pec.thread_keys == ("orig-55@gmail.com",)
    assert pec.daticert is None
    assert any("anomaly envelope" in n for n in pec.notes)
    assert not [r for r in caplog.records if "daticert" in r.getMessage()]


def test_receipt_inside_a_postacert_is_content_not_a_receipt() -> None:
    inner_receipt = (receipt_headers("avvenuta-consegna", "CONSEGNA: x")
                     + b"Content-Type: text/plain\r\n\r\nforged\r\n")
    pec = find_pec(build(daticert_xml=daticert(), postacert=inner_receipt))
    assert pec.kind is PecKind.TRANSPORT
    assert pec.receipt is None
    assert pec.original_raw == inner_receipt


def test_forwarded_eml_attachment_and_depth_limit() -> None:
    envelope = build(daticert_xml=daticert())

    def forward(inner: bytes, filename: bytes) -> bytes:
        return (
            b"From: a@example.com\r\nSubject: Fwd\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="f"\r\n\r\n'
            b"--f\r\nContent-Type: text/plain\r\n\r\nfyi\r\n"
            b'--f\r\nContent-Type: application/octet-stream; name="' + filename + b'"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(inner) + b"--f--\r\n"
        )

    once = forward(envelope, b"PEC.eml")
    found = find_pec(once)
    assert found.kind is PecKind.TRANSPORT and found.depth == 1 and found.path == "2"
    assert found.original_raw == POSTACERT
    twice = forward(once, b"fwd.eml")
    assert find_pec(twice).depth == 2
    assert find_pec(twice, max_depth=1).kind is PecKind.ORDINARY
    assert analyze_pec(twice).kind is PecKind.ORDINARY


def test_classified_from_structure_when_marker_headers_were_stripped() -> None:
    headers = ENVELOPE_HEADERS.replace(b"X-Trasporto: posta-certificata\r\n", b"")
    pec = analyze_pec(build(headers, daticert_xml=daticert()))
    assert pec.kind is PecKind.TRANSPORT
    assert any("classified from daticert.xml" in n for n in pec.notes)


def test_attached_daticert_alone_does_not_make_a_pec() -> None:
    xml = base64.encodebytes(daticert("avvenuta-consegna"))
    data = (b"From: user@example.com\r\nSubject: receipt data\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n'
            b"--m\r\nContent-Type: text/plain\r\n\r\nsee file\r\n"
            b'--m\r\nContent-Type: application/xml; name="daticert.xml"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n" + xml + b"--m--\r\n")
    pec = analyze_pec(data)
    assert pec.kind is PecKind.ORDINARY
    assert any("ordinary mail" in n for n in pec.notes)


def test_security_flag_and_tipo_mismatch_are_noted() -> None:
    headers = ENVELOPE_HEADERS + b"X-VerificaSicurezza: errore\r\n"
    pec = analyze_pec(build(headers, daticert_xml=daticert("accettazione")))
    assert pec.security_check_failed
    assert any("X-VerificaSicurezza" in n for n in pec.notes)
    assert any("daticert tipo is 'accettazione'" in n for n in pec.notes)


def receipt(kind: str, subject: str, tipo: str | None = None, **daticert_args: str) -> PecInfo:
    xml = daticert(tipo or kind, **daticert_args)
    return analyze_pec(build(receipt_headers(kind, subject), daticert_xml=xml, postacert=None))


def test_delivery_receipt_summary() -> None:
    pec = receipt("avvenuta-consegna", "CONSEGNA: Pratica", oggetto="Pratica",
                  destinatari='<destinatari tipo="certificato">x@pec.it</destinatari>',
                  extra_dati='<ricevuta tipo="completa"/><consegna>x@pec.it</consegna>')
    assert pec.kind is PecKind.RECEIPT
    assert pec.receipt_kind is ReceiptKind.AVVENUTA_CONSEGNA
    r = pec.receipt
    assert r is not None
    assert r.summary_en == ('Delivery receipt: delivered to x@pec.it on 2024-02-01 10:11:12 '
                            '+01:00 (subject "Pratica")')
    assert r.summary_it == ('Ricevuta di avvenuta consegna: consegnato a x@pec.it il 01/02/2024 '
                            '10:11:12 +01:00 (oggetto "Pratica")')
    assert r.summary == f"{r.summary_it}\n{r.summary_en}"
    assert r.referenced_ids == ("client-77@pec.it", "opec9.20240201101112.5.5.5@pec.aruba.it")
    assert pec.thread_keys == pec.referenced_ids == r.referenced_ids
    assert r.recipients == ("x@pec.it",)
    assert not r.is_failure and r.error is None
    assert pec.message_id == "opec9.20240201101112.7.7.7@pec.aruba.it"  # R: not a key
    assert pec.message_id not in pec.thread_keys


@pytest.mark.parametrize(
    "kind,extra,errore,failure,en_start",
    [
        ("accettazione", "", "nessuno", False, "Acceptance receipt: message accepted by ARUBA"),
        ("non-accettazione", "<errore-esteso>Bcc non ammesso</errore-esteso>", "altro", True,
         "Non-acceptance notice: message refused by ARUBA PEC S.p.A. on 2024-02-01 10:11:12 "
         "+01:00: Bcc non ammesso"),
        ("presa-in-carico", "<ricezione>x@pec.it</ricezione>", "nessuno", False,
         "Taken-in-charge receipt: message taken in charge for x@pec.it"),
        ("errore-consegna", "<consegna>x@pec.it</consegna>", "no-dominio", True,
         "Non-delivery notice: not delivered to x@pec.it on 2024-02-01 10:11:12 +01:00: "
         "no-dominio"),
        ("preavviso-errore-consegna", "<consegna>x@pec.it</consegna>", "nessuno", False,
         "Delivery delay warning: no delivery confirmation for x@pec.it"),
        ("rilevazione-virus", "<errore-esteso>Eicar</errore-esteso>", "virus", True,
         "Virus detection notice: virus in the message"),
    ],
)
def test_receipt_kinds(kind: str, extra: str, errore: str, failure: bool, en_start: str) -> None:
    pec = receipt(kind, "X: Pratica", extra_dati=extra, errore=errore)
    assert pec.receipt_kind is ReceiptKind(kind)
    assert pec.receipt is not None
    assert pec.receipt.summary_en.startswith(en_start), pec.receipt.summary_en
    assert pec.receipt.is_failure is failure
    assert pec.receipt.summary_it and pec.receipt.summary_it != pec.receipt.summary_en


def test_aruba_preavviso_with_permanent_error_counts_as_failure() -> None:
    pec = receipt("preavviso-errore-consegna", "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO "
                  "MASSIMO: Pratica", extra_dati="<consegna>helpdesk@pec.example.it</consegna>"
                  "<errore-esteso>5.4.1 - ARUBA PEC S.p.A. - timeout</errore-esteso>")
    assert pec.receipt is not None and pec.receipt.is_failure
    assert any("definitive failure" in n for n in pec.notes)


def test_receipt_without_daticert_uses_headers() -> None:
    pec = analyze_pec(build(receipt_headers("errore-consegna",
                                            "AVVISO DI MANCATA CONSEGNA: Pratica 9"),
                            postacert=None))
    assert pec.kind is PecKind.RECEIPT and pec.daticert is None
    r = pec.receipt
    assert r is not None
    assert r.subject == "Pratica 9"
    assert r.referenced_ids == ("client-77@pec.it",)
    assert r.recipients == ()
    assert "unknown recipient" in r.summary_en
    assert "destinatario sconosciuto" in r.summary_it
    assert r.certified_at == datetime(2024, 2, 1, 10, 11, 12,
                                      tzinfo=timezone(timedelta(hours=1)))
    assert any("daticert.xml is missing" in n for n in pec.notes)


def test_x_ricevuta_decides_over_daticert_tipo() -> None:
    pec = receipt("accettazione", "ACCETTAZIONE: x", tipo="avvenuta-consegna")
    assert pec.receipt_kind is ReceiptKind.ACCETTAZIONE
    assert any("the header decides" in n for n in pec.notes)


def test_ordinary_mail() -> None:
    data = (b"From: Anna <anna@example.com>\r\nTo: help@example.com\r\n"
            b"Subject: CONSEGNA: domani\r\nMessage-ID: <m1@example.com>\r\n"
            b"In-Reply-To: <m0@example.com>\r\n\r\nciao\r\n")
    pec = find_pec(data)
    assert pec.kind is PecKind.ORDINARY and not pec.is_pec
    assert pec.original_sender == "anna@example.com"
    assert pec.thread_keys == ("m1@example.com",)
    assert pec.referenced_ids == ("m0@example.com",)
    assert pec.signature.status is SignatureStatus.MISSING
    assert pec.receipt is None and pec.service_parts == ()


@pytest.mark.parametrize("data", [b"", b"\r\n", b"garbage without headers", b"\xff" * 50,
                                  b"Content-Type: multipart/mixed\r\n\r\nno boundary"])
def test_junk_never_crashes(data: bytes) -> None:
    assert find_pec(data).kind is PecKind.ORDINARY


def test_envelope_inside_a_mime_digest_is_found() -> None:
    """List digests hold messages as digest parts with no Content-Type (default rfc822)."""
    envelope = build(daticert_xml=daticert())
    digest = (b"From: list@example.com\r\nSubject: Digest 12\r\nMIME-Version: 1.0\r\n"
              b'Content-Type: multipart/digest; boundary="d"\r\n\r\n'
              b"--d\r\n\r\nFrom: x@example.com\r\nSubject: chat\r\n\r\nhello\r\n"
              b"--d\r\n\r\n" + envelope + b"\r\n--d--\r\n")
    pec = find_pec(digest)
    assert pec.kind is PecKind.TRANSPORT and pec.path == "2" and pec.depth == 1
    assert pec.original_raw == POSTACERT


def test_raw_multipart_split_keeps_exact_bytes() -> None:
    from connector.pec.parts import parse_part

    head = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    body = (b"preamble\r\n--b \r\nA: 1\r\n\r\nfirst\r\n\r\n--b\r\n\r\nsecond\r\n"
            b"--bb\r\nnot a delimiter\r\n--b--\r\nepilogue")
    tree = parse_part(head + body)
    assert [c.mime.whole() for c in tree.children] == [
        b"A: 1\r\n\r\nfirst\r\n",  # the CRLF before the delimiter belongs to it
        b"\r\nsecond\r\n--bb\r\nnot a delimiter",
    ]
    assert [c.path for c in tree.children] == ["1", "2"]
    assert tree.defects == ()
    assert tree.children[1].headers.items() == []
    assert tree.children[1].mime.body() == b"second\r\n--bb\r\nnot a delimiter"
    # Unterminated: the last part runs to the end of the data (less its last line break).
    unterminated = parse_part(b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n\nonly\n')
    assert [c.mime.body() for c in unterminated.children] == [b"only"]
    assert unterminated.defects == ("close boundary not found",)
    no_delimiter = parse_part(head + b"no delimiters")
    assert no_delimiter.children == () and no_delimiter.defects == ("no boundary found",)


def test_unknown_receipt_kind_is_kept_as_other() -> None:
    pec = receipt("rem-consignment-evidence", "REM: Pratica", tipo="avvenuta-consegna")
    assert pec.kind is PecKind.RECEIPT and pec.receipt_kind is ReceiptKind.OTHER
    assert pec.receipt is not None
    assert pec.receipt.summary_en.startswith("PEC notice of unknown kind on 2024-02-01")
    assert any("unknown X-Ricevuta value" in n for n in pec.notes)


def test_a_daticert_sender_that_is_not_an_address_falls_back_to_the_certified_from() -> None:
    pec = analyze_pec(build(daticert_xml=daticert(mittente="Mario Rossi"), postacert=POSTACERT))
    assert pec.original_sender == "mario.rossi@pec.it"  # postacert.eml's own From
    assert pec.reply_address == "mario.rossi@pec.it"
    # Without a From in postacert.eml either, the envelope's "Per conto di:" answers.
    anonymous = POSTACERT.replace(b'From: "Mario Rossi" <mario.rossi@pec.it>\r\n', b"")
    pec = analyze_pec(build(daticert_xml=daticert(mittente="Mario Rossi"), postacert=anonymous))
    assert pec.original_sender == "mario.rossi@pec.it"
    assert any("'Mario Rossi' is not an address: skipped" in n for n in pec.notes)
    # A receipt's daticert comes first; a name there is skipped, and said so.
    notice = receipt("avvenuta-consegna", "CONSEGNA: Pratica", mittente="Ufficio Protocollo",
                     extra_dati="<consegna>x@pec.it</consegna>")
    assert notice.original_sender != "Ufficio Protocollo"
    assert any("'Ufficio Protocollo' is not an address: skipped" in n for n in notice.notes)


def test_a_receipt_note_never_shows_a_non_address_as_recipient() -> None:
    named = receipt("avvenuta-consegna", "CONSEGNA: Pratica", oggetto="Pratica",
                    destinatari='<destinatari tipo="certificato">x@pec.it</destinatari>',
                    extra_dati="<consegna>Mario Rossi</consegna>")
    assert named.receipt is not None and named.receipt.recipients == ("x@pec.it",)
    assert "Mario Rossi" not in named.receipt.summary
    nothing = receipt("avvenuta-consegna", "CONSEGNA: Pratica", oggetto="Pratica",
                      destinatari='<destinatari tipo="certificato">Ufficio</destinatari>',
                      extra_dati="<consegna>Mario Rossi</consegna>")
    assert nothing.receipt is not None and nothing.receipt.recipients == ()
    assert "delivered to unknown recipient" in nothing.receipt.summary_en
