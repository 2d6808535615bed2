"""The 一证办电 rules (``schemas/dossier.py``) without a session, a platform or a socket."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.applications import (
    CAPACITY_KVA,
    Applicant,
    ApplicationRequest,
    EvidenceKind,
    Procedure,
    Reason,
    field_path,
)
from schemas.dossier import (
    EVIDENCE_KINDS,
    check_case_rules,
    procedures,
    record_of,
    required_evidence,
    review,
    subject_of,
    time_limit_days,
)
from schemas.errors import InvalidInput
from schemas.evidence import (
    ApprovalType,
    BusinessLicence,
    ProjectApproval,
    ProjectStatus,
    RegistrationStatus,
)

TODAY = date(2025, 3, 14)
FIRM = "91310115MA1HW74707"
OTHER_FIRM = "91310104MA1GK3350C"
RESIDENT = "310104198001010017"
CODE = "2020-310115-44-02-000077"
NAME = "上海临港绿能储能科技有限公司"

LICENCE = BusinessLicence(
    uscc=FIRM,
    name=NAME,
    legal_representative="周建华",
    address="上海市浦东新区新杨公路1800弄2号",
    registration_status=RegistrationStatus.ACTIVE,
    licence_no=f"YYZZ{FIRM}",
    issuing_authority="上海市市场监督管理局",
    issued_on=date(2021, 3, 9),
    valid_from=date(2019, 8, 16),
    valid_to=None,
)
PROJECT = ProjectApproval(
    project_code=CODE,
    name="临港35千伏用户变电站及储能电站项目",
    owner_uscc=FIRM,
    owner_name=NAME,
    approval_type=ApprovalType.AUTHORISATION,
    document_no="沪发改能源〔2020〕77号",
    issuing_authority="上海市发展和改革委员会",
    approved_on=date(2020, 6, 18),
    status=ProjectStatus.VALID,
)
FIRM_APPLICANT = Applicant(credential_type="uscc", credential_no=FIRM)


def request(
    *,
    credential: str = FIRM,
    level: str = "10kV",
    business: str = "new_connection",
    capacity: float = 630,
    project_code: str | None = None,
) -> ApplicationRequest:
    return ApplicationRequest.model_validate(
        {
            "applicant": {
                "credential_type": "resident_id" if credential == RESIDENT else "uscc",
                "credential_no": credential,
            },
            "site": {"address": "上海市浦东新区环湖西二路888号", "district_code": "310115"},
            "request": {
                "business_type": business,
                "voltage_level": level,
                "capacity_kva": capacity,
            },
            "project_code": project_code,
        }
    )


def reviewed(
    licence: BusinessLicence | None = LICENCE,
    project: ProjectApproval | None = None,
    missing: tuple[EvidenceKind, ...] = (),
    applicant: Applicant = FIRM_APPLICANT,
) -> list[Reason]:
    records: dict[EvidenceKind, Any] = {}
    if licence is not None:
        records[EvidenceKind.LICENCE] = licence
    if project is not None:
        records[EvidenceKind.PROJECT] = project
    return review(applicant, records, missing, today=TODAY)


# --- every rejection code ------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "code", "evidence", "message"),
    [
        (
            {"licence": None, "missing": (EvidenceKind.LICENCE,)},
            "licence_not_found",
            EvidenceKind.LICENCE,
            f"电子证照库中未找到统一社会信用代码 {FIRM} 的营业执照",
        ),
        (
            {"licence": LICENCE.model_copy(update={"registration_status": "revoked"})},
            "licence_not_active",
            EvidenceKind.LICENCE,
            "营业执照登记状态为“吊销”，主体不在存续状态，不能受理",
        ),
        (
            {"licence": LICENCE.model_copy(update={"registration_status": "cancelled"})},
            "licence_not_active",
            EvidenceKind.LICENCE,
            "营业执照登记状态为“注销”，主体不在存续状态，不能受理",
        ),
        (
            {"licence": LICENCE.model_copy(update={"registration_status": "moved_out"})},
            "licence_not_active",
            EvidenceKind.LICENCE,
            "营业执照登记状态为“迁出”，主体不在存续状态，不能受理",
        ),
        (
            {"licence": LICENCE.model_copy(update={"valid_to": date(2025, 3, 13)})},
            "licence_expired",
            EvidenceKind.LICENCE,
            "营业执照营业期限已于 2025-03-13 届满",
        ),
        (
            {"project": None, "missing": (EvidenceKind.PROJECT,)},
            "project_not_found",
            EvidenceKind.PROJECT,
            "投资项目在线审批监管平台中未找到该项目代码的批文",
        ),
        (
            {"project": PROJECT.model_copy(update={"status": ProjectStatus.REVOKED})},
            "project_revoked",
            EvidenceKind.PROJECT,
            f"项目 {CODE} 的批文（沪发改能源〔2020〕77号）已撤销",
        ),
        (
            {"project": PROJECT.model_copy(update={"owner_uscc": OTHER_FIRM})},
            "project_owner_mismatch",
            EvidenceKind.PROJECT,
            f"项目单位统一社会信用代码 {OTHER_FIRM} 与申请人 {FIRM} 不一致",
        ),
        (
            {"project": PROJECT.model_copy(update={"owner_name": "上海临港绿能科技有限公司"})},
            "name_mismatch",
            EvidenceKind.PROJECT,
            f"项目单位名称“上海临港绿能科技有限公司”与营业执照名称“{NAME}”不一致",
        ),
    ],
)
def test_each_rejection_code_has_its_clerk_message(
    case: dict[str, Any], code: str, evidence: EvidenceKind, message: str
) -> None:
    assert reviewed(**case) == [Reason(code=code, message=message, evidence=evidence)]


def test_the_table_above_names_every_rejection_code_the_rules_have() -> None:
    codes = {f"{kind.value}_not_found" for kind in EVIDENCE_KINDS} | {
        code for rule in EVIDENCE_KINDS.values() for code in rule.checks
    }

    assert codes == {
        "licence_not_found",
        "licence_not_active",
        "licence_expired",
        "project_not_found",
        "project_revoked",
        "project_owner_mismatch",
        "name_mismatch",
    }


def test_a_dossier_with_sound_evidence_has_no_reason() -> None:
    assert reviewed(LICENCE, PROJECT) == []
    assert reviewed(LICENCE) == []


@pytest.mark.parametrize(
    ("valid_to", "expired"),
    [
        (None, False),  # 长期
        (date(2025, 3, 15), False),
        (TODAY, False),  # the last day of the term still holds
        (date(2025, 3, 13), True),
    ],
)
def test_a_licence_expires_the_day_after_its_term(valid_to: date | None, expired: bool) -> None:
    codes = [r.code for r in reviewed(LICENCE.model_copy(update={"valid_to": valid_to}))]

    assert codes == (["licence_expired"] if expired else [])


@pytest.mark.parametrize(
    ("owner_name", "licence", "owner_uscc", "codes"),
    [
        (NAME, LICENCE, FIRM, []),
        (None, LICENCE, FIRM, []),  # the platform gives no name: nothing to compare
        ("另一家公司", None, FIRM, []),  # no licence (a resident's project): nothing to compare
        ("另一家公司", LICENCE, OTHER_FIRM, ["project_owner_mismatch"]),  # not both
        ("另一家公司", LICENCE, FIRM, ["name_mismatch"]),
    ],
)
def test_the_owner_name_is_compared_only_when_the_owner_is_the_applicant(
    owner_name: str | None,
    licence: BusinessLicence | None,
    owner_uscc: str,
    codes: list[str],
) -> None:
    project = PROJECT.model_copy(update={"owner_name": owner_name, "owner_uscc": owner_uscc})

    assert [r.code for r in reviewed(licence, project)] == codes


def test_every_failing_check_is_given_licence_first_missing_before_all() -> None:
    licence = LICENCE.model_copy(
        update={"registration_status": RegistrationStatus.REVOKED, "valid_to": date(2020, 1, 1)}
    )
    project = PROJECT.model_copy(update={"status": ProjectStatus.REVOKED, "owner_uscc": OTHER_FIRM})

    assert [r.code for r in reviewed(licence, project)] == [
        "licence_not_active",
        "licence_expired",
        "project_revoked",
        "project_owner_mismatch",
    ]
    assert [r.code for r in reviewed(None, project, (EvidenceKind.LICENCE,))] == [
        "licence_not_found",
        "project_revoked",
        "project_owner_mismatch",
    ]


def test_a_record_of_another_kind_is_not_checked_as_this_one() -> None:
    # A project approval filed under the licence kind cannot pass for a licence.
    assert review(FIRM_APPLICANT, {EvidenceKind.LICENCE: PROJECT}, today=TODAY) == []


# --- evidence kinds --------------------------------------------------------------


def test_every_evidence_kind_is_declared_once() -> None:
    assert list(EVIDENCE_KINDS) == list(EvidenceKind)
    assert all(rule.kind is kind for kind, rule in EVIDENCE_KINDS.items())


@pytest.mark.parametrize(
    ("credential", "project_code", "kinds"),
    [
        (FIRM, None, [EvidenceKind.LICENCE]),
        (FIRM, CODE, [EvidenceKind.LICENCE, EvidenceKind.PROJECT]),
        (RESIDENT, None, []),
        (RESIDENT, CODE, [EvidenceKind.PROJECT]),
    ],
)
def test_required_evidence_and_its_subjects(
    credential: str, project_code: str | None, kinds: list[EvidenceKind]
) -> None:
    level = "0.4kV"
    asked = request(credential=credential, level=level, capacity=16, project_code=project_code)

    assert required_evidence(asked) == kinds
    subjects = {EvidenceKind.LICENCE: FIRM, EvidenceKind.PROJECT: CODE}
    assert {kind: subject_of(kind, asked) for kind in kinds} == {k: subjects[k] for k in kinds}


@pytest.mark.parametrize("record", [LICENCE, PROJECT], ids=["licence", "project"])
def test_a_stored_record_reads_back_as_its_model(
    record: BusinessLicence | ProjectApproval,
) -> None:
    kind = EvidenceKind.LICENCE if isinstance(record, BusinessLicence) else EvidenceKind.PROJECT

    assert record_of(kind, record.model_dump(mode="json")) == record


def test_provenance_of_each_kind() -> None:
    licence = EVIDENCE_KINDS[EvidenceKind.LICENCE].provenance(LICENCE)
    project = EVIDENCE_KINDS[EvidenceKind.PROJECT].provenance(PROJECT)

    assert (licence.document_no, licence.issued_on, licence.valid_to) == (
        f"YYZZ{FIRM}",
        date(2021, 3, 9),
        None,
    )
    assert (project.document_no, project.issued_on, project.valid_from, project.valid_to) == (
        "沪发改能源〔2020〕77号",
        date(2020, 6, 18),
        date(2020, 6, 18),
        None,
    )


# --- capacity bands ------------------------------------------------------------

BAND_EDGES = [
    (level, capacity, inside)
    for level, (low, high) in CAPACITY_KVA.items()
    for capacity, inside in [(low - 0.5, False), (low, True), (high, True), (high + 0.5, False)]
]


@pytest.mark.parametrize(("level", "capacity", "inside"), BAND_EDGES)
def test_each_capacity_band_is_inclusive_at_both_edges(
    level: str, capacity: float, inside: bool
) -> None:
    project_code = CODE if level in ("35kV", "110kV", "220kV") else None
    if inside:
        asked = request(level=level, capacity=capacity, project_code=project_code)
        assert asked.request.capacity_kva == capacity
        return
    with pytest.raises(ValidationError) as caught:
        request(level=level, capacity=capacity, project_code=project_code)
    [error] = caught.value.errors()
    assert field_path(error["loc"]) == "request.capacity_kva"
    low, high = CAPACITY_KVA[level]  # the band of the voltage level is in the schema
    assert f"{low if capacity < low else high:g}" in error["msg"]


def test_the_bands_are_the_published_ones() -> None:
    assert CAPACITY_KVA == {
        "0.4kV": (1, 160),
        "10kV": (50, 10_000),
        "35kV": (5_000, 40_000),
        "110kV": (20_000, 100_000),
        "220kV": (100_000, 500_000),
    }


def test_a_capacity_of_zero_is_refused_whatever_the_level() -> None:
    with pytest.raises(ValidationError) as caught:
        request(level="0.4kV", capacity=0)

    assert field_path(caught.value.errors()[0]["loc"]) == "request.capacity_kva"


# --- procedures and limits -----------------------------------------------------

LOW = [Procedure.ACCEPTANCE, Procedure.METERING_AND_CONNECTION]
HIGH_NEW = [
    Procedure.ACCEPTANCE,
    Procedure.SURVEY_AND_PLAN,
    Procedure.EXTERNAL_WORKS,
    Procedure.METERING_AND_CONNECTION,
]
HIGH_INCREASE = [
    Procedure.ACCEPTANCE,
    Procedure.SURVEY_AND_PLAN,
    Procedure.METERING_AND_CONNECTION,
]


@pytest.mark.parametrize(
    ("level", "capacity", "business", "steps", "days"),
    [
        ("0.4kV", 100, "new_connection", LOW, 10),
        ("0.4kV", 100, "capacity_increase", LOW, 10),
        ("10kV", 630, "new_connection", HIGH_NEW, 60),
        ("10kV", 630, "capacity_increase", HIGH_INCREASE, 60),
        ("35kV", 12_000, "new_connection", HIGH_NEW, 150),
        ("35kV", 12_000, "capacity_increase", HIGH_INCREASE, 150),
        ("110kV", 50_000, "new_connection", HIGH_NEW, 150),
        ("110kV", 50_000, "capacity_increase", HIGH_INCREASE, 150),
        ("220kV", 200_000, "new_connection", HIGH_NEW, 150),
        ("220kV", 200_000, "capacity_increase", HIGH_INCREASE, 150),
    ],
)
def test_procedure_set_and_time_limit_of_each_level(
    level: str, capacity: float, business: str, steps: list[Procedure], days: int
) -> None:
    project_code = CODE if level in ("35kV", "110kV", "220kV") else None
    asked = request(level=level, capacity=capacity, business=business, project_code=project_code)

    assert procedures(asked) == steps
    assert time_limit_days(asked) == days


# --- who may apply where -------------------------------------------------------


@pytest.mark.parametrize(
    ("credential", "level", "capacity", "project_code", "field"),
    [
        (RESIDENT, "0.4kV", 16, None, None),
        (RESIDENT, "10kV", 630, None, "request.voltage_level"),
        (RESIDENT, "35kV", 12_000, CODE, "request.voltage_level"),
        (FIRM, "0.4kV", 100, None, None),
        (FIRM, "10kV", 630, None, None),
        (FIRM, "35kV", 12_000, None, "project_code"),
        (FIRM, "110kV", 50_000, None, "project_code"),
        (FIRM, "220kV", 200_000, None, "project_code"),
        (FIRM, "35kV", 12_000, CODE, None),
    ],
)
def test_who_may_apply_at_which_level(
    credential: str, level: str, capacity: float, project_code: str | None, field: str | None
) -> None:
    asked = request(
        credential=credential, level=level, capacity=capacity, project_code=project_code
    )

    if field is None:
        check_case_rules(asked)
        return
    with pytest.raises(InvalidInput) as caught:
        check_case_rules(asked)
    assert caught.value.field == field


def test_a_resident_is_reviewed_without_a_licence() -> None:
    resident = Applicant(credential_type="resident_id", credential_no=RESIDENT)

    assert review(resident, {}, today=TODAY) == []
    assert [r.code for r in reviewed(None, PROJECT, applicant=resident)] == [
        "project_owner_mismatch"
    ]
