"""The sandbox seed file: the government side's data that the simulators serve.

Format (a public contract: ``ywtb sandbox --seed FILE`` reads it; the models below
are its only definition): a JSON object with the lists ``licences``
(``SeedLicence``, what the electronic licence library holds) and ``projects``
(``SeedProject``, what the investment project platform holds). Fields beyond the
required ones are optional; unknown keys (such as ``_comment``) are kept and
ignored. ``schemas/default_seed.json`` is the default, its scenarios listed in
its ``_comment``.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_SEED = Path(__file__).with_name("default_seed.json")


class SeedLicence(BaseModel):
    model_config = ConfigDict(extra="allow")

    uscc: str
    name: str
    legal_representative: str
    address: str
    status: Literal["存续", "在业", "吊销", "注销", "迁出"]
    valid_from: date
    valid_to: date | None = Field(None, description="None = 长期")
    licence_no: str | None = None
    issuing_authority: str | None = None
    issued_on: date | None = None


class SeedProject(BaseModel):
    model_config = ConfigDict(extra="allow")

    project_code: str
    name: str
    owner_uscc: str
    approval_type: Literal["审批", "核准", "备案"]
    document_no: str
    approved_on: date
    status: Literal["valid", "revoked"]
    issuing_authority: str | None = None
    owner_name: str | None = Field(
        None,
        description=(
            "项目单位名称 as the project platform holds it; default: the name on the "
            "owner's licence in the seed (left out when the seed has none)"
        ),
    )


class Seed(BaseModel):
    model_config = ConfigDict(extra="allow")

    licences: list[SeedLicence] = Field(default_factory=list)
    projects: list[SeedProject] = Field(default_factory=list)


def load_seed(path: Path | str | None = None) -> Seed:
    """Read a seed file; the default one ships with the package."""
    return Seed.model_validate(json.loads(Path(path or DEFAULT_SEED).read_text(encoding="utf-8")))
