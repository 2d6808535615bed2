"""The boundaries the docstrings promise, checked by walking the source with ``ast``.

- ``gateway/`` imports no module of a platform folder (``adapters/<platform>/``):
  only ``adapters.ports``, ``adapters.registry`` and the shared adapter modules.
  Every import counts, at any depth (inside functions too).
- Kafka clients are constructed in ``gateway/bus.py`` only (its factories).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "gateway"
KAFKA_CLIENTS = {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient"}


def platform_folders() -> set[str]:
    return {
        path.name
        for path in (ROOT / "adapters").iterdir()
        if path.is_dir() and (path / "__init__.py").is_file()
    }


def modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports (line, dotted name); ``from a import b`` yields ``a.b``
    too, since ``b`` may be a module."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield node.lineno, module
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def platform_imports(path: Path, platforms: set[str]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for line, name in imported(path)
        if name.split(".")[0] == "adapters"
        and len(name.split(".")) > 1
        and name.split(".")[1] in platforms
    ]


def kafka_constructions(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in KAFKA_CLIENTS:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} constructs {name}")
    return found


def test_the_walk_sees_the_platforms_and_every_gateway_module() -> None:
    assert {"licence", "project", "permit", "ywtb", "marketing"} <= platform_folders()
    assert {"gateway.bootstrap", "gateway.api.flows", "gateway.cases"} <= {
        module_name(path) for path in modules(GATEWAY)
    }


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from adapters.permit.mapping import decision_from_callback", True),
        ("from adapters import ywtb", True),
        ("def f():\n    import adapters.licence.client", True),
        ("from adapters.ports import LicenceRegistry", False),
        ("from adapters.registry import PLATFORMS", False),
        ("from adapters import signing", False),
    ],
)
def test_the_walk_finds_a_platform_import_anywhere(
    tmp_path: Path, source: str, found: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    module = tmp_path / "gateway" / "example.py"
    module.parent.mkdir()
    module.write_text(source, encoding="utf-8")

    assert bool(platform_imports(module, {"licence", "permit", "ywtb"})) is found


def test_gateway_imports_no_platform_module() -> None:
    platforms = platform_folders()

    offending = [line for path in modules(GATEWAY) for line in platform_imports(path, platforms)]

    assert offending == []


def test_kafka_clients_are_constructed_in_the_bus_only() -> None:
    found = {
        line
        for folder in ("gateway", "adapters", "schemas")
        for path in modules(ROOT / folder)
        for line in kafka_constructions(path)
    }

    assert found
    assert {line.split(":")[0] for line in found} == {"gateway/bus.py"}
