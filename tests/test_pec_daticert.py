"""daticert.xml parsing: the observed variations, and broken or hostile files."""

from __future__ import annotations

from datetime import timedelta

import pytest

from connector.errors import ParseError
from connector.pec import DaticertError, RecipientType, parse_daticert

ERRORE_CONSEGNA_2026 = b"""<?xml version="1.0" encoding="UTF-8"?>
<postacert tipo="errore-consegna" errore="altro">
    <intestazione>
        <mittente>mittente@pec.example</mittente>
        <destinatari tipo="certificato">collaudo-inesistente-7k2q9@pec.it</destinatari>
        <risposte>mittente@pec.example</risposte>
        <oggetto>Collaudo pecmailer 2</oggetto>
    </intestazione>
    <dati>
        <gestore-emittente>ARUBA PEC S.p.A.</gestore-emittente>
        <data zona="+0200"><giorno>19/09/2026</giorno><ora>15:41:20</ora></data>
        <identificativo>jpec13216.20260919154120.06118.4003.1.1@pec.aruba.it</identificativo>
        <msgid>&lt;m_Xbftyw1I-LSDVCM3@pec.it&gt;</msgid>
        <consegna>collaudo-inesistente-7k2q9@pec.it</consegna>
        <errore-esteso>5.1.1 - ARUBA PEC S.p.A. - indirizzo non valido</errore-esteso>
    </dati>
</postacert>
"""


def test_every_field_of_an_error_receipt() -> None:
    d = parse_daticert(ERRORE_CONSEGNA_2026)
    assert d.tipo == "errore-consegna"
    assert d.errore == "altro"
    assert d.mittente == "mittente@pec.example"
    assert [(r.address, r.type, r.type_raw) for r in d.destinatari] == [
        ("collaudo-inesistente-7k2q9@pec.it", RecipientType.CERTIFICATO, "certificato")
    ]
    assert d.risposte == "mittente@pec.example"
    assert d.oggetto == "Collaudo pecmailer 2"
    assert d.gestore_emittente == "ARUBA PEC S.p.A."
    assert (d.giorno, d.ora, d.zona) == ("19/09/2026", "15:41:20", "+0200")
    assert d.certified_at is not None
    assert d.certified_at.isoformat() == "2026-09-19T15:41:20+02:00"
    assert d.identificativo == "jpec13216.20260919154120.06118.4003.1.1@pec.aruba.it"
    assert d.msgid == "<m_Xbftyw1I-LSDVCM3@pec.it>"  # XML escapes undone
    assert d.consegna == "collaudo-inesistente-7k2q9@pec.it"
    assert d.errore_esteso == "5.1.1 - ARUBA PEC S.p.A. - indirizzo non valido"
    assert d.ricevuta is None and d.ricezione is None
    assert d.notes == ()


def test_observed_variations() -> None:
    """Self-closing ricevuta, trailing \\n\\r\\n, no msgid (Poste 2012), empty risposte,
    an esterno recipient, several recipients."""
    xml = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<postacert tipo="posta-certificata" errore="nessuno">\n'
        b"  <intestazione>\n"
        b"    <mittente>a@pec.it</mittente>\n"
        b'    <destinatari tipo="certificato">b@pec.it</destinatari>\n'
        b'    <destinatari tipo="esterno">c@gmail.com</destinatari>\n'
        b'    <destinatari tipo="strano">d@x.it</destinatari>\n'
        b"    <risposte></risposte>\n"
        b"  </intestazione>\n"
        b"  <dati>\n"
        b"    <gestore-emittente>POSTECOM S.P.A. - GRUPPO POSTE ITALIANE</gestore-emittente>\n"
        b'    <data zona="+0100"><giorno>3/1/2012</giorno><ora>09:05:07</ora></data>\n'
        b"    <identificativo>E82D9D8F.000073B6.x.posta-certificata@postecert.it</identificativo>\n"
        b'    <ricevuta tipo="breve" />\n'
        b"  </dati>\n"
        b"</postacert>\n\r\n"
    )
    d = parse_daticert(xml)
    assert d.msgid is None
    assert d.risposte is None
    assert d.oggetto is None
    assert d.ricevuta == "breve"
    assert [r.type for r in d.destinatari] == [
        RecipientType.CERTIFICATO, RecipientType.ESTERNO, RecipientType.UNKNOWN
    ]
    assert d.destinatari[2].type_raw == "strano"
    assert d.recipient_addresses == ("b@pec.it", "c@gmail.com", "d@x.it")
    assert d.certified_at is not None
    assert d.certified_at.isoformat() == "2012-01-03T09:05:07+01:00"


