"""Every platform folder under ``adapters/`` is held to the shared contract.

A platform is a package ``adapters/<name>/``; its suite is a concrete subclass of
``contract_tests.base.PlatformContract``, named ``Test…`` (so pytest runs it), in
``contract_tests/<name>/``, for the platform its ``errors.py`` names.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import adapters
import contract_tests
from contract_tests.base import PlatformContract

ADAPTERS = Path(adapters.__file__).parent
SUITES = Path(contract_tests.__file__).parent


def platform_folders() -> list[str]:
    return sorted(
        path.name
        for path in ADAPTERS.iterdir()
        if path.is_dir() and (path / "__init__.py").is_file()
    )


def suites_in(folder: str) -> list[type[PlatformContract]]:
    """The concrete contract suites defined in ``contract_tests/<folder>/``."""
    found: list[type[PlatformContract]] = []
    package = f"contract_tests.{folder}"
    if not (SUITES / folder / "__init__.py").is_file():
        return found
    for info in pkgutil.iter_modules([str(SUITES / folder)], prefix=f"{package}."):
        module = importlib.import_module(info.name)
        found.extend(
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, PlatformContract)
            and cls.__module__ == module.__name__
            and not inspect.isabstract(cls)
        )
    return found


def test_the_platforms_are_the_five_known_ones() -> None:
    # A new folder is welcome; this line only says the walk below sees folders at all.
    assert {"licence", "marketing", "permit", "project", "ywtb"} <= set(platform_folders())


@pytest.mark.parametrize("folder", platform_folders())
def test_every_platform_folder_has_a_contract_suite(folder: str) -> None:
    suites = suites_in(folder)

    assert suites, (
        f"adapters/{folder}/ has no subclass of PlatformContract in contract_tests/{folder}/"
    )
    platform = importlib.import_module(f"adapters.{folder}.errors").PLATFORM
    for suite in suites:
        assert suite.__name__.startswith("Test"), f"pytest would not collect {suite.__name__}"
        assert suite.platform == platform
