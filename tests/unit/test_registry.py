"""The registry is the one list of platforms: exactly the folders under ``adapters/``,
each declared by its own folder, each filling one port of the ``Container``."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import Any, get_type_hints

import httpx
import pytest
from pydantic import SecretStr

import adapters.ports
from adapters.platform import Platform
from adapters.registry import PLATFORMS, calling_back
from adapters.resilience import CircuitBreaker
from gateway.api.flows import RECEIVERS, router
from gateway.bootstrap import Container
from gateway.settings import Settings
from tests.unit.test_boundaries import platform_folders

PORTS = {
    cls
    for _, cls in inspect.getmembers(adapters.ports, inspect.isclass)
    if cls.__module__ == adapters.ports.__name__
}
NAMES = [platform.name for platform in PLATFORMS]


def test_the_registry_lists_exactly_the_platform_folders() -> None:
    assert len(NAMES) == len(set(NAMES))
    assert set(NAMES) == platform_folders()


@pytest.mark.parametrize("platform", PLATFORMS, ids=NAMES)
def test_a_platform_is_declared_by_its_own_folder(platform: Platform[Any]) -> None:
    declared = importlib.import_module(f"adapters.{platform.name}.platform")
    errors = importlib.import_module(f"adapters.{platform.name}.errors")

    assert platform in vars(declared).values()
    assert platform.settings_model.__module__ == declared.__name__
    assert platform.name == errors.PLATFORM  # its breaker and its errors carry the same name


def test_each_port_of_the_container_is_filled_by_one_platform() -> None:
    hints = get_type_hints(Container)
    port_fields = {f.name for f in dataclasses.fields(Container) if hints[f.name] in PORTS}
    roles = [platform.role for platform in PLATFORMS]

    assert len(roles) == len(set(roles))
    assert set(roles) == port_fields


@pytest.mark.parametrize("platform", PLATFORMS, ids=NAMES)
async def test_a_platform_client_fills_its_port_with_its_breaker(platform: Platform[Any]) -> None:
    port = get_type_hints(Container)[platform.role]
    operations = [name for name, value in vars(port).items() if inspect.iscoroutinefunction(value)]
    breaker = CircuitBreaker(platform.name)

    async with httpx.AsyncClient() as http:
        client = platform.build_client(Settings(), http, breaker)

    assert operations
    for operation in operations:
        assert inspect.iscoroutinefunction(getattr(client, operation)), operation
    assert getattr(client, "breaker", None) is breaker


def test_settings_have_a_field_per_platform_read_from_its_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for platform in PLATFORMS:
        monkeypatch.setenv(f"YWTB_{platform.name.upper()}_URL", f"http://{platform.name}:1")

    settings = Settings()

    for platform in PLATFORMS:
        assert Settings.model_fields[platform.name].annotation is platform.settings_model
        assert platform.settings_of(settings).url == f"http://{platform.name}:1"


def test_production_refuses_every_placeholder_secret_of_every_platform() -> None:
    with pytest.raises(ValueError, match="placeholder secrets in production") as refused:
        Settings(environment="production")

    named = str(refused.value)
    for platform in PLATFORMS:
        secrets = [
            field
            for field, info in platform.settings_model.model_fields.items()
            if info.annotation is SecretStr
        ]
        assert secrets, f"{platform.name} has no secret"
        for field in secrets:
            assert f"{platform.name}.{field}" in named


def test_every_callback_has_a_route_and_a_receiver() -> None:
    routes = {route.path: route for route in router.routes if hasattr(route, "path")}

    assert {callback.path for _, callback in calling_back()} == {
        "/callbacks/permits",
        "/callbacks/ywtb/cases",
    }
    for _, callback in calling_back():
        assert callback.model in RECEIVERS
        assert getattr(routes[callback.path], "methods", None) == {"POST"}
