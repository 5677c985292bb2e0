"""Whether a PEC signer is a trusted provider (connector/pec/trust.py): chain building with test
PKIs made here (tests/pec_provider.py), judged at the signing time; the shipped AgID anchors on
the real samples; the configuration keys and what ``check`` reports."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from bridge_cli import cli_output as run_cli
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from pec_provider import make_ca, make_circuit, make_signer, pem
from shared_material import pec_sample
from test_pec_signature import DATICERT, envelope, signed_content

from connector.config import config_from_mapping
from connector.errors import ConfigError
from connector.pec import SignatureStatus, analyze_pec
from connector.pec.trust import (
    TrustAnchor,
    TrustStore,
    build_chain,
    describe_store,
    load_trust_store,
    name_constraint_problem,
    shipped_trust_store,
    signed_by,
)

UTC = dt.UTC
AT = dt.datetime(2024, 2, 1, 9, 11, 12, tzinfo=UTC)
NOW = dt.datetime(2026, 1, 1, tzinfo=UTC)


def store_of(*certs: x509.Certificate) -> TrustStore:
    from cryptography.hazmat.primitives.serialization import Encoding

    return TrustStore(tuple(TrustAnchor(c.public_bytes(Encoding.DER), f"test:{i}")
                            for i, c in enumerate(certs)), "test anchors")


def chain(signer, pool=(), anchors=(), at=AT):  # noqa: ANN001, ANN201
    return build_chain(signer[0], [c[0] for c in pool], store_of(*(a[0] for a in anchors)),
                       at, now=NOW)


# -- chain building -------------------------------------------------------------------------------


def test_a_provider_issued_by_an_anchor_is_trusted() -> None:
    ca = make_ca()
    verdict = chain(make_signer(ca), anchors=[ca])
    assert verdict.trusted, verdict.reason
    assert verdict.path == ("CN=Posta Certificata Test,O=Test PEC Provider S.p.A.,C=IT",
                            "CN=Test PEC CA,O=Test PEC Authority,C=IT")
    assert verdict.anchor == "test:0"


def test_the_chain_goes_through_the_intermediates_the_signature_carries() -> None:
    root = make_ca("Test Root", path_length=1)
    intermediate = make_ca("Test PEC Intermediate", issuer=root)
    signer = make_signer(intermediate)
    assert chain(signer, pool=[intermediate], anchors=[root]).trusted
    missing = chain(signer, anchors=[root])
    assert not missing.trusted and "no trust anchor issued" in missing.reason


def test_a_self_made_provider_certificate_is_not_trusted() -> None:
    # Anyone can write "Posta Certificata ARUBA PEC" into a certificate of their own CA.
    genuine_ca, forger_ca = make_ca(), make_ca()  # same name, other key
    verdict = chain(make_signer(forger_ca), pool=[forger_ca], anchors=[genuine_ca])
    assert not verdict.trusted
    assert "is not signed by" in verdict.reason


def test_validity_is_judged_at_the_signing_time_not_today() -> None:
    ca = make_ca(not_before=dt.datetime(2012, 1, 1, tzinfo=UTC), days=6 * 365)
    signer = make_signer(ca, not_before=dt.datetime(2013, 1, 1, tzinfo=UTC), days=3 * 365)
    in_2014 = dt.datetime(2014, 11, 14, 17, 26, tzinfo=UTC)
    assert chain(signer, anchors=[ca], at=in_2014).trusted  # expired since, as the samples
    expired = chain(signer, anchors=[ca], at=AT)
    assert not expired.trusted and "was not valid at the signing time" in expired.reason
    before = chain(signer, anchors=[ca], at=dt.datetime(2012, 6, 1, tzinfo=UTC))
    assert not before.trusted


def test_an_expired_anchor_does_not_cover_later_signatures() -> None:
    ca = make_ca(not_before=dt.datetime(2010, 1, 1, tzinfo=UTC), days=365 * 5)
    signer = make_signer(ca, not_before=dt.datetime(2014, 1, 1, tzinfo=UTC), days=365 * 20)
    verdict = chain(signer, anchors=[ca], at=AT)
    assert not verdict.trusted and "trust anchor" in verdict.reason


def test_a_signing_time_in_the_future_is_not_believed() -> None:
    ca = make_ca()
    verdict = chain(make_signer(ca), anchors=[ca], at=NOW + dt.timedelta(days=30))
    assert not verdict.trusted and "in the future" in verdict.reason


def test_a_leaf_certificate_cannot_act_as_a_ca() -> None:
    ca = make_ca()
    provider = make_signer(ca)
    sub = make_signer(provider, email="posta-certificata@forger.example")  # "issued" by a leaf
    assert not chain(sub, pool=[provider], anchors=[ca]).trusted


def test_path_length_is_enforced() -> None:
    root = make_ca("Test Root", path_length=0)
    intermediate = make_ca("Test PEC Intermediate", issuer=root)
    verdict = chain(make_signer(intermediate), pool=[intermediate], anchors=[root])
    assert not verdict.trusted and "allows 0 CAs below it" in verdict.reason


def test_a_signer_for_another_purpose_is_refused() -> None:
    ca_cert, ca_key = make_ca()
    key = ec.generate_private_key(ec.SECP256R1())
    tls_only = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "www")]))
                .issuer_name(ca_cert.subject).public_key(key.public_key())
                .serial_number(7).not_valid_before(dt.datetime(2010, 1, 1, tzinfo=UTC))
                .not_valid_after(dt.datetime(2040, 1, 1, tzinfo=UTC))
                .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), False)
                .sign(ca_key, hashes.SHA256()))
    verdict = chain((tls_only, key), anchors=[(ca_cert, ca_key)])
    assert not verdict.trusted and "e-mail protection" in verdict.reason


def test_name_constraints_of_the_pec_ca_bind_providers_to_their_domains() -> None:
    # As AgID CA1 does: permitted rfc822 domains and organisations of the listed providers.
    allowed = x509.NameConstraints(
        permitted_subtrees=[x509.RFC822Name("pec.aruba.it"),
                            x509.DirectoryName(x509.Name([
                                x509.NameAttribute(x509.NameOID.COUNTRY_NAME, "IT"),
                                x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME,
                                                   "Test PEC Provider S.p.A.")]))],
        excluded_subtrees=None)
    ca = make_ca(constraints=allowed)
    assert chain(make_signer(ca), anchors=[ca]).trusted
    outside = chain(make_signer(ca, email="posta-certificata@forger.example"), anchors=[ca])
    assert not outside.trusted and "outside its permitted e-mail domains" in outside.reason
    assert name_constraint_problem(make_signer(ca)[0], allowed) is None


def test_a_pinned_provider_certificate_is_an_anchor_itself() -> None:
    signer = make_signer(make_ca())
    assert chain(signer, anchors=[signer]).trusted


def test_sha1_signed_certificates_still_verify() -> None:
    # DigitPA CA1 signed Aruba's 2014 certificate with SHA-1 (cryptography's own
    # verify_directly_issued_by refuses it, and can no longer make such a certificate).
    from email import message_from_bytes

    from connector.pec.cms import parse_signed_data

    raw = pec_sample("aruba-accettazione-2014-01.eml").read_bytes()
    [p7s] = [p for p in message_from_bytes(raw).walk() if p.get_filename() == "smime.p7s"]
    provider, digitpa = (x509.load_der_x509_certificate(der) for der in
                         parse_signed_data(p7s.get_payload(decode=True)).certificates)
    assert provider.signature_hash_algorithm.name == "sha1"
    assert signed_by(provider, digitpa)
    assert not signed_by(digitpa, provider)
    assert not signed_by(provider, make_ca()[0])


# -- the real samples and the shipped anchors -----------------------------------------------------

REAL = {"aruba-accettazione-2014-01.eml": "DigitPA CA1",
        "aruba-posta-certificata-2014-01.eml": "DigitPA CA1",
        "sogei-sdi-posta-certificata-invio-file-2018.eml": "AgID CA1"}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_provider_signatures_chain_to_the_shipped_agid_anchors(name: str) -> None:
    pec = analyze_pec(pec_sample(name).read_bytes())
    assert pec.signature.status is SignatureStatus.VALID, pec.signature.detail
    assert pec.signature.is_valid
    assert REAL[name] in pec.signature.detail
    assert pec.signature.trust_anchor is not None
    assert pec.signature.trust_anchor.startswith("shipped:")


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_signatures_are_intact_but_untrusted_without_the_agid_anchors(name: str) -> None:
    other = store_of(make_ca()[0])
    pec = analyze_pec(pec_sample(name).read_bytes(), trust=other)
    assert pec.signature.status is SignatureStatus.UNTRUSTED
    assert pec.signature.is_intact and not pec.signature.is_valid


def test_shipped_anchors_are_the_pec_cas_with_their_sources_noted() -> None:
    store = shipped_trust_store()
    subjects = {a.subject for a in store.anchors}
    assert any("CN=AgID CA1" in s for s in subjects)
    assert any("CN=DigitPA CA1" in s for s in subjects)
    assert not any("Root" in s for s in subjects)  # public roots certify far more than PEC
    readme = (Path(__file__).parent.parent / "connector" / "pec" / "trust_anchors" /
              "README.md").read_text()
    for anchor in store.anchors:
        name = anchor.source.removeprefix("shipped:")
        assert f"`{name}`" in readme and anchor.sha256 in readme


def test_a_signature_made_by_a_trusted_test_provider_is_valid() -> None:
    circuit = make_circuit()
    content = signed_content()
    from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

    cert, key = circuit.provider
    der = (pkcs7.PKCS7SignatureBuilder().set_data(content).add_signer(cert, key, hashes.SHA256())
           .sign(Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature,
                                pkcs7.PKCS7Options.Binary]))
    message = envelope(content, der)
    trusted = analyze_pec(message, trust=store_of(circuit.ca[0]))
    assert trusted.signature.status is SignatureStatus.VALID, trusted.signature.detail
    assert b"Pratica 12" in DATICERT
    assert analyze_pec(message).signature.status is SignatureStatus.UNTRUSTED


# -- configuration and check ---------------------------------------------------------------------


def config_with(tmp_path: Path, pec: dict[str, object]):  # noqa: ANN201
    (tmp_path / "pw").write_text("secret")
    data = {"accounts": [{"name": "pec-inbox", "pec": True, "host": "127.0.0.1",
                          "username": "u", "password_file": str(tmp_path / "pw")}],
            "host": {"type": "dry-run"}, "pec": pec}
    return config_from_mapping(data, "bridge.yaml", tmp_path)


def test_trust_anchors_are_added_to_the_shipped_ones_or_replace_them(tmp_path: Path) -> None:
    ca = make_ca()
    (tmp_path / "ours.pem").write_bytes(pem(ca[0]))
    shipped = len(shipped_trust_store().anchors)
    added = config_with(tmp_path, {"trust_anchors": ["ours.pem"]})
    assert len(added.pec_trust.anchors) == shipped + 1
    assert added.accounts[0].pec_trust is added.pec_trust
    replaced = config_with(tmp_path, {"trust_anchors": [str(tmp_path)],
                                      "shipped_trust_anchors": False})
    assert [a.subject for a in replaced.pec_trust.anchors] == [ca[0].subject.rfc4514_string()]
    assert config_with(tmp_path, {}).pec_trust is shipped_trust_store()


@pytest.mark.parametrize("pec, message", [
    ({"trust_anchors": ["missing.pem"]}, "no such file"),
    ({"trust_anchors": ["junk.pem"]}, "not a PEM or DER certificate"),
    ({"shipped_trust_anchors": False}, "at least one certificate"),
    ({"trust_anchor": ["x.pem"]}, "unknown key"),
])
def test_bad_trust_anchor_settings_are_refused(tmp_path: Path, pec: dict[str, object],
                                               message: str) -> None:
    (tmp_path / "junk.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    with pytest.raises(ConfigError) as info:
        config_with(tmp_path, pec)
    assert message in str(info.value)
    assert "pec." in (info.value.key or "")


def test_load_trust_store_reads_files_and_folders(tmp_path: Path) -> None:
    first, second = make_ca("First"), make_ca("Second")
    (tmp_path / "a.pem").write_bytes(pem(first[0]) + pem(second[0]))
    store = load_trust_store([tmp_path / "a.pem"], include_shipped=False)
    assert len(store.anchors) == 2 and str(tmp_path / "a.pem") in store.description


def test_describe_store_lists_each_anchor_with_its_expiry() -> None:
    lines = describe_store(shipped_trust_store(), now=dt.datetime(2026, 12, 2, tzinfo=UTC))
    assert lines[0].startswith("PEC trust store: shipped AgID/DigitPA PEC CAs")
    digitpa = [line for line in lines if "DigitPA CA1" in line]
    assert digitpa and "EXPIRED" in digitpa[0] and "2018-01-14" in digitpa[0]
    assert any("AgID CA1" in line and "expires 2030-09-22" in line for line in lines)


def test_check_reports_the_trust_store_in_use(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("secret")
    config = tmp_path / "bridge.yaml"
    config.write_text(f"""
accounts:
  - name: pec-inbox
    pec: true
    host: 127.0.0.1
    port: 9
    security: none
    username: u
    password_file: {tmp_path / "pw"}
    timeout: 1
host: {{type: dry-run}}
""")
    code, out = run_cli("--config", str(config), "check")
    assert "PEC trust store: shipped AgID/DigitPA PEC CAs" in out, out
    assert "DigitPA CA1" in out and "EXPIRED" in out and "expires 2030" in out
