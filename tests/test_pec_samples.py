"""Every real PEC sample parsed, with every field EXPECTED.md lists.

The samples are in tests/data/pec-samples, except the one without a redistribution license,
which is read from shared/pec-samples (tests/shared_material.py); its tests skip without it.
"""

from __future__ import annotations

import email
import hashlib
import os
import random
import shutil
import subprocess
from datetime import datetime
from email.policy import compat32
from pathlib import Path

import pytest
from shared_material import (
    PEC_SAMPLES,
    need_shared,
    pec_sample,
    pec_sample_names,
)

from connector.pec import (
    PecInfo,
    PecKind,
    ReceiptKind,
    RecipientType,
    ServiceRole,
    SignatureStatus,
    analyze_pec,
    find_pec,
    strip_pec_prefix,
)
from connector.pec.parts import parse_part


def raw(name: str) -> bytes:
    return pec_sample(name).read_bytes()


def info(name: str) -> PecInfo:
    return find_pec(raw(name))


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def test_every_sample_is_covered_here() -> None:
    assert set(pec_sample_names()) == set(EXPECTED_SIGNATURES)


def test_the_shared_folder_has_no_sample_we_miss() -> None:
    shared = need_shared("pec-samples")
    assert {p.name for p in shared.glob("*.eml")} == set(EXPECTED_SIGNATURES)


@pytest.mark.parametrize("name", sorted(p.name for p in PEC_SAMPLES.glob("*.eml")))
def test_the_copies_are_the_shared_bytes(name: str) -> None:
    """tests/data/pec-samples holds the upstream bytes unchanged (README there)."""
    shared = need_shared("pec-samples") / name
    copied = PEC_SAMPLES / name
    assert hashlib.sha256(copied.read_bytes()).digest() == hashlib.sha256(
        shared.read_bytes()).digest()


EXPECTED_SIGNATURES = {
    "aruba-accettazione-2014-01.eml": SignatureStatus.VALID,
    "aruba-posta-certificata-2014-01.eml": SignatureStatus.VALID,
    "sogei-sdi-posta-certificata-invio-file-2018.eml": SignatureStatus.VALID,
    "anon-aruba-accettazione-2024-truncated.eml": SignatureStatus.MISSING,
    "aruba-postacert-inner-2024-02.eml": SignatureStatus.MISSING,
    "anon-aruba-accettazione-2024-placeholder-sig.eml": SignatureStatus.UNDECODABLE,
    "anon-aruba-errore-consegna-2024-placeholder-sig.eml": SignatureStatus.UNDECODABLE,
    "anon-posta-certificata-2021.eml": SignatureStatus.UNDECODABLE,
}


@pytest.mark.parametrize("name,status", sorted(EXPECTED_SIGNATURES.items()))
def test_signature_verdicts(name: str, status: SignatureStatus) -> None:
    assert info(name).signature.status is status


@pytest.mark.parametrize("name", sorted(EXPECTED_SIGNATURES))
def test_openssl_agrees_on_integrity(name: str) -> None:
    """Cross-check with `openssl smime -verify -noverify` (the reference the verdicts mimic)."""
    openssl = shutil.which("openssl")
    assert openssl, "the openssl CLI is needed for this cross-check"
    result = subprocess.run(
        [openssl, "smime", "-verify", "-noverify", "-in", str(pec_sample(name)), "-out",
         os.devnull],
        capture_output=True,
        check=False,
    )
    assert (result.returncode == 0) == info(name).signature.is_valid


def test_valid_signers_are_the_providers() -> None:
    aruba = info("aruba-accettazione-2014-01.eml").signature
    assert aruba.signer_email == "posta-certificata@pec.aruba.it"
    assert "Posta Certificata ARUBA PEC" in (aruba.signer_subject or "")
    assert "DigitPA CA1" in (aruba.signer_issuer or "")
    assert aruba.signer_serial == 3345
    assert aruba.digest_algorithm == "sha1"
    assert iso(aruba.signing_time) == "2014-11-14T17:26:32+00:00"
    sogei = info("sogei-sdi-posta-certificata-invio-file-2018.eml")
    assert sogei.signature.signer_email == "posta-certificata@pcert.sogei.it"
    assert "AgID CA1" in (sogei.signature.signer_issuer or "")
    assert sogei.signature.signer_email == sogei.envelope_from


