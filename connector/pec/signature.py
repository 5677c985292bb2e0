"""The provider's S/MIME signature, judged in two steps.

Integrity, as ``openssl smime -verify -noverify`` would: the content digest must match the
signed messageDigest and the signature over the signed attributes must verify with the signer
certificate's key. Then trust (``judge_trust``, connector.pec.trust): the signer certificate
must chain to a PEC trust anchor at the signing time. Only both make the verdict VALID; intact
bytes from a signer nobody certified are UNTRUSTED. The verdict never blocks a message: it
decides whether the message counts as certified evidence.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import Encoding

from connector.pec.cms import (
    AlgorithmId,
    SignedData,
    SignerInfo,
    certificate_issuer_serial,
    parse_signed_data,
)
from connector.pec.der import DerError, decode_integer, decode_oid, read_tlv
from connector.pec.parts import PecPart
from connector.pec.signed_content import SignedContent
from connector.pec.signed_content import canonical_crlf as canonical_crlf  # re-exported
from connector.pec.trust import TrustStore, build_chain, judgement_time

log = logging.getLogger(__name__)

SIGNATURE_TYPES = ("application/pkcs7-signature", "application/x-pkcs7-signature")
OPAQUE_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")

_DIGESTS: dict[str, str] = {
    "1.2.840.113549.2.5": "md5",
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.4": "sha224",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "md5": hashes.MD5,
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_OID_RSASSA_PSS = "1.2.840.113549.1.1.10"
_OID_MGF1 = "1.2.840.113549.1.1.8"


class SignatureStatus(StrEnum):
    VALID = "valid"  # intact, and the signer chains to a trusted PEC provider CA
    UNTRUSTED = "untrusted"  # intact, but the signer is not a trusted PEC provider
    INVALID = "invalid"  # decodable, but the content or the signature does not match (broken)
    MISSING = "missing"  # not signed, or the signature part is absent (truncated message)
    UNDECODABLE = "undecodable"  # a signature part is there but cannot be read or checked


@dataclass(frozen=True)
class SignatureVerdict:
    status: SignatureStatus
    detail: str = ""
    signer_subject: str | None = None  # RFC 4514 string
    signer_issuer: str | None = None
    signer_serial: int | None = None
    signer_email: str | None = None  # first rfc822Name of the certificate, else emailAddress
    signing_time: datetime | None = None
    digest_algorithm: str | None = None
    # DER of the signer's certificate, then the other certificates the signature carries:
    # what judge_trust builds the chain from.
    certificates: tuple[bytes, ...] = field(default=(), repr=False, compare=False)
    trust_anchor: str | None = None  # the anchor the signer chains to (VALID only)
    trust_checked: bool = False  # judge_trust has run (integrity alone says nothing of trust)
    judged_with: str | None = None  # the description of the trust store that judged it

    @property
    def is_valid(self) -> bool:
        """Certified: intact and signed by a trusted PEC provider."""
        return self.status is SignatureStatus.VALID and self.trust_checked

    @property
    def is_intact(self) -> bool:
        """The signed bytes are unchanged, whoever signed them."""
        return self.status in (SignatureStatus.VALID, SignatureStatus.UNTRUSTED)


def judge_trust(verdict: SignatureVerdict, store: TrustStore, *,
                fallback_time: datetime | None = None,
                now: datetime | None = None) -> SignatureVerdict:
    """An intact signature stays VALID only when its signer chains to ``store`` at the signing
    time (else ``fallback_time``, the certified time, else now); otherwise UNTRUSTED. A
    verdict judged by another store is judged again; broken, missing and undecodable
    verdicts are returned as they are."""
    if not verdict.is_intact:
        return verdict
    if verdict.trust_checked and verdict.judged_with == store.description:
        return verdict
    verdict = replace(verdict, trust_checked=True, judged_with=store.description,
                      trust_anchor=None)
    if not verdict.certificates:
        return replace(verdict, status=SignatureStatus.UNTRUSTED,
                       detail="the signed bytes are intact, but the signer's certificate "
                              "is not available to check")
    try:
        signer = x509.load_der_x509_certificate(verdict.certificates[0])
        pool = []
        for der in verdict.certificates[1:]:
            try:
                pool.append(x509.load_der_x509_certificate(der))
            except ValueError:
                continue  # an unreadable extra certificate cannot help a chain
    except ValueError as exc:
        return replace(verdict, status=SignatureStatus.UNTRUSTED,
                       detail=f"the signed bytes are intact, but the signer's certificate "
                              f"cannot be read: {exc}")
    at = judgement_time(verdict.signing_time, fallback_time, now)
    chain = build_chain(signer, pool, store, at, now=now)
    if chain.trusted:
        return replace(verdict, status=SignatureStatus.VALID, trust_anchor=chain.anchor,
                       detail=f"signature verifies; the signer {chain.reason} "
                              f"(judged at {at.isoformat()})")
    return replace(verdict, status=SignatureStatus.UNTRUSTED,
                   detail=f"the signed bytes are intact, but the signer is not a trusted PEC "
                          f"provider: {chain.reason}")


def verify_entity(entity: PecPart | None, *, context: str = "") -> SignatureVerdict:
    """Verdict for a multipart/signed or opaque application/pkcs7-mime entity (None: unsigned).
    ``context`` names the message in log lines."""
    if entity is None:
        return SignatureVerdict(SignatureStatus.MISSING, "the message is not S/MIME signed")
    try:
        if entity.content_type == "multipart/signed":
            return _verify_multipart(entity)
        if entity.content_type in OPAQUE_TYPES:
            try:
                der = entity.decoded_body()
            except ValueError as exc:
                return SignatureVerdict(SignatureStatus.UNDECODABLE,
                                        f"signature is not base64: {exc}")
            return verify_opaque(der)[0]
    except Exception as exc:  # hostile input must never stop the pipeline: report, do not raise
        log.warning("pec: signature check failed unexpectedly (%s): %s: %s", context,
                    type(exc).__name__, exc)
        return SignatureVerdict(SignatureStatus.UNDECODABLE, f"unexpected error: {exc}")
    return SignatureVerdict(SignatureStatus.MISSING, f"{entity.content_type} is not S/MIME")


def _verify_multipart(entity: PecPart) -> SignatureVerdict:
    if not entity.children:
        return SignatureVerdict(SignatureStatus.MISSING, "multipart/signed without parts")
    signature_part = next(
        (part for part in entity.children[1:] if part.content_type in SIGNATURE_TYPES
         or (part.filename or "").lower().endswith(".p7s")),
        None,
    )
    if signature_part is None and len(entity.children) > 1:
        return SignatureVerdict(SignatureStatus.UNDECODABLE,
                                f"the second part is {entity.children[1].content_type}, "
                                "not a PKCS #7 signature")
    if signature_part is None:
        return SignatureVerdict(
            SignatureStatus.MISSING, "multipart/signed without a signature part (truncated?)"
        )
    if signature_part.body_is_blank:
        return SignatureVerdict(SignatureStatus.MISSING, "the signature part is empty")
    try:
        der = signature_part.decoded_body()
    except ValueError as exc:
        return SignatureVerdict(SignatureStatus.UNDECODABLE, f"signature is not base64: {exc}")
    # The first part exactly as it travelled, headers included, in canonical form: read
    # where it lies in the message, never copied when it is CRLF already.
    first = entity.children[0].mime
    content = SignedContent(first.raw, first.start, first.end, canonicalize=True)
    return _verify_detached_content(content, der)


def verify_detached(content: bytes, signature_der: bytes) -> SignatureVerdict:
    """Check a detached CMS signature over ``content`` (already in the form that was signed)."""
    return _verify_detached_content(SignedContent(content), signature_der)


def _verify_detached_content(content: SignedContent, signature_der: bytes) -> SignatureVerdict:
    try:
        signed = parse_signed_data(signature_der)
    except (DerError, ValueError, IndexError) as exc:
        return SignatureVerdict(SignatureStatus.UNDECODABLE, f"not a CMS SignedData: {exc}")
    return _verify_signed(signed, content)


def verify_opaque(der: bytes) -> tuple[SignatureVerdict, bytes | None]:
    """Check an opaque (application/pkcs7-mime signed-data) signature; also return the content,
    which for an S/MIME message is the signed MIME entity."""
    try:
        signed = parse_signed_data(der)
    except (DerError, ValueError, IndexError) as exc:
        return SignatureVerdict(SignatureStatus.UNDECODABLE, f"not a CMS SignedData: {exc}"), None
    if signed.content is None:
        verdict = SignatureVerdict(SignatureStatus.UNDECODABLE, "signed-data without content")
        return verdict, None
    return _verify_signed(signed, SignedContent(signed.content)), signed.content


def opaque_content(entity: PecPart) -> bytes | None:
    """The encapsulated content of an application/pkcs7-mime entity, None if unreadable."""
    try:
        return parse_signed_data(entity.decoded_body()).content
    except (DerError, ValueError, IndexError):
        return None


def _verify_signed(signed: SignedData, content: SignedContent) -> SignatureVerdict:
    if not signed.signers:
        return SignatureVerdict(SignatureStatus.UNDECODABLE, "no signer in the signature")
    verdicts = [_verify_signer(signed, signer, content) for signer in signed.signers]
    failing = [v for v in verdicts if v.status is not SignatureStatus.VALID]
    # Like OpenSSL, every signer has to verify; report the first problem.
    return failing[0] if failing else verdicts[0]


def _verify_signer(signed: SignedData, signer: SignerInfo,
                   content: SignedContent) -> SignatureVerdict:
    digest_name = _DIGESTS.get(signer.digest_algorithm.oid)
    try:
        cert = _signer_certificate(signed, signer)
    except ValueError as exc:
        return SignatureVerdict(SignatureStatus.UNDECODABLE, f"bad signer certificate: {exc}",
                                digest_algorithm=digest_name, signing_time=signer.signing_time)
    if cert is None:
        return SignatureVerdict(SignatureStatus.INVALID,
                                "the signer's certificate is not in the signature",
                                digest_algorithm=digest_name, signing_time=signer.signing_time)
    base = _describe(cert, signer, digest_name)
    signer_der = cert.public_bytes(Encoding.DER)
    base = replace(base, certificates=(signer_der, *(d for d in signed.certificates
                                                     if d != signer_der)))
    if digest_name is None:
        return _with(base, SignatureStatus.UNDECODABLE,
                     f"unsupported digest algorithm {signer.digest_algorithm.oid}")
    if signer.signed_attrs is not None:
        if signer.message_digest is None:
            return _with(base, SignatureStatus.INVALID, "signed attributes lack messageDigest")
        if content.digest(digest_name) != signer.message_digest:
            return _with(base, SignatureStatus.INVALID,
                         "content digest does not match the signed messageDigest: "
                         "the signed part was modified")
        covered: bytes | memoryview | SignedContent = signer.signed_attrs
    else:
        covered = content
    try:
        _check_signature(cert.public_key(), signer, covered, _HASHES[digest_name]())
    except InvalidSignature:
        return _with(base, SignatureStatus.INVALID, "signature value does not verify")
    except (UnsupportedAlgorithm, DerError, ValueError, TypeError) as exc:
        return _with(base, SignatureStatus.UNDECODABLE, f"cannot check the signature: {exc}")
    return _with(base, SignatureStatus.VALID, "signature verifies (certificate chain not checked)")


def _with(base: SignatureVerdict, status: SignatureStatus, detail: str) -> SignatureVerdict:
    return replace(base, status=status, detail=detail)


def _signer_certificate(signed: SignedData, signer: SignerInfo) -> x509.Certificate | None:
    """The certificate the SignerInfo names. Other certificates that cannot be read are
    skipped (a broken CA copy must not hide a good signer); the signer's own must load."""
    by_serial: list[bytes] = []
    for cert_der in signed.certificates:
        if signer.subject_key_id is not None:
            try:
                cert = x509.load_der_x509_certificate(cert_der)
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            except (ValueError, x509.ExtensionNotFound):
                continue
            if ski.value.digest == signer.subject_key_id:
                return cert
            continue
        try:
            issuer, serial = certificate_issuer_serial(cert_der)
        except (DerError, IndexError):
            continue
        if serial == signer.serial:
            if issuer == signer.issuer_der:
                return x509.load_der_x509_certificate(cert_der)
            by_serial.append(cert_der)
    if len(by_serial) == 1:  # same serial, issuer encoded differently (e.g. string types)
        return x509.load_der_x509_certificate(by_serial[0])
    return None


