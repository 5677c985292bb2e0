"""CMS (PKCS #7) SignedData, read into plain data (RFC 5652 section 5).

Only what a signature check needs: the encapsulated content (opaque signing), the certificates,
and per signer its identifier, algorithms, signed attributes and signature value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from connector.pec.der import (
    TAG_GENERALIZED_TIME,
    TAG_INTEGER,
    TAG_OCTET_STRING,
    TAG_SEQUENCE,
    TAG_SET,
    TAG_UTC_TIME,
    DerError,
    Tlv,
    decode_integer,
    decode_oid,
    expect,
    read_tlv,
)

OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_DATA = "1.2.840.113549.1.7.1"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SIGNING_TIME = "1.2.840.113549.1.9.5"


@dataclass(frozen=True)
class AlgorithmId:
    oid: str
    parameters: bytes | None = None  # encoded parameters, None when absent


@dataclass(frozen=True)
class SignerInfo:
    issuer_der: bytes | None  # IssuerAndSerialNumber form
    serial: int | None
    subject_key_id: bytes | None  # SubjectKeyIdentifier form
    digest_algorithm: AlgorithmId
    signature_algorithm: AlgorithmId
    signature: bytes = field(repr=False)
    # DER of the signed attributes re-tagged as SET OF, i.e. the bytes the signature covers.
    signed_attrs: bytes | None = field(default=None, repr=False)
    content_type: str | None = None
    message_digest: bytes | None = None
    signing_time: datetime | None = None


@dataclass(frozen=True)
class SignedData:
    content_type: str
    content: bytes | None = field(repr=False)  # encapsulated content; None when detached
    certificates: tuple[bytes, ...] = field(repr=False)  # DER of each X.509 certificate
    signers: tuple[SignerInfo, ...]


def parse_signed_data(der: bytes) -> SignedData:
    """Read a ContentInfo holding SignedData. Raises DerError on anything malformed."""
    info = expect(read_tlv(der), TAG_SEQUENCE, "ContentInfo")
    items = info.children()
    if len(items) < 2:
        raise DerError("ContentInfo without content")
    content_type = decode_oid(items[0])
    if content_type != OID_SIGNED_DATA:
        raise DerError(f"ContentInfo holds {content_type}, not SignedData")
    explicit = items[1]
    if not explicit.is_context(0) or not explicit.constructed:
        raise DerError("ContentInfo content is not [0] EXPLICIT")
    inner = explicit.children()
    if not inner:
        raise DerError("empty SignedData")
    signed = expect(inner[0], TAG_SEQUENCE, "SignedData").children()
    if len(signed) < 4:
        raise DerError("SignedData has too few fields")
    decode_integer(signed[0])  # version: read only to validate
    expect(signed[1], TAG_SET, "digestAlgorithms")
    encap_type, encap_content = _encapsulated(expect(signed[2], TAG_SEQUENCE, "encapContentInfo"))
    certificates: list[bytes] = []
    index = 3
    while index < len(signed) and signed[index].tag_class == 2:
        if signed[index].is_context(0):
            certificates.extend(
                cert.encoded for cert in signed[index].children() if cert.is_universal(TAG_SEQUENCE)
            )
        index += 1  # [1] crls are skipped
    if index >= len(signed):
        raise DerError("SignedData without signerInfos")
    signer_set = expect(signed[index], TAG_SET, "signerInfos")
    signers = tuple(_signer_info(item) for item in signer_set.children())
    return SignedData(encap_type, encap_content, tuple(certificates), signers)


def _encapsulated(tlv: Tlv) -> tuple[str, bytes | None]:
    items = tlv.children()
    if not items:
        raise DerError("empty encapContentInfo")
    content_type = decode_oid(items[0])
    if len(items) < 2:
        return content_type, None
    explicit = items[1]
    if not explicit.is_context(0):
        raise DerError("eContent is not [0] EXPLICIT")
    inner = explicit.children()
    if not inner:
        return content_type, b""
    return content_type, expect(inner[0], TAG_OCTET_STRING, "eContent").octets()


def _algorithm(tlv: Tlv) -> AlgorithmId:
    items = expect(tlv, TAG_SEQUENCE, "AlgorithmIdentifier").children()
    if not items:
        raise DerError("empty AlgorithmIdentifier")
    params = items[1].encoded if len(items) > 1 else None
    if params == b"\x05\x00":  # explicit NULL means "no parameters"
        params = None
    return AlgorithmId(decode_oid(items[0]), params)


def _signer_info(tlv: Tlv) -> SignerInfo:
    items = expect(tlv, TAG_SEQUENCE, "SignerInfo").children()
    if len(items) < 5:
        raise DerError("SignerInfo has too few fields")
    decode_integer(items[0])
    sid = items[1]
    issuer_der: bytes | None = None
    serial: int | None = None
    subject_key_id: bytes | None = None
    if sid.is_universal(TAG_SEQUENCE):
        issuer_and_serial = sid.children()
        if len(issuer_and_serial) != 2:
            raise DerError("bad IssuerAndSerialNumber")
        issuer_der = expect(issuer_and_serial[0], TAG_SEQUENCE, "issuer").encoded
        serial = decode_integer(issuer_and_serial[1])
    elif sid.is_context(0):
        subject_key_id = sid.content
    else:
        raise DerError("unknown SignerIdentifier")
    digest_algorithm = _algorithm(items[2])
    index = 3
    signed_attrs: bytes | None = None
    attributes: dict[str, list[Tlv]] = {}
    if items[index].is_context(0):
        attrs = items[index]
        # The signature covers the attributes encoded as a SET OF: same bytes, universal tag.
        signed_attrs = b"\x31" + attrs.encoded[1:]
        attributes = _attributes(attrs)
        index += 1
    if index + 1 >= len(items):
        raise DerError("SignerInfo without signature")
    signature_algorithm = _algorithm(items[index])
    signature = expect(items[index + 1], TAG_OCTET_STRING, "signature").octets()
    content_type = None
    if OID_CONTENT_TYPE in attributes:
        content_type = decode_oid(attributes[OID_CONTENT_TYPE][0])
    message_digest = None
    if OID_MESSAGE_DIGEST in attributes:
        message_digest = expect(attributes[OID_MESSAGE_DIGEST][0], TAG_OCTET_STRING,
                                "messageDigest").octets()
    signing_time = None
    if OID_SIGNING_TIME in attributes:
        signing_time = decode_time(attributes[OID_SIGNING_TIME][0])
    return SignerInfo(
        issuer_der=issuer_der,
        serial=serial,
        subject_key_id=subject_key_id,
        digest_algorithm=digest_algorithm,
        signature_algorithm=signature_algorithm,
        signature=signature,
        signed_attrs=signed_attrs,
        content_type=content_type,
        message_digest=message_digest,
        signing_time=signing_time,
    )


def _attributes(attrs: Tlv) -> dict[str, list[Tlv]]:
    found: dict[str, list[Tlv]] = {}
    for attribute in attrs.children():
        pair = expect(attribute, TAG_SEQUENCE, "Attribute").children()
        if len(pair) != 2:
            raise DerError("bad Attribute")
        oid = decode_oid(pair[0])
        if oid in found:
            raise DerError(f"attribute {oid} appears twice")
        values = expect(pair[1], TAG_SET, "AttributeValues").children()
        if not values:
            raise DerError(f"attribute {oid} has no value")
        found[oid] = values
    return found


def decode_time(tlv: Tlv) -> datetime:
    """UTCTime or GeneralizedTime in UTC ('Z'), as CMS signing-time uses them."""
    text = tlv.content.decode("ascii", "replace")
    if tlv.is_universal(TAG_UTC_TIME):
        year = int(text[:2])
        text = f"{2000 + year if year < 50 else 1900 + year}{text[2:]}"
    elif not tlv.is_universal(TAG_GENERALIZED_TIME):
        raise DerError("time is neither UTCTime nor GeneralizedTime")
    if not text.endswith("Z"):
        raise DerError(f"time {text!r} is not in UTC")
    digits = text[:-1].split(".", 1)[0]
    try:
        return datetime.strptime(digits, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError as exc:
        raise DerError(f"bad time {text!r}") from exc


def certificate_issuer_serial(cert_der: bytes) -> tuple[bytes, int]:
    """Encoded issuer Name and serial number of an X.509 certificate, read from its own bytes
    so the comparison with a SignerInfo needs no re-encoding."""
    cert = expect(read_tlv(cert_der), TAG_SEQUENCE, "Certificate").children()
    tbs = expect(cert[0], TAG_SEQUENCE, "TBSCertificate").children()
    index = 1 if tbs and tbs[0].is_context(0) else 0
    if len(tbs) < index + 3:
        raise DerError("TBSCertificate has too few fields")
    serial = decode_integer(expect(tbs[index], TAG_INTEGER, "serialNumber"))
    issuer = expect(tbs[index + 2], TAG_SEQUENCE, "issuer").encoded
    return issuer, serial
