"""Filter stage: between parse and decide. Pure logic; state comes through ``FilterLookups``.

Public API (everything else in the package is internal):

Configuration
    ``FilterSettings.from_mapping(data, *, path, key, base=None) -> FilterSettings``
        Reads the ``filters:`` block (global, or per account with ``base=`` the global one).
        Raises ``connector.errors.ConfigError(message, path=, key=)``. YAML shape in the class
        docstring and in filters/README.md.
    ``load_chain(dirs: Sequence[Path]) -> FilterChain``
        Loads ``*.yaml``/``*.yml`` of each directory (directories in order, files by name,
        filters in the order written). Validates everything first and raises
        ``FilterLoadError`` (a ``ConfigError``) whose ``errors`` is a list of
        ``file:line: message`` strings.
    ``FilterChain.host_errors(accepts) -> list[str]``
        ``accepts(control, literal_value_or_None) -> error_or_None`` is built by the config
        from the host mapping (Queue to a Zendesk group, DynamicField-X to a custom field...);
        returns ``file:line`` errors for values the host cannot take.

Running
    ``run_filters(message, *, account, trusted, chain, settings, lookups,
    evaluate_all=False) -> FilterOutcome``
        Raises ``FilterError`` (``stage`` = the classifier) when a classifier fails.
    ``FilterLookups`` (Protocol): ``is_own_message_id(mid) -> bool``,
        ``sender_count_on(address, day) -> int``, ``known_ticket_for(message_ids) -> str | None``.
        Message-IDs are bare (no angle brackets), as ``ParsedMessage`` holds them; addresses
        are lower-cased. ``NullLookups`` answers "nothing known".
    ``FilterOutcome``: ``controls`` (canonical name -> value), ``control_sources``,
        ``add_tags``, ``remove_tags``, ``stripped_headers``, ``classification``
        (``Classification`` with ``kind``: loop, storm, bounce, auto_reply, forwarded,
        command, and typed ``details``), ``warnings``, ``trace`` (JSON data),
        ``trace_json()``, ``ignored``, ``effective_message``, ``control(name)``.

Commands (wired by the CLI)
    ``filters_check(dirs, *, out=None, host_check=None) -> int``
    ``filters_test(raw, *, account, trusted, chain, settings, lookups, decide=None,
    as_json=False, out=None) -> int``

Vocabulary
    ``canonical_control(name) -> str | None`` and ``CONTROLS``: the X-OTOBO-* / X-Bridge-*
    control headers, defined once in :mod:`connector.filters.controls`.
"""

from connector.filters.chain import Filter, FilterChain, FilterLoadError, HostCheck
from connector.filters.commands import filters_check, filters_test
from connector.filters.controls import CONTROLS, canonical_control
from connector.filters.engine import run_filters
from connector.filters.loader import load_chain, load_text
from connector.filters.lookups import FilterLookups, NullLookups
from connector.filters.outcome import FilterError, FilterOutcome
from connector.filters.settings import ClassifierSwitches, FilterSettings
from connector.filters.verdicts import (
    AutoReplyDetails,
    BounceDetails,
    Classification,
    CommandDetails,
    ForwardDetails,
    Kind,
    LoopDetails,
    Strength,
)

__all__ = [
    "CONTROLS",
    "AutoReplyDetails",
    "BounceDetails",
    "Classification",
    "ClassifierSwitches",
    "CommandDetails",
    "Filter",
    "FilterChain",
    "FilterError",
    "FilterLoadError",
    "FilterLookups",
    "FilterOutcome",
    "FilterSettings",
    "ForwardDetails",
    "HostCheck",
    "Kind",
    "Strength",
    "LoopDetails",
    "NullLookups",
    "canonical_control",
    "filters_check",
    "filters_test",
    "load_chain",
    "load_text",
    "run_filters",
]