# 1
def test_aruba_accettazione_2014() -> None:
    pec = info("aruba-accettazione-2014-01.eml")
    assert pec.kind is PecKind.RECEIPT
    assert pec.receipt_kind is ReceiptKind.ACCETTAZIONE
    assert pec.original_subject == "test private"
    assert pec.original_sender == "l.battistini@pec.it"
    assert pec.daticert is not None
    assert [(r.address, r.type) for r in pec.daticert.destinatari] == [
        ("thinkstudio@pec.it", RecipientType.CERTIFICATO)
    ]
    m = "1415985992.182905912399292.346704098667155-openerp-private@elbati-Vostro-3550"
    assert pec.riferimento_message_id == m
    assert pec.daticert.msgid == f"<{m}>"  # as daticert writes it
    assert pec.msgid == m
    assert pec.identificativo == "opec275.20141114182632.23219.07.1.48@pec.aruba.it"
    assert iso(pec.certified_at) == "2014-11-14T18:26:32+01:00"
    assert pec.original_raw is None
    assert pec.daticert.gestore_emittente == "ARUBA PEC S.p.A."
    assert pec.daticert.errore == "nessuno"
    # Body is text/plain only: no html alternative.
    types = [p.content_type for p in parse_part(raw("aruba-accettazione-2014-01.eml")).walk()]
    assert "text/plain" in types and "text/html" not in types
    assert "multipart/alternative" not in types
    assert pec.receipt is not None
    assert pec.receipt.recipients == ("thinkstudio@pec.it",)
    assert pec.receipt.referenced_ids == (m, pec.identificativo)
    assert not pec.receipt.is_failure
    assert pec.receipt.summary_en == (
        "Acceptance receipt: message accepted by ARUBA PEC S.p.A. on 2014-11-14 18:26:32 "
        '+01:00 for thinkstudio@pec.it (subject "test private")'
    )
    assert pec.receipt.summary_it.startswith("Ricevuta di accettazione: messaggio accettato")
    assert "14/11/2014 18:26:32 +01:00" in pec.receipt.summary_it
    assert pec.notes == ()


# 3
def test_aruba_posta_certificata_2014() -> None:
    data = raw("aruba-posta-certificata-2014-01.eml")
    pec = find_pec(data)
    assert pec.kind is PecKind.TRANSPORT
    assert pec.receipt_kind is None
    assert pec.original_subject == "Re: archetipo"
    assert pec.subject == "POSTA CERTIFICATA: Re: archetipo"
    assert pec.original_sender == "thinkstudio@pec.it"
    assert pec.envelope_from == "posta-certificata@pec.aruba.it"
    assert pec.daticert is not None
    assert [(r.address, r.type) for r in pec.daticert.destinatari] == [
        ("l.battistini@pec.it", RecipientType.CERTIFICATO)
    ]
    m = "NEOEQO$8B558E13C0664DE7004C1EFB790D1A09@pec.it"
    assert pec.riferimento_message_id == m and pec.msgid == m
    assert pec.daticert.msgid == f"<{m}>"
    ident = "opec275.20141107165200.03048.08.1.17@pec.aruba.it"
    assert pec.identificativo == ident
    assert pec.message_id == ident
    assert iso(pec.certified_at) == "2014-11-07T16:52:00+01:00"
    assert pec.requested_receipt == "completa"
    assert pec.daticert.ricevuta == "completa"
    assert pec.original_raw is not None
    inner = email.message_from_bytes(pec.original_raw, policy=compat32)
    assert inner["Message-ID"] == f"<{ident}>"
    assert inner["In-Reply-To"] == "<opec275.20141107164854.04333.01.1.49@pec.aruba.it>"
    assert pec.referenced_ids == ("opec275.20141107164854.04333.01.1.49@pec.aruba.it",)
    assert pec.thread_keys == (ident, m)
    # No attachments in the original.
    assert [p.get_filename() for p in inner.walk() if p.get_filename()] == []
    assert_byte_exact_postacert(data, pec.original_raw)
    assert {p.role for p in pec.service_parts} == {ServiceRole.DATICERT, ServiceRole.SIGNATURE}
    assert pec.hidden_filenames == {"daticert.xml", "smime.p7s"}
    assert pec.notes == ()


