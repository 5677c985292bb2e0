"""Decide stage: new ticket, follow-up, internal note or ignore (pure logic)."""

from connector.decide.decision import Action, Decider, Decision, FilterVerdict, ThreadLookup
from connector.decide.subject import clean_subject, ticket_refs

__all__ = ["Action", "Decider", "Decision", "FilterVerdict", "ThreadLookup", "clean_subject",
           "ticket_refs"]