def _describe(cert: x509.Certificate, signer: SignerInfo, digest: str | None) -> SignatureVerdict:
    return SignatureVerdict(
        status=SignatureStatus.UNDECODABLE,
        signer_subject=cert.subject.rfc4514_string(),
        signer_issuer=cert.issuer.rfc4514_string(),
        signer_serial=cert.serial_number,
        signer_email=_certificate_email(cert),
        signing_time=signer.signing_time,
        digest_algorithm=digest,
    )


def _certificate_email(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        emails = san.value.get_values_for_type(x509.RFC822Name)
        if emails:
            return emails[0]
    except (x509.ExtensionNotFound, ValueError):
        pass
    values = cert.subject.get_attributes_for_oid(x509.NameOID.EMAIL_ADDRESS)
    return str(values[0].value) if values else None


def _check_signature(key: object, signer: SignerInfo,
                     covered: bytes | memoryview | SignedContent,
                     digest: hashes.HashAlgorithm) -> None:
    """Raise InvalidSignature unless ``signer.signature`` signs ``covered`` with ``key``.

    Content that has no single buffer (canonicalised block by block) is checked by its
    digest (``Prehashed``), except with Ed25519/Ed448, which sign the message itself."""
    signature = signer.signature
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        data = covered.joined() if isinstance(covered, SignedContent) else covered
        key.verify(signature, data)
        return
    algorithm: hashes.HashAlgorithm | Prehashed = digest
    if isinstance(covered, SignedContent):
        whole = covered.view()
        if whole is None:
            data: bytes | memoryview = covered.digest(digest.name)
            algorithm = Prehashed(digest)
        else:
            data = whole
    else:
        data = covered
    if isinstance(key, rsa.RSAPublicKey):
        if signer.signature_algorithm.oid == _OID_RSASSA_PSS:
            key.verify(signature, data, _pss_padding(signer.signature_algorithm), algorithm)
        else:
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, data, ec.ECDSA(algorithm))
    elif isinstance(key, dsa.DSAPublicKey):
        key.verify(signature, data, algorithm)
    else:
        raise UnsupportedAlgorithm(f"unsupported key type {type(key).__name__}")


def _pss_padding(algorithm: AlgorithmId) -> padding.PSS:
    """RSASSA-PSS parameters (RFC 4055); the hash itself comes from the digest algorithm."""
    mgf_hash: hashes.HashAlgorithm = hashes.SHA1()
    salt_length = 20
    if algorithm.parameters:
        for item in read_tlv(algorithm.parameters).children():
            if item.is_context(1):
                mgf = item.children()[0].children()
                if decode_oid(mgf[0]) != _OID_MGF1:
                    raise UnsupportedAlgorithm("PSS with a mask generation other than MGF1")
                mgf_digest = _DIGESTS.get(decode_oid(mgf[1].children()[0]))
                if mgf_digest is None:
                    raise UnsupportedAlgorithm("unsupported MGF1 digest")
                mgf_hash = _HASHES[mgf_digest]()
            elif item.is_context(2):
                salt_length = decode_integer(item.children()[0])
    return padding.PSS(mgf=padding.MGF1(mgf_hash), salt_length=salt_length)
