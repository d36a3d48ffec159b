"""The examples in the pure modules' docstrings are tests too."""

import doctest
import importlib

import pytest

MODULES = ["studio.config", "studio.conversations", "studio.costs", "studio.presets",
           "studio.router", "studio.workflows", "studio.gpu_policy", "studio.hygiene"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests_pass(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
