"""Each shipped example filter file, fed real-looking mail (tests/data/filters/*.eml)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connector.filters import CONTROLS, FilterSettings, NullLookups, load_chain, run_filters
from connector.filters.loader import load_text
from connector.mail.parse import parse_message

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "filters"
DATA = Path(__file__).parent / "data" / "filters"


def run_file(filename: str, eml: str):
    chain = load_text((SHIPPED / filename).read_text(encoding="utf-8"), filename)
    message = parse_message((DATA / eml).read_bytes())
    return run_filters(
        message,
        account="support",
        trusted=False,
        chain=chain,
        settings=FilterSettings(),
        lookups=NullLookups(),
    )


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
    outcome = run_file("50-pec-on-ordinary-mailbox.yaml", "pec_envelope.eml")
    assert fired(outcome) == ["pec-envelope-on-ordinary-mailbox"]
    assert outcome.control("X-OTOBO-Title") == "Richiesta documentazione contratto 2024/15"
    assert outcome.control("X-OTOBO-Queue") == "PEC"
    assert outcome.add_tags == ("pec", "pec-envelope")


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