# 7
def test_sogei_sdi_envelope_2018() -> None:
    data = raw("sogei-sdi-posta-certificata-invio-file-2018.eml")
    pec = find_pec(data)
    assert pec.kind is PecKind.TRANSPORT
    assert pec.original_subject == "Invio File 7339338 (SIMULAZIONE)"
    assert pec.original_sender == "sdi03@pec.fatturapa.it"
    assert pec.envelope_from == "posta-certificata@pcert.sogei.it"
    assert pec.daticert is not None
    assert [(r.address, r.type) for r in pec.daticert.destinatari] == [
        ("l.battistini@pec.it", RecipientType.CERTIFICATO)
    ]
    m = "4163125586355393.1544268377979@pec.fatturapa.it"
    assert pec.riferimento_message_id == m and pec.daticert.msgid == f"<{m}>"
    assert pec.identificativo == "opec288.20181208122618.17535.2665.1.3@pcert.sogei.it"
    assert iso(pec.certified_at) == "2018-12-08T12:26:18+01:00"
    assert pec.requested_receipt == "breve"
    assert pec.daticert.ricevuta == "breve"
    assert pec.provider == "Sogei SpA"
    assert pec.original_raw is not None
    inner = email.message_from_bytes(pec.original_raw, policy=compat32)
    leaves = [(p.get_content_type(), p.get_filename()) for p in inner.walk()
              if not p.is_multipart()]
    assert leaves == [
        ("application/octet-stream", "IT02652600210_00007_MT_002.xml"),
        ("application/octet-stream", "IT02652600210_00007.xml"),
        ("text/plain", None),
    ]
    assert_byte_exact_postacert(data, pec.original_raw)
    # The signed part has a trailing space in a header line; the bytes must not be touched.
    assert b"Content-Type: multipart/mixed; \n" in pec.original_raw


# 18
def test_anon_accettazione_truncated() -> None:
    pec = info("anon-aruba-accettazione-2024-truncated.eml")
    assert_anon_acceptance(pec)
    assert pec.signature.status is SignatureStatus.MISSING
    assert any("close boundary not found" in note for note in pec.notes)
    assert [p.role for p in pec.service_parts] == [ServiceRole.DATICERT]


# 20
def test_anon_accettazione_placeholder_signature() -> None:
    pec = info("anon-aruba-accettazione-2024-placeholder-sig.eml")
    assert_anon_acceptance(pec)
    assert pec.signature.status is SignatureStatus.UNDECODABLE
    assert pec.signature.signer_subject is None


def assert_anon_acceptance(pec: PecInfo) -> None:
    assert pec.kind is PecKind.RECEIPT
    assert pec.receipt_kind is ReceiptKind.ACCETTAZIONE
    assert pec.original_subject == "Test PEC"
    assert pec.original_sender == "sender@fakepec.it"
    assert pec.daticert is not None
    assert [(r.address, r.type) for r in pec.daticert.destinatari] == [
        ("rec@fakepec.it", RecipientType.CERTIFICATO)
    ]
    m = "SN05IE$951DEC16C1CFD3E4FD8FF1B1D24A99AE@fakepec.it"
    assert pec.riferimento_message_id == m and pec.daticert.msgid == f"<{m}>"
    assert pec.identificativo == "opec210312.20241115182038.288127.606.1.53@fakepec.it"
    assert iso(pec.certified_at) == "2024-11-15T18:20:38+01:00"
    assert pec.original_raw is None


