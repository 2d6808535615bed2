"""The platforms of the connector: the one list, in the order the sandbox shows them.

Each entry is declared by its own folder (``adapters/<name>/platform.py``);
settings, bootstrap, the sandbox, the test fixtures and the callback routes
iterate this list. ``docs/adding-a-platform.md`` says how to add one.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from pydantic import BaseModel

from adapters.licence.platform import LICENCE
from adapters.marketing.platform import MARKETING
from adapters.permit.platform import PERMIT
from adapters.platform import Callback, Platform, SignedPlatformSettings
from adapters.project.platform import PROJECT
from adapters.ywtb.platform import YWTB

PLATFORMS: tuple[Platform[Any], ...] = (LICENCE, PROJECT, PERMIT, YWTB, MARKETING)

M = TypeVar("M", bound=BaseModel)


def filling(role: str) -> Platform[Any]:
    """The platform that fills ``role`` (a port of the core, a ``Container`` attribute)."""
    for platform in PLATFORMS:
        if platform.role == role:
            return platform
    raise LookupError(f"no platform fills {role}")


def calling_back() -> list[tuple[Platform[SignedPlatformSettings], Callback[Any]]]:
    """The platforms that call us back (signed, so their settings hold the callback key)."""
    found: list[tuple[Platform[SignedPlatformSettings], Callback[Any]]] = []
    for platform in PLATFORMS:
        if platform.callback is None:
            continue
        if not issubclass(platform.settings_model, SignedPlatformSettings):
            raise TypeError(f"{platform.name} calls back: its settings need the callback key")
        found.append((cast(Platform[SignedPlatformSettings], platform), platform.callback))
    return found


def callback_of(model: type[M]) -> Callback[M]:
    """The callback that carries ``model`` (one platform sends each kind)."""
    for _, callback in calling_back():
        if callback.model is model:
            return cast(Callback[M], callback)
    raise LookupError(f"no platform calls back with {model.__name__}")
