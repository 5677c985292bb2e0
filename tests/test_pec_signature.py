"""S/MIME integrity verdicts on envelopes built here with real signatures (cryptography's PKCS7
builder), cross-checked with the openssl CLI.

The test identities are self-signed and pinned as the only trust anchors here, so "valid" means
intact; whether a signer is trusted has its own tests (test_pec_trust.py)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from connector.pec import (
    PecInfo,
    PecKind,
    ReceiptKind,
    SignatureStatus,
    verify_detached,
)
from connector.pec import analyze_pec as analyze_pec_with
from connector.pec import find_pec as find_pec_with
from connector.pec.der import DerError, read_tlv
from connector.pec.signature import canonical_crlf
from connector.pec.trust import TrustAnchor, TrustStore

PROVIDER = "posta-certificata@pec.example.it"
BOUNDARY = "----SIGNEDBOUNDARY0123"


def make_identity(kind: str = "rsa") -> tuple[x509.Certificate, object]:
    key: object
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "Posta Certificata Example"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example PEC S.p.A."),
    ])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(424242)
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))  # before the daticert times
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(PROVIDER)]), False)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return cert, key


RSA_IDENTITY = make_identity("rsa")
EC_IDENTITY = make_identity("ec")
TRUST = TrustStore(tuple(TrustAnchor(cert.public_bytes(serialization.Encoding.DER), "test")
                         for cert, _ in (RSA_IDENTITY, EC_IDENTITY)), "the test identities")


def analyze_pec(raw: bytes, **options: object) -> PecInfo:
    return analyze_pec_with(raw, trust=TRUST, **options)  # type: ignore[arg-type]


def find_pec(raw: bytes, **options: object) -> PecInfo:
    return find_pec_with(raw, trust=TRUST, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def rsa_identity() -> tuple[x509.Certificate, object]:
    return RSA_IDENTITY


@pytest.fixture(scope="module")
def ec_identity() -> tuple[x509.Certificate, object]:
    return EC_IDENTITY


DATICERT = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<postacert tipo="avvenuta-consegna" errore="nessuno">\n'
    b"  <intestazione><mittente>us@pec.example.it</mittente>\n"
    b'    <destinatari tipo="certificato">them@pec.it</destinatari>\n'
    b"    <risposte>us@pec.example.it</risposte><oggetto>Pratica 12</oggetto></intestazione>\n"
    b"  <dati><gestore-emittente>Example PEC S.p.A.</gestore-emittente>\n"
    b'    <data zona="+0100"><giorno>01/02/2024</giorno><ora>10:11:12</ora></data>\n'
    b"    <identificativo>opec1.20240201101112.1.1.1@pec.example.it</identificativo>\n"
    b"    <msgid>&lt;sent-1@helpdesk.example&gt;</msgid>\n"
    b'    <ricevuta tipo="completa" /><consegna>them@pec.it</consegna></dati>\n'
    b"</postacert>\n"
)


def signed_content() -> bytes:
    """The first part of the multipart/signed: text, daticert.xml (CRLF line ends)."""
    daticert_b64 = base64.encodebytes(DATICERT).replace(b"\n", b"\r\n")
    return (
        b'Content-Type: multipart/mixed; boundary="inner-1"\r\n'
        b"\r\n"
        b"--inner-1\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"\r\n"
        b"Ricevuta di avvenuta consegna\r\n"
        b"--inner-1\r\n"
        b'Content-Type: application/xml; name="daticert.xml"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: inline; filename="daticert.xml"\r\n'
        b"\r\n" + daticert_b64 + b"--inner-1--\r\n"
    )


def sign(content: bytes, identity: tuple[x509.Certificate, object],
         options: tuple[pkcs7.PKCS7Options, ...] = (), *,
         rsa_padding: padding.PSS | None = None) -> bytes:
    cert, key = identity
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content)
    builder = builder.add_signer(cert, key, hashes.SHA256(),  # type: ignore[arg-type]
                                 rsa_padding=rsa_padding)
    return builder.sign(serialization.Encoding.DER,
                        [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary,
                         *options])


def envelope(content: bytes, signature_der: bytes | None, *,
             signature_body: bytes | None = None, headers: bytes | None = None) -> bytes:
    head = headers if headers is not None else (
        b"From: " + PROVIDER.encode() + b"\r\n"
        b"To: us@pec.example.it\r\n"
        b"Subject: CONSEGNA: Pratica 12\r\n"
        b"Message-ID: <opec1.20240201101112.9.9.9@pec.example.it>\r\n"
        b"X-Ricevuta: avvenuta-consegna\r\n"
        b"X-Riferimento-Message-ID: <sent-1@helpdesk.example>\r\n"
        b"Date: Thu, 1 Feb 2024 10:11:12 +0100\r\n"
    )
    message = (
        head + b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
        b'micalg=sha-256; boundary="' + BOUNDARY.encode() + b'"\r\n'
        b"\r\n"
        b"This is an S/MIME signed message\r\n"
        b"\r\n"
        b"--" + BOUNDARY.encode() + b"\r\n" + content + b"\r\n"
    )
    if signature_der is not None or signature_body is not None:
        body = signature_body
        if body is None:
            assert signature_der is not None
            body = base64.encodebytes(signature_der).replace(b"\n", b"\r\n")
        message += (
            b"--" + BOUNDARY.encode() + b"\r\n"
            b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
            b"Content-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="smime.p7s"\r\n'
            b"\r\n" + body + b"\r\n"
        )
    return message + b"--" + BOUNDARY.encode() + b"--\r\n"


def openssl_says_valid(message: bytes, tmp_path: Path) -> bool:
    openssl = shutil.which("openssl")
    assert openssl, "the openssl CLI is needed for this cross-check"
    path = tmp_path / "msg.eml"
    path.write_bytes(message)
    result = subprocess.run([openssl, "smime", "-verify", "-noverify", "-in", str(path),
                             "-out", os.devnull], capture_output=True, check=False)
    return result.returncode == 0


def test_valid_rsa_signature_and_signer(rsa_identity, tmp_path) -> None:
    content = signed_content()
    message = envelope(content, sign(content, rsa_identity))
    pec = analyze_pec(message)
    verdict = pec.signature
    assert verdict.status is SignatureStatus.VALID, verdict.detail
    assert verdict.signer_serial == 424242
    assert verdict.signer_email == PROVIDER
    assert verdict.signer_subject == "O=Example PEC S.p.A.,CN=Posta Certificata Example"
    assert verdict.signer_issuer == verdict.signer_subject
    assert verdict.digest_algorithm == "sha256"
    assert verdict.signing_time is not None
    assert abs(verdict.signing_time - datetime.now(UTC)) < timedelta(hours=1)
    assert pec.kind is PecKind.RECEIPT and pec.receipt_kind is ReceiptKind.AVVENUTA_CONSEGNA
    assert openssl_says_valid(message, tmp_path)


def test_valid_ecdsa_signature(ec_identity, tmp_path) -> None:
    content = signed_content()
    message = envelope(content, sign(content, ec_identity))
    assert analyze_pec(message).signature.status is SignatureStatus.VALID
    assert openssl_says_valid(message, tmp_path)


def test_valid_rsa_pss_signature(rsa_identity) -> None:
    content = signed_content()
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    message = envelope(content, sign(content, rsa_identity, rsa_padding=pss))
    assert analyze_pec(message).signature.status is SignatureStatus.VALID


def test_signature_without_signed_attributes(rsa_identity, tmp_path) -> None:
    content = signed_content()
    der = sign(content, rsa_identity, (pkcs7.PKCS7Options.NoAttributes,))
    message = envelope(content, der)
    verdict = analyze_pec(message).signature
    assert verdict.status is SignatureStatus.VALID
    assert verdict.signing_time is None
    assert openssl_says_valid(message, tmp_path)


def test_tampered_content_byte_is_invalid(rsa_identity, tmp_path) -> None:
    content = signed_content()
    message = envelope(content, sign(content, rsa_identity))
    tampered = message.replace(b"Ricevuta di avvenuta consegna", b"Ricevuta di avvenuta consegnA")
    assert tampered != message
    verdict = analyze_pec(tampered).signature
    assert verdict.status is SignatureStatus.INVALID
    assert "digest" in verdict.detail
    assert verdict.signer_email == PROVIDER  # the signer is still reported
    assert not openssl_says_valid(tampered, tmp_path)


def test_trailing_space_removed_is_invalid(rsa_identity) -> None:
    """What a formatter did to the OCA fixtures: one trailing space less breaks the digest."""
    content = signed_content().replace(b'boundary="inner-1"\r\n', b'boundary="inner-1" \r\n', 1)
    message = envelope(content, sign(content, rsa_identity))
    assert analyze_pec(message).signature.status is SignatureStatus.VALID
    stripped = message.replace(b'boundary="inner-1" \r\n', b'boundary="inner-1"\r\n')
    assert analyze_pec(stripped).signature.status is SignatureStatus.INVALID


def test_tampered_signature_value_is_invalid(rsa_identity, tmp_path) -> None:
    content = signed_content()
    der = bytearray(sign(content, rsa_identity))
    der[-1] ^= 0x01  # the last byte is inside the signature value
    message = envelope(content, bytes(der))
    verdict = analyze_pec(message).signature
    assert verdict.status is SignatureStatus.INVALID
    assert "signature value" in verdict.detail
    assert not openssl_says_valid(message, tmp_path)


def test_lf_only_copy_still_verifies_after_canonicalisation(rsa_identity, tmp_path) -> None:
    """Mail stores often keep LF line ends; S/MIME verifies the CRLF canonical form."""
    content = signed_content()
    message = envelope(content, sign(content, rsa_identity)).replace(b"\r\n", b"\n")
    assert analyze_pec(message).signature.status is SignatureStatus.VALID
    assert openssl_says_valid(message, tmp_path)


def test_signer_certificate_absent_is_invalid(rsa_identity) -> None:
    content = signed_content()
    der = sign(content, rsa_identity, (pkcs7.PKCS7Options.NoCerts,))
    verdict = analyze_pec(envelope(content, der)).signature
    assert verdict.status is SignatureStatus.INVALID
    assert "certificate" in verdict.detail


def test_missing_and_empty_signature_parts() -> None:
    content = signed_content()
    assert analyze_pec(envelope(content, None)).signature.status is SignatureStatus.MISSING
    empty = envelope(content, None, signature_body=b"")
    assert analyze_pec(empty).signature.status is SignatureStatus.MISSING


@pytest.mark.parametrize("body", [b"MII...njA==", b"!!!!", b"AAAA", b"MIIBCgKCAQEA"])
def test_undecodable_signatures(body: bytes) -> None:
    message = envelope(signed_content(), None, signature_body=body)
    verdict = analyze_pec(message).signature
    assert verdict.status is SignatureStatus.UNDECODABLE


def test_signature_part_found_by_name_or_refused_by_type(rsa_identity) -> None:
    content = signed_content()
    der = sign(content, rsa_identity)
    message = envelope(content, der)
    renamed = message.replace(b"Content-Type: application/pkcs7-signature;",
                              b"Content-Type: application/octet-stream;")
    assert analyze_pec(renamed).signature.status is SignatureStatus.VALID
    not_a_signature = renamed.replace(b'name="smime.p7s"', b'name="footer.txt"').replace(
        b'filename="smime.p7s"', b'filename="footer.txt"')
    verdict = analyze_pec(not_a_signature).signature
    assert verdict.status is SignatureStatus.UNDECODABLE
    assert "application/octet-stream" in verdict.detail


def test_unsigned_message_is_missing() -> None:
    message = b"From: a@b.it\r\nSubject: hi\r\n\r\nhello\r\n"
    assert analyze_pec(message).signature.status is SignatureStatus.MISSING


def test_verify_detached_directly(rsa_identity) -> None:
    content = b"hello\r\n"
    der = sign(content, rsa_identity)
    assert verify_detached(content, der).status is SignatureStatus.VALID
    assert verify_detached(b"hellO\r\n", der).status is SignatureStatus.INVALID
    assert verify_detached(content, b"\x30\x03\x02\x01\x01").status is (
        SignatureStatus.UNDECODABLE
    )


def test_canonical_crlf() -> None:
    assert canonical_crlf(b"a\nb\r\nc\r\r\nd") == b"a\r\nb\r\nc\r\nd"


def test_opaque_pkcs7_mime_envelope(rsa_identity) -> None:
    """application/pkcs7-mime signed-data: the signed entity is inside the signature."""
    content = signed_content()
    cert, key = rsa_identity
    der = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(content)
        .add_signer(cert, key, hashes.SHA256())  # type: ignore[arg-type]
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )
    message = (
        b"From: " + PROVIDER.encode() + b"\r\n"
        b"Subject: CONSEGNA: Pratica 12\r\n"
        b"X-Ricevuta: avvenuta-consegna\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(der)
    )
    pec = analyze_pec(message)
    assert pec.signature.status is SignatureStatus.VALID
    assert pec.daticert is not None and pec.daticert.consegna == "them@pec.it"
    assert {p.filename for p in pec.service_parts} == {"daticert.xml", "smime.p7m"}
    broken = message.replace(b"Content-Transfer-Encoding: base64\r\n\r\nMI",
                             b"Content-Transfer-Encoding: base64\r\n\r\nXX")
    assert analyze_pec(broken).signature.status is SignatureStatus.UNDECODABLE


def test_list_wrapped_envelope_verifies_the_inner_signed_part(rsa_identity) -> None:
    """Mailman puts the signed entity into its own multipart/mixed with a footer."""
    content = signed_content()
    original = envelope(content, sign(content, rsa_identity))
    head, _, body = original.partition(b"\r\n\r\n")
    marker_headers = b"\r\n".join(
        line for line in head.split(b"\r\n")
        if not line.lower().startswith((b"content-type", b"mime-version"))
    )
    signed_entity = (
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
        b'micalg=sha-256; boundary="' + BOUNDARY.encode() + b'"\r\n\r\n' + body
    )
    wrapped = (
        marker_headers + b"\r\nList-Id: <pec.lists.example>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="list-outer"\r\n\r\n'
        b"--list-outer\r\n" + signed_entity + b"\r\n"
        b"--list-outer\r\n"
        b"Content-Type: text/plain\r\n\r\n-- \r\nlist footer\r\n"
        b"--list-outer--\r\n"
    )
    pec = find_pec(wrapped)
    assert pec.kind is PecKind.RECEIPT and pec.depth == 0
    assert pec.signature.status is SignatureStatus.VALID


def test_forwarded_envelope_is_found_and_still_verifies(rsa_identity) -> None:
    content = signed_content()
    original = envelope(content, sign(content, rsa_identity))
    forward = (
        b"From: colleague@example.com\r\nTo: helpdesk@example.com\r\nSubject: Fwd: receipt\r\n"
        b"Message-ID: <fwd-1@example.com>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="fwd"\r\n\r\n'
        b"--fwd\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--fwd\r\nContent-Type: message/rfc822\r\n\r\n" + original + b"\r\n--fwd--\r\n"
    )
    assert analyze_pec(forward).kind is PecKind.ORDINARY
    pec = find_pec(forward)
    assert pec.kind is PecKind.RECEIPT
    assert pec.depth == 1 and pec.path == "2"
    assert pec.signature.status is SignatureStatus.VALID
    assert any("forwarded" in note for note in pec.notes)
    assert find_pec(forward, max_depth=0).kind is PecKind.ORDINARY


def test_der_reader_accepts_indefinite_lengths_and_rejects_overruns() -> None:
    # SEQUENCE (indefinite) { OCTET STRING (constructed, indefinite) { "ab", "c" } }
    ber = b"\x30\x80\x24\x80\x04\x02ab\x04\x01c\x00\x00\x00\x00"
    outer = read_tlv(ber)
    assert outer.end == len(ber)
    assert outer.children()[0].octets() == b"abc"
    with pytest.raises(DerError):
        read_tlv(b"\x30\x05\x02\x01")
    with pytest.raises(DerError):
        read_tlv(b"\x30\x80\x02\x01\x01")  # no end-of-contents
    with pytest.raises(DerError):
        read_tlv(b"\x30\x80" * 200 + b"\x00\x00" * 200)  # nesting bound
