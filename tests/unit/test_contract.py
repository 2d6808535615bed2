"""The OpenAPI document states what the API enforces (formats, enums, bands, statuses)."""

from __future__ import annotations

from typing import Any, get_args

from gateway.api.app import create_app
from gateway.settings import Settings
from schemas.applications import CAPACITY_KVA, SHANGHAI_DISTRICTS, DistrictCode

METHODS = ("get", "post", "put", "patch", "delete")


def document() -> dict[str, Any]:
    schema: dict[str, Any] = create_app(Settings()).openapi()
    return schema


def test_districts_are_an_enum_of_exactly_the_district_table() -> None:
    assert set(get_args(DistrictCode)) == set(SHANGHAI_DISTRICTS)
    site = document()["components"]["schemas"]["Site"]
    assert set(site["properties"]["district_code"]["enum"]) == set(SHANGHAI_DISTRICTS)


def test_capacity_bands_are_a_union_tagged_by_voltage_level() -> None:
    components = document()["components"]["schemas"]
    request = components["ApplicationRequest"]["properties"]["request"]
    mapping = request["discriminator"]["mapping"]
    assert request["discriminator"]["propertyName"] == "voltage_level"
    assert set(mapping) == set(CAPACITY_KVA)
    for level, ref in mapping.items():
        capacity = components[ref.rsplit("/", 1)[1]]["properties"]["capacity_kva"]
        assert (capacity["minimum"], capacity["maximum"]) == CAPACITY_KVA[level]


def test_codes_and_text_carry_their_patterns() -> None:
    components = document()["components"]["schemas"]
    assert "pattern" in components["ApplicationRequest"]["properties"]["project_code"]["anyOf"][0]
    assert "pattern" in components["Applicant"]["properties"]["credential_no"]
    address = components["Site"]["properties"]["address"]
    assert address["maxLength"] == 200 and "\\x00" in address["pattern"]


def test_every_operation_documents_the_statuses_it_can_answer() -> None:
    for path, item in document()["paths"].items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            statuses = set(operation["responses"])
            if path.startswith("/api/"):
                assert {"401", "403", "429", "503"} <= statuses, (method, path)
                assert "Retry-After" in operation["responses"]["429"]["headers"]
            if "requestBody" in operation:
                assert {"400", "413", "415", "422"} <= statuses, (method, path)
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    assert list(response["content"]) == ["application/problem+json"]
