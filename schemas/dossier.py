"""The 一证办电 rules as plain functions over the canonical models: no session, no I/O.

What a request needs and what its evidence must show:

- ``check_case_rules``: who may apply where (a resident at 0.4kV only; a project
  code at 35kV and above). The capacity band of each voltage level is checked
  when the request is read (``schemas.applications.CAPACITY_KVA``).
- ``required_evidence``, ``procedures``, ``time_limit_days``: the rule tables.
- ``review``: the cross-checks of the evidence, each failing one a ``Reason``
  with a code for systems and a message a clerk can act on.

Evidence is declared once per kind in ``EVIDENCE_KINDS`` (an ``EvidenceKindRule``:
when a request needs it, its subject, its source, how its record is read and
which checks apply); nothing else names the kinds one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from schemas.applications import (
    HIGH_VOLTAGE_FOR_PROJECT,
    Applicant,
    ApplicationRequest,
    EvidenceKind,
    Procedure,
    Reason,
)
from schemas.chinatime import CHINA_STANDARD_TIME
from schemas.credentials import CredentialType
from schemas.errors import InvalidInput
from schemas.evidence import (
    REGISTRATION_STATUS_WORDS,
    BusinessLicence,
    ProjectApproval,
    ProjectStatus,
    RegistrationStatus,
)

R = TypeVar("R", bound=BaseModel)

# --- the request -------------------------------------------------------------


def check_case_rules(request: ApplicationRequest) -> None:
    """Rules across fields; ``InvalidInput`` names the field to correct."""
    level = request.request.voltage_level
    if request.applicant.credential_type is CredentialType.RESIDENT_ID and level != "0.4kV":
        raise InvalidInput("request.voltage_level", "a resident connects at 0.4kV")
    if level in HIGH_VOLTAGE_FOR_PROJECT and not request.project_code:
        raise InvalidInput("project_code", f"required at {level} (35kV and above)")


def procedures(request: ApplicationRequest) -> list[Procedure]:
    """Procedure set: 2 at low voltage; 4 at high voltage (3 without external works).

    A new high-voltage connection needs external works (cable to the site);
    a capacity increase is done on the existing connection.
    """
    if request.request.voltage_level == "0.4kV":
        return [Procedure.ACCEPTANCE, Procedure.METERING_AND_CONNECTION]
    steps = [Procedure.ACCEPTANCE, Procedure.SURVEY_AND_PLAN]
    if request.request.business_type == "new_connection":
        steps.append(Procedure.EXTERNAL_WORKS)
    return [*steps, Procedure.METERING_AND_CONNECTION]


def time_limit_days(request: ApplicationRequest) -> int:
    """2020 time targets: low voltage ≤ 10 days, 10 kV ≤ 60, 35 kV and above ≤ 150."""
    level = request.request.voltage_level
    return 10 if level == "0.4kV" else 60 if level == "10kV" else 150


# --- the evidence kinds ------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """What a check may look at besides its own record."""

    applicant: Applicant
    records: Mapping[EvidenceKind, BaseModel]
    today: date

    def record(self, kind: EvidenceKind, model: type[R]) -> R | None:
        record = self.records.get(kind)
        return record if isinstance(record, model) else None


@dataclass(frozen=True)
class Provenance:
    """Where a record came from and until when it holds (the evidence store's columns)."""

    issuing_authority: str | None
    document_no: str | None
    issued_on: date | None
    valid_from: date | None
    valid_to: date | None


Check = Callable[[R, Facts], str | None]
"""A cross-check of a record: the clerk's message when it fails, None when it holds."""


@dataclass(frozen=True)
class EvidenceKindRule(Generic[R]):
    """One kind of evidence: when it is needed, about what, from where, and its checks."""

    kind: EvidenceKind
    model: type[R]
    """The canonical record; ``parse`` reads a stored one."""
    source_platform: str
    needed: Callable[[ApplicationRequest], bool]
    subject: Callable[[ApplicationRequest], str]
    """The uscc, project code … the record is about, from the request."""
    not_found: Callable[[Applicant], str]
    """The clerk's message when the platform holds no record (code ``<kind>_not_found``)."""
    provenance: Callable[[R], Provenance]
    checks: Mapping[str, Check[R]]
    """The rejection code of each check, in the order reasons are given."""

    def parse(self, fields: Mapping[str, Any]) -> R:
        return self.model.model_validate(fields)

    def review(self, record: BaseModel, facts: Facts) -> list[Reason]:
        if not isinstance(record, self.model):
            return []
        return [
            Reason(code=code, message=message, evidence=self.kind)
            for code, check in self.checks.items()
            if (message := check(record, facts)) is not None
        ]


def licence_not_active(licence: BusinessLicence, facts: Facts) -> str | None:
    if licence.registration_status is RegistrationStatus.ACTIVE:
        return None
    word = REGISTRATION_STATUS_WORDS[licence.registration_status]
    return f"营业执照登记状态为“{word}”，主体不在存续状态，不能受理"


def licence_expired(licence: BusinessLicence, facts: Facts) -> str | None:
    if licence.valid_to is None or licence.valid_to >= facts.today:
        return None
    return f"营业执照营业期限已于 {licence.valid_to.isoformat()} 届满"


def project_revoked(project: ProjectApproval, facts: Facts) -> str | None:
    if project.status is ProjectStatus.VALID:
        return None
    return f"项目 {project.project_code} 的批文（{project.document_no}）已撤销"


def project_owner_mismatch(project: ProjectApproval, facts: Facts) -> str | None:
    applicant = facts.applicant.credential_no
    if project.owner_uscc == applicant:
        return None
    return f"项目单位统一社会信用代码 {project.owner_uscc} 与申请人 {applicant} 不一致"


def name_mismatch(project: ProjectApproval, facts: Facts) -> str | None:
    """The owner is the applicant, but the platform knows it by another name than its licence."""
    licence = facts.record(EvidenceKind.LICENCE, BusinessLicence)
    if (
        project.owner_uscc != facts.applicant.credential_no
        or licence is None
        or not project.owner_name
        or project.owner_name == licence.name
    ):
        return None
    return f"项目单位名称“{project.owner_name}”与营业执照名称“{licence.name}”不一致"


def _project_code(request: ApplicationRequest) -> str:
    assert request.project_code is not None, "project evidence is needed only with a code"
    return request.project_code


LICENCE: EvidenceKindRule[BusinessLicence] = EvidenceKindRule(
    kind=EvidenceKind.LICENCE,
    model=BusinessLicence,
    source_platform="电子证照库 (electronic licence library)",
    needed=lambda request: request.applicant.credential_type is CredentialType.USCC,
    subject=lambda request: request.applicant.credential_no,
    not_found=lambda applicant: (
        f"电子证照库中未找到统一社会信用代码 {applicant.credential_no} 的营业执照"
    ),
    provenance=lambda licence: Provenance(
        issuing_authority=licence.issuing_authority,
        document_no=licence.licence_no,
        issued_on=licence.issued_on,
        valid_from=licence.valid_from,
        valid_to=licence.valid_to,
    ),
    checks={"licence_not_active": licence_not_active, "licence_expired": licence_expired},
)

PROJECT: EvidenceKindRule[ProjectApproval] = EvidenceKindRule(
    kind=EvidenceKind.PROJECT,
    model=ProjectApproval,
    source_platform="投资项目在线审批监管平台 (investment project approval platform)",
    needed=lambda request: bool(request.project_code),
    subject=_project_code,
    not_found=lambda applicant: "投资项目在线审批监管平台中未找到该项目代码的批文",
    provenance=lambda project: Provenance(
        issuing_authority=project.issuing_authority,
        document_no=project.document_no,
        issued_on=project.approved_on,
        valid_from=project.approved_on,
        valid_to=None,
    ),
    checks={
        "project_revoked": project_revoked,
        "project_owner_mismatch": project_owner_mismatch,
        "name_mismatch": name_mismatch,
    },
)

EVIDENCE_KINDS: dict[EvidenceKind, EvidenceKindRule[Any]] = {
    rule.kind: rule for rule in (LICENCE, PROJECT)
}
"""Every kind of evidence, in the order its reasons are given."""


def required_evidence(request: ApplicationRequest) -> list[EvidenceKind]:
    """Evidence rule table: a licence for every firm; a project approval where a code is given."""
    return [kind for kind, rule in EVIDENCE_KINDS.items() if rule.needed(request)]


def subject_of(kind: EvidenceKind, request: ApplicationRequest) -> str:
    """What the evidence of ``kind`` is about, for this request."""
    return EVIDENCE_KINDS[kind].subject(request)


def record_of(kind: EvidenceKind, fields: Mapping[str, Any]) -> BaseModel:
    """A stored record of ``kind`` read back into its canonical model."""
    record: BaseModel = EVIDENCE_KINDS[kind].parse(fields)
    return record


# --- the cross-checks --------------------------------------------------------


def today_in_china() -> date:
    return datetime.now(CHINA_STANDARD_TIME).date()


def review(
    applicant: Applicant,
    records: Mapping[EvidenceKind, BaseModel],
    missing: Iterable[EvidenceKind] = (),
    *,
    today: date | None = None,
) -> list[Reason]:
    """Cross-check the evidence; each reason is one a clerk can read and act on.

    ``records`` are the fetched records by kind, ``missing`` the kinds the
    platforms do not hold; ``today`` (default: today in China) decides expiry.
    An empty list means the dossier is ready.
    """
    reasons = [
        Reason(
            code=f"{kind.value}_not_found",
            message=EVIDENCE_KINDS[kind].not_found(applicant),
            evidence=kind,
        )
        for kind in missing
    ]
    facts = Facts(applicant, records, today or today_in_china())
    for kind, rule in EVIDENCE_KINDS.items():
        record = records.get(kind)
        if record is not None:
            reasons.extend(rule.review(record, facts))
    return reasons
