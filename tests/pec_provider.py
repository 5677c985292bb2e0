"""A throw-away PEC circuit for tests: a CA playing AgID's part, a provider certificate it
issued ("Posta Certificata Test"), and S/MIME signing of whole messages as a provider signs its
envelopes and receipts (multipart/signed, detached CMS over the canonical first part).

The bridge trusts the CA only when a test configures it (``pec.trust_anchors``): the shipped
anchors are the real AgID ones, which no test can sign with.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from dataclasses import dataclass
from email import message_from_bytes
from email.policy import compat32

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from connector.pec.trust import TrustAnchor, TrustStore

SIGNED_BOUNDARY = "----pec-test-signed-0001"
_CONTENT_HEADERS = (b"content-type", b"content-transfer-encoding", b"mime-version")


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "IT"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str = "Test PEC CA", *, path_length: int | None = 0,
            not_before: dt.datetime | None = None, days: int = 11_000,
            issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
            constraints: x509.NameConstraints | None = None,
            ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A CA certificate (self-signed, or issued by ``issuer``) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or dt.datetime(2010, 1, 1, tzinfo=dt.UTC)
    name = _name(common_name, "Test PEC Authority")
    signer_cert, signer_key = issuer if issuer else (None, key)
    builder = (x509.CertificateBuilder()
               .subject_name(name)
               .issuer_name(signer_cert.subject if signer_cert else name)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(start)
               .not_valid_after(start + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), True)
               .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                            False, False), True))
    if constraints is not None:
        builder = builder.add_extension(constraints, False)
    return builder.sign(signer_key, hashes.SHA256()), key


def make_signer(issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], *,
                email: str = "posta-certificata@pec.aruba.it",
                common_name: str = "Posta Certificata Test",
                not_before: dt.datetime | None = None, days: int = 11_000,
                ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A provider's signing certificate issued by ``issuer``."""
    issuer_cert, issuer_key = issuer
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or dt.datetime(2010, 1, 1, tzinfo=dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common_name, "Test PEC Provider S.p.A."))
            .issuer_name(issuer_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), False)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                         False, False), True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), False)
            .sign(issuer_key, hashes.SHA256()))
    return cert, key


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _crlf(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


def sign_message(raw: bytes, signer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
                 *, chain: tuple[x509.Certificate, ...] = ()) -> bytes:
    """``raw`` as its provider would deliver it: the transport headers outside, the body
    entity (its Content-* headers and body) signed inside a multipart/signed. A message that is
    multipart/signed already (a real sample with a placeholder signature) is signed again over
    its own first part."""
    raw = _crlf(raw)
    head, _, body = raw.partition(b"\r\n\r\n")
    parsed = message_from_bytes(raw, policy=compat32)
    if parsed.get_content_type() == "multipart/signed":
        boundary = parsed.get_boundary()
        assert boundary is not None
        first = body.split(b"--" + boundary.encode() + b"\r\n", 2)[1]
        content = first.rsplit(b"\r\n", 1)[0] if first.endswith(b"\r\n") else first
    else:
        content_headers = [line for line in _unfolded(head)
                           if line.split(b":", 1)[0].strip().lower() in _CONTENT_HEADERS[:2]]
        content = b"\r\n".join(content_headers) + b"\r\n\r\n" + body
    outer = [line for line in _unfolded(head)
             if line.split(b":", 1)[0].strip().lower() not in _CONTENT_HEADERS]
    cert, key = signer
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content).add_signer(cert, key,
                                                                          hashes.SHA256())
    for extra in chain:
        builder = builder.add_certificate(extra)
    der = builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature,
                                                    pkcs7.PKCS7Options.Binary])
    signature = base64.encodebytes(der).replace(b"\n", b"\r\n")
    boundary = SIGNED_BOUNDARY.encode()
    return (b"\r\n".join(outer) + b"\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
            b'micalg=sha-256; boundary="' + boundary + b'"\r\n\r\n'
            b"This is an S/MIME signed message\r\n\r\n"
            b"--" + boundary + b"\r\n" + content + b"\r\n"
            b"--" + boundary + b"\r\n"
            b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
            b"Content-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="smime.p7s"\r\n\r\n'
            + signature + b"\r\n--" + boundary + b"--\r\n")


def _unfolded(head: bytes) -> list[bytes]:
    """Header lines with their continuation lines kept attached."""
    lines: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and lines:
            lines[-1] += b"\r\n" + line
        elif line:
            lines.append(line)
    return lines


@dataclass(frozen=True)
class TestPecCircuit:
    """The test CA (``ca_pem`` goes into a file named by ``pec.trust_anchors``) and one
    provider it certified."""

    __test__ = False  # not a test class, despite the name

    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
    provider: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]

    @property
    def ca_pem(self) -> bytes:
        return pem(self.ca[0])

    def sign(self, raw: bytes) -> bytes:
        return sign_message(raw, self.provider)

    def trust_store(self) -> TrustStore:
        """The store an AccountConfig built in a test gets (``pec_trust=``)."""
        der = self.ca[0].public_bytes(serialization.Encoding.DER)
        return TrustStore((TrustAnchor(der, "test:ca"),), "the test PEC CA")


def make_circuit() -> TestPecCircuit:
    ca = make_ca()
    return TestPecCircuit(ca, make_signer(ca))
