"""The examples in the backend modules' docstrings are tests too: every module of studio/
outside ui/ that has one, found by walking the package, so a new module is never left out."""

import doctest
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import studio

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(studio.__path__, "studio.")
    if not info.name.startswith("studio.ui") and not info.ispkg
    and ">>>" in Path(importlib.util.find_spec(info.name).origin).read_text(encoding="utf-8"))


def test_doctests_found_in_the_pure_modules():
    assert {"studio.costs.pricing", "studio.chat.router", "studio.images.plans"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_doctests_pass(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