def test_ricevuta_without_tipo_defaults_to_completa_and_presa_in_carico_has_ricezione() -> None:
    xml = (
        b'<postacert tipo="presa-in-carico" errore="nessuno"><intestazione>'
        b"<mittente>a@pec.it</mittente></intestazione><dati>"
        b'<data zona="-0900"><giorno>01/02/2024</giorno><ora>23:59:59</ora></data>'
        b"<ricevuta/><ricezione>b@pec.it</ricezione></dati></postacert>"
    )
    d = parse_daticert(xml)
    assert d.ricevuta == "completa"
    assert d.ricezione == "b@pec.it"
    assert d.certified_at is not None
    assert d.certified_at.utcoffset() == -timedelta(hours=9)


def test_stray_text_namespaces_and_case_are_tolerated() -> None:
    xml = (
        b'<p:PostaCert xmlns:p="urn:x" tipo="accettazione">'
        b"<p:intestazione><p:mittente>a@pec.it</p:mittente>a\n</p:intestazione>"
        b"<p:dati><p:identificativo> id-1@pec.it </p:identificativo></p:dati></p:PostaCert>"
    )
    d = parse_daticert(xml)
    assert d.tipo == "accettazione"
    assert d.mittente == "a@pec.it"
    assert d.identificativo == "id-1@pec.it"
    assert d.errore == "nessuno"
    assert "daticert.xml has no certified date (<data>)" in d.notes


def test_missing_zone_or_bad_date_are_notes_not_errors() -> None:
    base = (b'<postacert tipo="accettazione"><intestazione/><dati>'
            b"<data%s><giorno>%s</giorno><ora>10:00:00</ora></data></dati></postacert>")
    no_zone = parse_daticert(base % (b"", b"01/02/2024"))
    assert no_zone.certified_at is None and no_zone.giorno == "01/02/2024"
    assert any("zona" in note for note in no_zone.notes)
    impossible = parse_daticert(base % (b' zona="+0100"', b"31/02/2024"))
    assert impossible.certified_at is None
    assert any("impossible" in note for note in impossible.notes)
    garbled = parse_daticert(base % (b' zona="+0100"', b"2024-02-01"))
    assert garbled.certified_at is None
    assert any("dd/mm/yyyy" in note for note in garbled.notes)


def test_other_encodings() -> None:
    latin1 = ('<?xml version="1.0" encoding="ISO-8859-1"?><postacert tipo="accettazione">'
              "<intestazione><oggetto>Perché</oggetto></intestazione></postacert>")
    assert parse_daticert(latin1.encode("latin-1")).oggetto == "Perché"
    cp1252 = ('<?xml version="1.0" encoding="windows-1252"?><postacert tipo="accettazione">'
              "<intestazione><oggetto>Costo 5 €</oggetto></intestazione></postacert>")
    assert parse_daticert(cp1252.encode("cp1252")).oggetto == "Costo 5 €"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not xml at all",
        ERRORE_CONSEGNA_2026[:300],  # truncated, like the anonymised fixtures before decoding
        b"<other/>",
        b'<?xml version="1.0" encoding="no-such-codec"?><postacert/>',
        b'<postacert tipo="x"><dati></postacert>',
    ],
)
def test_broken_daticert_raises_a_typed_error(data: bytes) -> None:
    with pytest.raises(DaticertError):
        parse_daticert(data)
    assert issubclass(DaticertError, ParseError)


def test_entity_declarations_are_refused() -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE postacert [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b'<postacert tipo="accettazione"><intestazione><oggetto>&b;</oggetto>'
        b"</intestazione></postacert>"
    )
    with pytest.raises(DaticertError, match="entities"):
        parse_daticert(laughs)
    external = (
        b'<?xml version="1.0"?><!DOCTYPE postacert [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<postacert tipo="accettazione"><intestazione><oggetto>&x;</oggetto>'
        b"</intestazione></postacert>"
    )
    with pytest.raises(DaticertError):
        parse_daticert(external)


def test_plain_doctype_is_accepted() -> None:
    xml = (b'<?xml version="1.0"?><!DOCTYPE postacert SYSTEM "daticert.dtd">'
           b'<postacert tipo="accettazione"><intestazione><mittente>a@pec.it</mittente>'
           b"</intestazione></postacert>")
    assert parse_daticert(xml).mittente == "a@pec.it"


def test_oversized_daticert_is_refused() -> None:
    with pytest.raises(DaticertError, match="bytes"):
        parse_daticert(b"<postacert>" + b" " * 1_000_001 + b"</postacert>")
