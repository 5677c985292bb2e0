"""Whether a PEC signature comes from a certified PEC provider: the signer certificate must
chain to a trust anchor of the PEC circuit.

A valid CMS signature only proves that whoever held the key signed these bytes; anyone can make
a key and a certificate that says "Posta Certificata ARUBA PEC". What makes a PEC envelope or
receipt evidence is that the provider's certificate is issued by the CA AgID runs for the PEC
managers it lists (AgID CA1, formerly DigitPA CA1), or by an anchor the admin configured.

The chain is judged at the signing time the signature itself carries (the CMS signing-time
attribute, covered by the signature), else at the certified time of the daticert, else now:
a receipt from 2014 stays evidence after its provider's certificate expired. Revocation is not
checked (no network from the parse stage); ``check`` shows when the anchors expire.

Pure: the anchors are bytes (``TrustStore`` pickles to the parse workers); files are read only
by ``load_trust_store``, when the configuration is loaded.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

#: The longest chain tried (signer, intermediates, anchor).
MAX_CHAIN_LENGTH = 6
#: A signing time this far in the future is not believed (clocks drift, certificates do not).
FUTURE_TOLERANCE = timedelta(days=1)
SHIPPED_DIR = "trust_anchors"

_E = TypeVar("_E", bound=x509.ExtensionType)


class TrustStoreError(ValueError):
    """An anchor file that cannot be read or holds no certificate."""


@dataclass(frozen=True)
class TrustAnchor:
    """One anchor certificate and where it came from (a file, or ``shipped:<name>``)."""

    der: bytes = field(repr=False)
    source: str

    @property
    def certificate(self) -> x509.Certificate:
        return _load_der(self.der)

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    @property
    def sha256(self) -> str:
        return self.certificate.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True)
class TrustStore:
    """The anchors a PEC signer must chain to; ``description`` says which set this is."""

    anchors: tuple[TrustAnchor, ...]
    description: str

    def expired(self, now: datetime) -> list[TrustAnchor]:
        """Anchors already expired at ``now`` (they still judge mail signed before)."""
        return [a for a in self.anchors if a.not_after < now]


def describe_store(store: TrustStore, now: datetime | None = None) -> list[str]:
    """What ``check`` prints: the store, then each anchor with its expiry, soonest first."""
    now = now or datetime.now(UTC)
    valid = [a for a in store.anchors if a.not_after >= now]
    lines = [f"PEC trust store: {store.description}; {len(valid)} of {len(store.anchors)} "
             "certificates valid today"]
    for anchor in sorted(store.anchors, key=lambda a: a.not_after):
        state = ("EXPIRED (still judges mail signed before)" if anchor.not_after < now
                 else "expires")
        lines.append(f"{anchor.subject} [{anchor.source}] {state} "
                     f"{anchor.not_after.date().isoformat()}")
    return lines


@dataclass(frozen=True)
class ChainVerdict:
    """``trusted`` with the path from the signer to its anchor (subjects), or why not."""

    trusted: bool
    reason: str
    path: tuple[str, ...] = ()
    anchor: str | None = None  # the anchor's source


@functools.lru_cache(maxsize=256)
def _load_der(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


def anchors_from_pem(data: bytes, source: str) -> tuple[TrustAnchor, ...]:
    """Every certificate in a PEM (or a single DER) blob; TrustStoreError when none."""
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise TrustStoreError(f"{source}: not a PEM or DER certificate ({exc})") from None
    from cryptography.hazmat.primitives.serialization import Encoding

    return tuple(TrustAnchor(cert.public_bytes(Encoding.DER), source) for cert in certs)


@functools.lru_cache(maxsize=1)
def shipped_trust_store() -> TrustStore:
    """The CAs of the AgID PEC circuit shipped with the bridge (trust_anchors/README.md)."""
    folder = resources.files("connector.pec").joinpath(SHIPPED_DIR)
    anchors: list[TrustAnchor] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".pem"):
            anchors.extend(anchors_from_pem(entry.read_bytes(), f"shipped:{entry.name}"))
    return TrustStore(tuple(anchors), f"shipped AgID/DigitPA PEC CAs ({len(anchors)})")


def load_trust_store(paths: Iterable[Path], *, include_shipped: bool = True) -> TrustStore:
    """The shipped anchors (unless ``include_shipped`` is false) plus every certificate in
    ``paths`` (PEM/DER files, or folders whose *.pem, *.crt, *.cer files are read)."""
    anchors: list[TrustAnchor] = list(shipped_trust_store().anchors) if include_shipped else []
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir()
                                if p.suffix.lower() in (".pem", ".crt", ".cer")))
        else:
            files.append(path)
    for file in files:
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise TrustStoreError(f"cannot read {file}: {exc.strerror}") from None
        anchors.extend(anchors_from_pem(data, str(file)))
    if not anchors:
        raise TrustStoreError("no trust anchor: with shipped_trust_anchors false, "
                              "trust_anchors must name at least one certificate")
    parts = (["shipped AgID/DigitPA PEC CAs"] if include_shipped else []) + \
        [str(p) for p in paths]
    unique = tuple({a.der: a for a in anchors}.values())
    return TrustStore(unique, f"{' + '.join(parts)} ({len(unique)} certificates)")


def judgement_time(signing_time: datetime | None, fallback: datetime | None,
                   now: datetime | None = None) -> datetime:
    """When the chain is judged: the signed signing-time, else ``fallback``, else now."""
    moment = signing_time or fallback or now or datetime.now(UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def build_chain(signer: x509.Certificate, pool: Sequence[x509.Certificate],
                store: TrustStore, at: datetime, *,
                now: datetime | None = None) -> ChainVerdict:
    """Find a path from ``signer`` through ``pool`` (the certificates the signature carries)
    to an anchor of ``store``, every certificate valid at ``at``."""
    now = now or datetime.now(UTC)
    if at > now + FUTURE_TOLERANCE:
        return ChainVerdict(False, f"the signing time {at.isoformat()} is in the future")
    problem = _leaf_problem(signer, at)
    if problem:
        return ChainVerdict(False, problem)
    anchors = [(a.certificate, a.source) for a in store.anchors]
    for anchor, source in anchors:
        if anchor == signer:  # the provider's own certificate pinned as an anchor
            return ChainVerdict(True, "the signer certificate is itself a trust anchor",
                                (signer.subject.rfc4514_string(),), source)
    failures: list[str] = []
    found = _extend([signer], pool, anchors, at, failures)
    if found is not None:
        path, source = found
        names = tuple(c.subject.rfc4514_string() for c in path)
        return ChainVerdict(True, f"chains to trust anchor {names[-1]}", names, source)
    if failures:
        return ChainVerdict(False, failures[0])
    return ChainVerdict(False, f"no trust anchor issued {signer.issuer.rfc4514_string()} "
                               f"(store: {store.description})")


def _extend(path: list[x509.Certificate], pool: Sequence[x509.Certificate],
            anchors: list[tuple[x509.Certificate, str]], at: datetime,
            failures: list[str]) -> tuple[list[x509.Certificate], str] | None:
    current = path[-1]
    candidates = [(a, s) for a, s in anchors if a.subject == current.issuer] + \
        [(c, None) for c in pool if c.subject == current.issuer and c not in path]
    for issuer, source in candidates:
        problem = _issuer_problem(issuer, current, path, at, is_anchor=source is not None)
        if problem:
            failures.append(problem)
            continue
        if source is not None:
            return [*path, issuer], source
        if len(path) + 1 < MAX_CHAIN_LENGTH:
            found = _extend([*path, issuer], pool, anchors, at, failures)
            if found is not None:
                return found
    return None


def signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """``issuer``'s key signed ``child``. By hand rather than
    ``verify_directly_issued_by``, which refuses SHA-1: the PEC CAs signed provider
    certificates with SHA-1 until about 2016, and those receipts are still evidence."""
    if child.issuer != issuer.subject:
        return False
    key = issuer.public_key()
    signature, tbs = child.signature, child.tbs_certificate_bytes
    try:
        digest = child.signature_hash_algorithm
        if isinstance(key, rsa.RSAPublicKey) and digest is not None:
            scheme = child.signature_algorithm_parameters
            if not isinstance(scheme, padding.PSS | padding.PKCS1v15):
                return False
            key.verify(signature, tbs, scheme, digest)
        elif isinstance(key, ec.EllipticCurvePublicKey) and digest is not None:
            key.verify(signature, tbs, ec.ECDSA(digest))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, tbs)
        elif isinstance(key, dsa.DSAPublicKey) and digest is not None:
            key.verify(signature, tbs, digest)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _valid_at(cert: x509.Certificate, at: datetime) -> bool:
    return cert.not_valid_before_utc <= at <= cert.not_valid_after_utc


def _leaf_problem(signer: x509.Certificate, at: datetime) -> str | None:
    name = signer.subject.rfc4514_string()
    if not _valid_at(signer, at):
        return (f"the signer certificate {name} was not valid at the signing time "
                f"{at.isoformat()} (valid {signer.not_valid_before_utc.date()} to "
                f"{signer.not_valid_after_utc.date()})")
    usage = _extension(signer, x509.KeyUsage)
    if usage is not None and not (usage.digital_signature or usage.content_commitment):
        return f"the signer certificate {name} is not for signatures (key usage)"
    extended = _extension(signer, x509.ExtendedKeyUsage)
    if extended is not None and not ({ExtendedKeyUsageOID.EMAIL_PROTECTION,
                                      ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
                                     & set(extended)):
        return f"the signer certificate {name} is not for e-mail protection"
    return None


def _issuer_problem(issuer: x509.Certificate, child: x509.Certificate,
                    path: list[x509.Certificate], at: datetime, *, is_anchor: bool) -> str | None:
    name = issuer.subject.rfc4514_string()
    what = "trust anchor" if is_anchor else "intermediate CA"
    if not signed_by(child, issuer):
        return f"{child.subject.rfc4514_string()} is not signed by the {what} {name}"
    if not _valid_at(issuer, at):
        return (f"the {what} {name} was not valid at the signing time {at.isoformat()} "
                f"(valid {issuer.not_valid_before_utc.date()} to "
                f"{issuer.not_valid_after_utc.date()})")
    constraints = _extension(issuer, x509.BasicConstraints)
    if constraints is None and not is_anchor:
        return f"the {what} {name} is not marked as a CA"
    if constraints is not None:
        if not constraints.ca:
            return f"{name} is not a CA certificate"
        below = len(path) - 1  # CA certificates between this issuer and the signer
        if constraints.path_length is not None and below > constraints.path_length:
            return f"the {what} {name} allows {constraints.path_length} CAs below it"
    usage = _extension(issuer, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        return f"the {what} {name} may not sign certificates (key usage)"
    names = _extension(issuer, x509.NameConstraints)
    if names is not None:
        refused = name_constraint_problem(path[0], names)
        if refused:
            return f"the {what} {name} does not cover the signer: {refused}"
    return None


def _extension(cert: x509.Certificate, kind: type[_E]) -> _E | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    except ValueError:  # a malformed extension: as good as absent for a decision below
        return None


def name_constraint_problem(signer: x509.Certificate,
                            constraints: x509.NameConstraints) -> str | None:
    """Why ``signer`` is outside a CA's name constraints (RFC 5280 4.2.1.10), or None.
    Checked: e-mail addresses (rfc822Name) and the subject (directoryName), the forms the PEC
    CA uses to list its providers' domains and organisations."""
    emails = _signer_emails(signer)
    permitted = constraints.permitted_subtrees or []
    excluded = constraints.excluded_subtrees or []
    allowed_mail = [g.value for g in permitted if isinstance(g, x509.RFC822Name)]
    denied_mail = [g.value for g in excluded if isinstance(g, x509.RFC822Name)]
    for email in emails:
        if allowed_mail and not any(_mail_matches(email, c) for c in allowed_mail):
            return f"{email} is outside its permitted e-mail domains"
        if any(_mail_matches(email, c) for c in denied_mail):
            return f"{email} is in its excluded e-mail domains"
    allowed_dirs = [g.value for g in permitted if isinstance(g, x509.DirectoryName)]
    denied_dirs = [g.value for g in excluded if isinstance(g, x509.DirectoryName)]
    subject = signer.subject
    if allowed_dirs and len(subject) and not any(_within(subject, d) for d in allowed_dirs):
        return f"{subject.rfc4514_string()} is outside its permitted names"
    if any(_within(subject, d) for d in denied_dirs):
        return f"{subject.rfc4514_string()} is in its excluded names"
    return None


def _signer_emails(cert: x509.Certificate) -> list[str]:
    emails: list[str] = []
    san = _extension(cert, x509.SubjectAlternativeName)
    if san is not None:
        emails.extend(san.get_values_for_type(x509.RFC822Name))
    emails.extend(str(a.value) for a in cert.subject.get_attributes_for_oid(
        x509.NameOID.EMAIL_ADDRESS))
    return emails


def _mail_matches(email: str, constraint: str) -> bool:
    """RFC 5280: a full mailbox, a host (``example.it``) or a domain (``.example.it``)."""
    email, constraint = email.lower(), constraint.lower()
    if "@" in constraint:
        return email == constraint
    domain = email.rpartition("@")[2]
    if constraint.startswith("."):
        return domain.endswith(constraint)
    return domain == constraint


def _within(subject: x509.Name, subtree: x509.Name) -> bool:
    """``subject`` starts with the RDNs of ``subtree`` (same attributes, same values)."""
    rdns, prefix = list(subject.rdns), list(subtree.rdns)
    return len(prefix) <= len(rdns) and all(
        {(a.oid, str(a.value).casefold()) for a in mine}
        == {(a.oid, str(a.value).casefold()) for a in theirs}
        for mine, theirs in zip(rdns, prefix, strict=False))