# 21
def test_anon_errore_consegna() -> None:
    pec = info("anon-aruba-errore-consegna-2024-placeholder-sig.eml")
    assert pec.kind is PecKind.RECEIPT
    assert pec.receipt_kind is ReceiptKind.ERRORE_CONSEGNA
    assert pec.original_subject == "Test PEC"
    assert pec.original_sender == "sender@fakepec.it"
    assert pec.daticert is not None
    assert [(r.address, r.type) for r in pec.daticert.destinatari] == [
        ("rec@pec.it", RecipientType.CERTIFICATO)
    ]
    assert pec.daticert.consegna == "rec@fakepec.it"
    header_m = "SN05IE$951DEC16C1CFD3E4FD8FF1B1D24A99AE@pec.it"
    daticert_m = "SN05IE$951DEC16C1CFD3E4FD8FF1B1D24A99AE@fakepec.it"
    assert pec.riferimento_message_id == header_m
    assert pec.daticert.msgid == f"<{daticert_m}>"
    assert pec.msgid == daticert_m  # daticert preferred
    assert pec.identificativo == "opec210312.20241115182038.288127.606.1.53@fakepec.it"
    assert iso(pec.certified_at) == "2024-11-15T18:21:03+01:00"
    assert pec.original_raw is None
    assert pec.daticert.errore == "no-dest"
    assert pec.daticert.errore_esteso == "5.1.1 - FAKE Pec S.p.A. - indirizzo non valido"
    assert pec.signature.status is SignatureStatus.UNDECODABLE
    # Mismatches are reported, not fatal; every key is kept.
    assert any("differs from daticert msgid" in n for n in pec.notes)
    assert any("consegna rec@fakepec.it is not among its destinatari" in n for n in pec.notes)
    receipt = pec.receipt
    assert receipt is not None
    assert receipt.referenced_ids == (daticert_m, header_m, pec.identificativo)
    assert receipt.recipients == ("rec@fakepec.it",)
    assert receipt.error == "no-dest"
    assert receipt.error_detail == "5.1.1 - FAKE Pec S.p.A. - indirizzo non valido"
    assert receipt.is_failure
    assert receipt.summary_en == (
        "Non-delivery notice: not delivered to rec@fakepec.it on 2024-11-15 18:21:03 +01:00: "
        '5.1.1 - FAKE Pec S.p.A. - indirizzo non valido (subject "Test PEC")'
    )
    assert receipt.summary_it.startswith("Avviso di mancata consegna: non consegnato a "
                                         "rec@fakepec.it il 15/11/2024 18:21:03 +01:00")


# 23
def test_anon_posta_certificata_2021() -> None:
    data = raw("anon-posta-certificata-2021.eml")
    pec = find_pec(data)
    assert pec.kind is PecKind.TRANSPORT
    assert pec.daticert is not None
    assert pec.daticert.oggetto == "POSTA CERTIFICATA: SUBJECT"
    assert pec.subject == "POSTA CERTIFICATA: POSTA CERTIFICATA: EXAMPLE"
    # The postacert Subject is the original: its own prefix is the sender's, not the provider's.
    assert pec.original_subject == "POSTA CERTIFICATA: SUBJECT"
    assert strip_pec_prefix(pec.subject) == "POSTA CERTIFICATA: EXAMPLE"
    assert pec.original_sender == "no-reply@example.com"
    assert [(r.address, r.type) for r in pec.daticert.destinatari] == [
        ("no-reply@example.com", RecipientType.CERTIFICATO)
    ]
    assert pec.riferimento_message_id == "CZPXCJRZKQDRVYXFAZYUIAWNACDAEXAKN@example.com"
    assert pec.daticert.msgid == "<CZPXCJRZKQDRVYXFAZYUIAWNACDAAHEVAEXAKN@example.com>"
    assert any("differs from daticert msgid" in n for n in pec.notes)
    assert pec.identificativo == "CZPXCJRZKQDRVYXFAZYUIAWNACDAAHEVAEXAKN@example.com"
    assert iso(pec.certified_at) == "2021-05-14T12:02:08+02:00"
    # Header spelled X-Tiporicevuta: looked up case-insensitively.
    assert b"X-Tiporicevuta: completa" in data
    assert pec.requested_receipt == "completa"
    assert pec.original_raw is not None
    inner = email.message_from_bytes(pec.original_raw, policy=compat32)
    assert [p.get_content_type() for p in inner.walk() if not p.is_multipart()] == ["text/plain"]
    assert_byte_exact_postacert(data, pec.original_raw)
    assert any("close boundary not found" in n for n in pec.notes)
    assert pec.signature.status is SignatureStatus.UNDECODABLE
    assert {p.filename for p in pec.service_parts} == {"daticert.xml", "smime.p7s"}
    for key in ("CZPXCJRZKQDRVYXFAZYUIAWNACDAAHEVAEXAKN@example.com",
                "CZPXCJRZKQDRVYXFAZYUIAWNACDAEXAKN@example.com"):
        assert key in pec.thread_keys


