"""Each shipped example filter file, fed real-looking mail (tests/data/filters/*.eml) through
the path ``run`` takes (connector.understand: PEC is unwrapped before the filters run)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connector.config import AccountConfig, HostConfig
from connector.filters import CONTROLS, FilterSettings, load_chain
from connector.filters.loader import load_text
from connector.service.filtering import StoreLookups
from connector.store.sqlite import SQLiteStore
from connector.understand import Rules, Understanding, understand

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "filters"
DATA = Path(__file__).parent / "data" / "filters"


ACCOUNT = AccountConfig(name="support", protocol="imap", host="127.0.0.1", port=143,
                        security="none", username="support@example.com", password="x")


def lookups() -> StoreLookups:
    """An empty ledger and no helpdesk: nothing is known."""
    return StoreLookups(SQLiteStore(":memory:"), None)


def understood(filename: str, eml: str) -> Understanding:
    chain = load_text((SHIPPED / filename).read_text(encoding="utf-8"), filename)
    rules = Rules(chain, {"support": FilterSettings()},
                  HostConfig(type="dry-run", groups={"PEC": 5, "Billing": 6, "Sales": 7}))
    return understand((DATA / eml).read_bytes(), ACCOUNT, rules, lookups())


def run_file(filename: str, eml: str):
    return understood(filename, eml).outcome


def fired(outcome) -> list[str]:
    return [s["name"] for s in outcome.trace["steps"] if s["stage"] == "filter" and s["matched"]]


def test_all_shipped_files_load_together():
    chain = load_chain([SHIPPED])
    assert [Path(f).name for f in chain.files] == [
        "10-route-by-recipient.yaml",
        "20-vip-priority.yaml",
        "30-ignore-newsletter.yaml",
        "40-tag-attachments.yaml",
        "50-pec-on-ordinary-mailbox.yaml",
    ]
    assert all(f.description or f.name.startswith("tag-") for f in chain.filters)


def test_route_by_recipient_billing():
    outcome = run_file("10-route-by-recipient.yaml", "route_billing.eml")
    assert fired(outcome) == ["route-billing"]
    assert outcome.control("X-OTOBO-Queue") == "Billing"
    assert outcome.add_tags == ("billing",)


def test_route_by_recipient_sales_quote_in_german():
    outcome = run_file("10-route-by-recipient.yaml", "route_sales_quote.eml")
    assert fired(outcome) == ["route-sales-by-subject"]
    assert outcome.control("X-OTOBO-Queue") == "Sales"


def test_route_by_recipient_leaves_other_mail_alone():
    outcome = run_file("10-route-by-recipient.yaml", "vip_sender.eml")
    assert fired(outcome) == []
    assert outcome.control("X-OTOBO-Queue") is None


def test_vip_priority():
    outcome = run_file("20-vip-priority.yaml", "vip_sender.eml")
    assert fired(outcome) == ["vip-sender"]
    assert outcome.control("X-OTOBO-Priority") == "urgent"
    assert outcome.control("X-OTOBO-FollowUp-Priority") == "urgent"
    assert outcome.add_tags == ("vip",)
    # The VIP domain in a display name or another header does not count.
    assert fired(run_file("20-vip-priority.yaml", "route_billing.eml")) == []


def test_ignore_newsletter():
    outcome = run_file("30-ignore-newsletter.yaml", "newsletter.eml")
    assert fired(outcome) == ["ignore-vendor-newsletter"]
    assert outcome.ignored is True
    assert fired(run_file("30-ignore-newsletter.yaml", "route_billing.eml")) == []


def test_tag_attachments_counts_real_files_not_inline_logos():
    outcome = run_file("40-tag-attachments.yaml", "attachment_invoice.eml")
    assert fired(outcome) == ["tag-has-attachment", "tag-invoice-pdf"]
    assert outcome.control("X-OTOBO-AttachmentCount") == "1"
    assert outcome.add_tags == ("has-attachment", "invoice-pdf")
    assert fired(run_file("40-tag-attachments.yaml", "route_billing.eml")) == []


def test_pec_envelope_on_ordinary_mailbox():
    understanding = understood("50-pec-on-ordinary-mailbox.yaml", "pec_envelope.eml")
    outcome = understanding.outcome
    assert fired(outcome) == ["pec-envelope-on-ordinary-mailbox"]
    assert outcome.control("X-OTOBO-Queue") == "PEC"
    assert outcome.add_tags == ("pec", "pec-envelope")
    decision = understanding.decision
    # The ticket shows the certified original: its subject, its sender.
    assert decision.subject == "Richiesta documentazione contratto 2024/15"
    assert understanding.trace["decision"]["host_fields"]["group_id"] == 5
    assert {"pec", "pec-envelope", "pec_connector"} <= set(decision.tags)
    assert decision.requester is not None
    assert not decision.requester.email.startswith("posta-certificata@")


def test_pec_anomaly_on_ordinary_mailbox():
    outcome = run_file("50-pec-on-ordinary-mailbox.yaml", "pec_anomaly.eml")
    assert fired(outcome) == ["pec-anomaly-on-ordinary-mailbox"]
    assert outcome.add_tags == ("pec", "pec-anomaly")
    # An ordinary mail mentioning PEC is not an envelope.
    assert fired(run_file("50-pec-on-ordinary-mailbox.yaml", "route_billing.eml")) == []


@pytest.mark.parametrize("spec", CONTROLS, ids=lambda spec: spec.name)
def test_readme_documents_every_control(spec):
    readme = (SHIPPED / "README.md").read_text(encoding="utf-8")
    name = spec.name
    if name.startswith("X-OTOBO-FollowUp-"):
        assert "X-OTOBO-FollowUp-<field>" in readme
        return
    suffix = name.split("-", 2)[2]
    assert re.search(rf"`(X-OTOBO-|X-Bridge-)?-?{re.escape(suffix)}`", readme) or (
        f"`{name}`" in readme
    ), name
