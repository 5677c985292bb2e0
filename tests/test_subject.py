"""Subject cleanup and ticket references."""

from __future__ import annotations

import pytest

from connector.decide.subject import clean_subject, ticket_refs


@pytest.mark.parametrize(
    ("subject", "clean"),
    [
        ("Re: Printer broken", "Printer broken"),
        ("RE: AW: WG: Printer broken", "Printer broken"),
        ("Re[2]: Printer broken", "Printer broken"),
        ("Re : Printer broken", "Printer broken"),
        ("SV: VS: Fwd: Fw: TR: x", "x"),
        ("R: I: Rif: Inoltro: Fattura", "Fattura"),
        ("Odp: YNT: PD: Faktura", "Faktura"),
        ("Printer Re: broken", "Printer Re: broken"),
        ("Regarding: invoices", "Regarding: invoices"),
        ("Invoice: March", "Invoice: March"),
        ("  ", ""),
    ],
)
def test_clean_subject(subject: str, clean: str) -> None:
    assert clean_subject(subject) == clean


def test_ticket_refs_all_candidates_in_order() -> None:
    assert ticket_refs("Re: [#12] about [#7] and [#12]", r"\[#(\d+)\]") == ["12", "7"]
    assert ticket_refs("Ticket#2024 nothing", r"\[#(\d+)\]") == []
    assert ticket_refs("[Ticket#55] x", r"\[Ticket#(\d+)\]") == ["55"]
    # Ids are opaque text: a pattern may capture any id, an all-zero one names nothing.
    assert ticket_refs("[REQ-ab12] [#0] [REQ-ab12]", r"\[(?:REQ-|#)(\w+)\]") == ["ab12"]


def test_forward_prefixes_the_forward_classifier_knows_are_cleaned_too() -> None:
    # One list serves both stages: Portuguese "Enc:" and Italian "Inoltra:" included.
    assert clean_subject("Enc: Inoltra: I: Fattura 12") == "Fattura 12"
