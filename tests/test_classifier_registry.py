"""The classifier registry is honest: one name per classifier, switches derived from it."""

from __future__ import annotations

import importlib

import pytest

from connector.errors import ConfigError
from connector.filters.classifiers import AFTER_FILTERS, BEFORE_FILTERS, NAMES
from connector.filters.controls import canonical_control
from connector.filters.settings import FilterSettings


@pytest.mark.parametrize("classifier", BEFORE_FILTERS + AFTER_FILTERS,
                         ids=lambda c: c.name)
def test_module_class_and_name_say_the_same_word(classifier):
    module = type(classifier).__module__.rsplit(".", 1)[1]
    assert module == classifier.name
    words = "".join(w.capitalize() for w in classifier.name.split("_"))
    assert type(classifier).__name__ == f"{words}Classifier"
    # the module holds exactly this class under that name
    assert getattr(importlib.import_module(type(classifier).__module__),
                   type(classifier).__name__) is type(classifier)


@pytest.mark.parametrize("classifier", BEFORE_FILTERS + AFTER_FILTERS,
                         ids=lambda c: c.name)
def test_every_declared_control_is_in_the_vocabulary(classifier):
    for control in classifier.sets:
        assert canonical_control(control) == control


def test_every_registered_classifier_has_a_switch_and_nothing_else_does():
    assert len(set(NAMES)) == len(NAMES)
    for name in NAMES:
        settings = FilterSettings.from_mapping({"classifiers": {name: False}}, path="c.yaml",
                                               key="filters")
        assert not settings.classifiers.enabled(name)
        assert all(settings.classifiers.enabled(n) for n in NAMES if n != name)
    with pytest.raises(ConfigError, match="did you mean 'commands'"):
        FilterSettings.from_mapping({"classifiers": {"command": False}}, path="c.yaml",
                                    key="filters")
