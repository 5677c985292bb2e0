"""find_pec on a large envelope allocates about one copy of the certified original, no more.

The one copy is ``PecInfo.original_raw`` (bytes the pipeline parses and keeps). Everything else
is read where it lies in the envelope's bytes: the MIME tree is offsets, the signed content is
hashed and verified straight from the buffer (or canonicalised block by block when it has LF
line ends), postacert.eml is sliced once. The old slicing parser copied the bodies at every
level and canonicalised the signed part whole: about 7x the envelope for the same analysis.

Measured with tracemalloc (allocations, deterministic), never with a clock.
"""

from __future__ import annotations

import base64
import random
import tracemalloc
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from connector.pec import PecInfo, PecKind, find_pec

CRLF = b"\r\n"
PAYLOAD_SIZE = 4 * 1024 * 1024
SLACK = 1024 * 1024  # headers, daticert, the signature, small objects: far below this


@pytest.fixture(scope="module")
def identity() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "posta-certificata@pec.test")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(7)
            .not_valid_before(datetime(2024, 1, 1, tzinfo=UTC))
            .not_valid_after(datetime(2034, 1, 1, tzinfo=UTC))
            .sign(key, hashes.SHA256()))
    return cert, key


@pytest.fixture(scope="module")
def original() -> bytes:
    """The certified mail: a short text and a 4 MB base64 attachment."""
    payload = random.Random(20240611).randbytes(PAYLOAD_SIZE)
    return (b"From: Mario Rossi <mario@pec.test>\r\nTo: help@pec.test\r\nSubject: big\r\n"
            b"Message-ID: <big-1@pec.test>\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n'
            b"--o\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
            b'--o\r\nContent-Type: application/zip; name="x.zip"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(payload).replace(b"\n", CRLF) + b"--o--\r\n")


def envelope(original: bytes, identity: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
             *, attributes: bool = True) -> bytes:
    daticert = (b'<?xml version="1.0" encoding="UTF-8"?>\n<postacert tipo="posta-certificata" '
                b'errore="nessuno"><intestazione><mittente>mario@pec.test</mittente>'
                b'<destinatari tipo="certificato">help@pec.test</destinatari>'
                b"<oggetto>big</oggetto></intestazione><dati>"
                b"<gestore-emittente>TEST PEC</gestore-emittente>"
                b'<data zona="+0100"><giorno>01/02/2024</giorno><ora>10:11:12</ora></data>'
                b"<identificativo>opec1.1@pec.test</identificativo>"
                b"<msgid>&lt;big-1@pec.test&gt;</msgid></dati></postacert>\n")
    signed = (b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n'
              b"--m\r\nContent-Type: text/plain\r\n\r\nMessaggio di posta certificata\r\n"
              b'--m\r\nContent-Type: application/xml; name="daticert.xml"\r\n'
              b"Content-Transfer-Encoding: base64\r\n\r\n"
              + base64.encodebytes(daticert).replace(b"\n", CRLF)
              + b'--m\r\nContent-Type: message/rfc822; name="postacert.eml"\r\n'
              b'Content-Disposition: inline; filename="postacert.eml"\r\n\r\n'
              + original + b"\r\n--m--")
    cert, key = identity
    options = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    if not attributes:
        options.append(pkcs7.PKCS7Options.NoAttributes)
    der = (pkcs7.PKCS7SignatureBuilder().set_data(signed)
           .add_signer(cert, key, hashes.SHA256()).sign(serialization.Encoding.DER, options))
    return (b"From: posta-certificata@pec.test\r\nSubject: POSTA CERTIFICATA: big\r\n"
            b"Message-ID: <opec1.1@pec.test>\r\nX-Trasporto: posta-certificata\r\n"
            b"X-Riferimento-Message-ID: <big-1@pec.test>\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
            b'micalg=sha-256; boundary="s"\r\n\r\n--s\r\n' + signed + b"\r\n"
            b'--s\r\nContent-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(der).replace(b"\n", CRLF) + b"--s--\r\n")


def peak_of_find_pec(raw: bytes) -> tuple[PecInfo, int]:
    find_pec(raw[:2000])  # imports and caches outside the measurement
    tracemalloc.start()
    try:
        info = find_pec(raw)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return info, peak


@pytest.mark.parametrize("attributes", [True, False], ids=["signed-attributes", "no-attributes"])
@pytest.mark.parametrize("line_ends", ["crlf", "lf"])
def test_envelope_costs_one_copy_of_the_original(original, identity, attributes: bool,
                                                 line_ends: str) -> None:
    raw = envelope(original, identity, attributes=attributes)
    expected_original = original
    if line_ends == "lf":  # as a mail store on disk may keep it: canonicalised to verify
        raw, expected_original = raw.replace(CRLF, b"\n"), original.replace(CRLF, b"\n")
    info, peak = peak_of_find_pec(raw)
    assert info.kind is PecKind.TRANSPORT
    assert info.signature.is_intact, info.signature.detail  # the test signer is no PEC CA
    assert info.original_raw == expected_original
    assert len(raw) > len(expected_original) > PAYLOAD_SIZE
    assert peak < len(expected_original) + SLACK, (peak, len(raw))


def test_forwarded_envelope_is_searched_where_it_lies(original, identity) -> None:
    """A forwarded envelope (message/rfc822, 7bit) is parsed inside the forward's bytes."""
    inner = envelope(original, identity)
    forward = (b"From: colleague@example.com\r\nSubject: Fwd\r\nMIME-Version: 1.0\r\n"
               b'Content-Type: multipart/mixed; boundary="f"\r\n\r\n'
               b"--f\r\nContent-Type: text/plain\r\n\r\nfyi\r\n"
               b"--f\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--f--\r\n")
    info, peak = peak_of_find_pec(forward)
    assert info.kind is PecKind.TRANSPORT and info.depth == 1 and info.path == "2"
    assert info.signature.is_intact
    assert info.original_raw == original
    assert peak < len(original) + SLACK, peak


def test_base64_forwarded_envelope_costs_its_decoding_and_one_copy(original, identity) -> None:
    """An envelope forwarded as a base64 .eml file must be decoded once; no more than that."""
    inner = envelope(original, identity)
    forward = (b"From: colleague@example.com\r\nSubject: Fwd\r\nMIME-Version: 1.0\r\n"
               b'Content-Type: multipart/mixed; boundary="f"\r\n\r\n'
               b"--f\r\nContent-Type: text/plain\r\n\r\nfyi\r\n"
               b'--f\r\nContent-Type: application/octet-stream; name="PEC.eml"\r\n'
               b"Content-Transfer-Encoding: base64\r\n\r\n"
               + base64.encodebytes(inner) + b"--f--\r\n")
    info, peak = peak_of_find_pec(forward)
    assert info.kind is PecKind.TRANSPORT and info.path == "2"
    assert info.signature.is_intact
    assert peak < len(inner) + len(original) + SLACK, peak