# 25
def test_inner_postacert_on_its_own() -> None:
    pec = info("aruba-postacert-inner-2024-02.eml")
    assert pec.kind is PecKind.ORDINARY
    assert not pec.is_pec
    assert pec.original_subject == "Estrazione per test junit senza allegati"
    assert pec.original_sender == "antoniorusso95@pec.it"
    assert pec.original_recipients == ("testflorence@pec.net",)
    m = "SCCH47$C8C927B4F01C4AFFA7758809B2A70299@pec.it"
    i = "opec21023.20240422145255.211512.995.1.59@pec.aruba.it"
    assert pec.riferimento_message_id == m
    assert pec.message_id == i
    assert pec.thread_keys == (i, m)
    assert iso(pec.original_date) == "2024-04-22T14:52:55+02:00"
    assert pec.certified_at is None
    assert pec.daticert is None and pec.original_raw is None and pec.service_parts == ()
    tree = parse_part(raw("aruba-postacert-inner-2024-02.eml"))
    assert tree.content_type == "multipart/alternative"
    assert all(p.filename is None for p in tree.walk())
    assert pec.signature.status is SignatureStatus.MISSING


def test_acceptances_and_failure_describe_one_message() -> None:
    accepted = [info("anon-aruba-accettazione-2024-truncated.eml"),
                info("anon-aruba-accettazione-2024-placeholder-sig.eml")]
    failed = info("anon-aruba-errore-consegna-2024-placeholder-sig.eml")
    for acceptance in accepted:
        assert acceptance.identificativo == failed.identificativo
        assert acceptance.msgid == failed.msgid
        shared = set(acceptance.thread_keys) & set(failed.thread_keys)
        assert {failed.identificativo, failed.msgid} <= shared


def test_envelope_and_receipt_keys_meet_on_the_identificativo() -> None:
    """A receipt's keys and an envelope's keys have one form: a receipt for the 2014 envelope
    would carry its identificativo, which equals the envelope's Message-ID key."""
    envelope = info("aruba-posta-certificata-2014-01.eml")
    assert envelope.message_id == envelope.identificativo
    assert envelope.message_id in envelope.thread_keys


@pytest.mark.parametrize("name", sorted(EXPECTED_SIGNATURES))
def test_analyze_and_find_agree_on_top_level_messages(name: str) -> None:
    assert analyze_pec(raw(name)) == find_pec(raw(name))


@pytest.mark.parametrize("name", sorted(EXPECTED_SIGNATURES))
def test_truncations_never_crash(name: str) -> None:
    data = raw(name)
    for cut in range(0, len(data), max(1, len(data) // 40)):
        result = find_pec(data[:cut])
        assert isinstance(result, PecInfo)


def assert_byte_exact_postacert(envelope: bytes, original: bytes) -> None:
    """postacert.eml is the part body exactly: what precedes it is the part's blank line after
    its headers, what follows is the line break before the next boundary."""
    start = envelope.find(original)
    assert start > 0 and envelope.count(original) == 1
    before = envelope[:start]
    assert before.endswith(b"\n\n") or before.endswith(b"\r\n\r\n")
    header_block = before[before.rfind(b"postacert.eml") - 200 : start]
    assert b"postacert.eml" in header_block
    after = envelope[start + len(original) :]
    assert after.startswith(b"\n--") or after.startswith(b"\r\n--")


@pytest.mark.parametrize("name", sorted(EXPECTED_SIGNATURES))
def test_corrupted_bytes_never_crash(name: str) -> None:
    data = raw(name)
    rng = random.Random(name)
    for _ in range(30):
        corrupted = bytearray(data)
        for _ in range(5):
            corrupted[rng.randrange(len(corrupted))] = rng.randrange(256)
        result = find_pec(bytes(corrupted))
        assert isinstance(result, PecInfo)
        assert isinstance(result.signature.status, SignatureStatus)


def test_one_changed_byte_in_a_real_envelope_is_invalid(tmp_path: Path) -> None:
    data = raw("aruba-accettazione-2014-01.eml")
    tampered = data.replace(b'"test private" inviato da', b'"test privatE" inviato da')
    assert tampered != data
    pec = find_pec(tampered)
    assert pec.signature.status is SignatureStatus.INVALID
    assert pec.signature.signer_email == "posta-certificata@pec.aruba.it"
    assert pec.kind is PecKind.RECEIPT  # the verdict never blocks the analysis
    path = tmp_path / "tampered.eml"
    path.write_bytes(tampered)
    openssl = shutil.which("openssl")
    assert openssl
    result = subprocess.run([openssl, "smime", "-verify", "-noverify", "-in", str(path),
                             "-out", os.devnull], capture_output=True, check=False)
    assert result.returncode != 0
