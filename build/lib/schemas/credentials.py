"""The one credential of 一证办电: 统一社会信用代码 (firms) or 居民身份证号 (persons).

Validated with python-stdnum (check characters included), normalised (upper
case, no spaces) and split into the parts the rules need.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field
from stdnum.cn import ric, uscc
from stdnum.exceptions import (
    InvalidChecksum,
    InvalidComponent,
    InvalidFormat,
    InvalidLength,
    ValidationError,
)


class CredentialType(StrEnum):
    USCC = "uscc"  # 统一社会信用代码, GB 32100-2015
    RESIDENT_ID = "resident_id"  # 居民身份证号码, GB 11643-1999


#: GB 32100 entity type under registering authority 9 (market regulation).
USCC_ENTITY_TYPES = {"1": "enterprise", "2": "individual_business", "3": "farmers_cooperative"}


class CredentialParts(BaseModel):
    """What a credential says about its holder."""

    model_config = ConfigDict(frozen=True)

    division: str = Field(description="administrative division code (6 digits)")
    registering_authority: str | None = Field(None, description="USCC: registering authority")
    entity_type: str | None = Field(None, description="USCC: enterprise, individual_business, …")
    birth_date: date | None = Field(None, description="resident ID: date of birth")


def _reason(exc: ValidationError) -> str:
    if isinstance(exc, InvalidChecksum):
        return "wrong check character"
    if isinstance(exc, InvalidLength):
        return "must be 18 characters"
    if isinstance(exc, InvalidComponent):
        return "invalid component (division or birth date)"
    if isinstance(exc, InvalidFormat):
        return "invalid characters"
    return "invalid"


def normalise_credential(credential_type: CredentialType, number: str) -> str:
    """The normalised credential, or ``ValueError`` with a reason a person can act on."""
    module = uscc if credential_type is CredentialType.USCC else ric
    try:
        return str(module.validate(number)).upper()
    except ValidationError as exc:
        raise ValueError(f"{credential_type.value}: {_reason(exc)}") from exc


def credential_parts(credential_type: CredentialType, number: str) -> CredentialParts:
    """The parts of a credential already validated by ``normalise_credential``."""
    if credential_type is CredentialType.USCC:
        authority, kind = number[0], number[1]
        entity = USCC_ENTITY_TYPES.get(kind, "other") if authority == "9" else "other"
        return CredentialParts(
            division=number[2:8], registering_authority=authority, entity_type=entity
        )
    return CredentialParts(division=number[:6], birth_date=ric.get_birth_date(number))
