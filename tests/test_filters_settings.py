"""FilterSettings.from_mapping: the documented YAML shape, typed errors with file and key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from connector.errors import ConfigError
from connector.filters import FilterSettings
from connector.filters.settings import ClassifierSwitches

README = Path(__file__).resolve().parent.parent / "filters" / "README.md"


def read(data, base=None):
    return FilterSettings.from_mapping(data, path="/etc/pmb/config.yaml", key="filters", base=base)


def test_defaults():
    settings = read(None)
    assert settings == FilterSettings()
    assert settings.sender_cap_per_day == 40
    assert settings.classifiers == ClassifierSwitches()
    assert all(settings.classifiers.enabled(n) for n in ("loop", "bounce", "keywords"))


def test_the_readme_snippet_is_valid_and_means_what_it_says():
    snippet = re.search(r"```yaml\n(filters:.*?)```", README.read_text(), re.DOTALL).group(1)
    settings = read(yaml.safe_load(snippet)["filters"])
    assert settings.filter_dirs == (Path("/etc/pmb/filters.d"),)
    assert settings.own_addresses == frozenset({"support@example.com"})
    assert settings.dispatch["support+sales@example.com"] == "Sales"
    assert settings.is_staff("Alice@Example.com")
    assert settings.is_staff("bob@staff.example.com")
    assert not settings.is_staff("bob@example.com")
    assert settings.keywords["outage"] == ("outage", "urgent")
    assert settings.regex_timeout_ms == 200 and settings.match_budget_ms == 2000


def test_account_block_overrides_the_global_one():
    base = read({"staff": ["@example.com"], "sender_cap_per_day": 10,
                 "classifiers": {"keywords": False}})
    account = read({"sender_cap_per_day": 0, "classifiers": {"bounce": False}}, base=base)
    assert account.staff == ("@example.com",)
    assert account.sender_cap_per_day == 0
    assert not account.classifiers.enabled("keywords")
    assert not account.classifiers.enabled("bounce")


def test_absolute_filter_dirs_stay_absolute(tmp_path):
    settings = read({"filter_dirs": [str(tmp_path), "local"]})
    assert settings.filter_dirs == (tmp_path, Path("/etc/pmb/local"))


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ({"filter_dir": ["x"]}, "filters.filter_dir", "unknown key (did you mean 'filter_dirs'?)"),
        ({"classifiers": {"bounces": True}}, "filters.classifiers.bounces",
         "unknown classifier (did you mean 'bounce'?)"),
        ({"classifiers": {"bounce": "yes"}}, "filters.classifiers.bounce", "must be true or false"),
        ({"sender_cap_per_day": -1}, "filters.sender_cap_per_day", "must be a whole number >= 0"),
        ({"regex_timeout_ms": 0}, "filters.regex_timeout_ms", "must be a whole number >= 1"),
        ({"own_addresses": ["not-an-address"]}, "filters.own_addresses",
         "'not-an-address' is not an e-mail address"),
        ({"staff": ["example.com"]}, "filters.staff",
         "'example.com' is neither an address nor an @domain"),
        ({"dispatch": {"billing@example.com": ""}}, "filters.dispatch.billing@example.com",
         "must be a queue/group name"),
        ({"dispatch": ["billing@example.com"]}, "filters.dispatch",
         "must be a mapping of addresses to queue names"),
        ({"keywords": {"invoice": ["two words"]}}, "filters.keywords.invoice",
         "tags cannot contain spaces or commas"),
        ({"list_mail_is_auto_reply": "no"}, "filters.list_mail_is_auto_reply",
         "must be true or false"),
    ],
)
def test_errors_name_file_and_key(data, key, message):
    with pytest.raises(ConfigError) as info:
        read(data)
    assert info.value.path == "/etc/pmb/config.yaml"
    assert info.value.key == key
    assert info.value.reason == message


def test_not_a_mapping():
    with pytest.raises(ConfigError, match="must be a mapping"):
        read(["x"])
