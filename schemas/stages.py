"""The stages of a case (办件环节), a leaf module: the clock and the stage rules both read it."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """Stages the marketing system reports and 一网通办 shows the customer."""

    ACCEPTED = "accepted"  # 申请受理
    SURVEY_AND_PLAN = "survey_and_plan"  # 现场勘查及供电方案答复
    EXTERNAL_WORKS = "external_works"  # 外部工程实施
    METERING_AND_CONNECTION = "metering_and_connection"  # 装表接电
    COMPLETED = "completed"  # 办结
    SUPPLEMENT_REQUESTED = "supplement_requested"  # 补正
    REFUSED = "refused"  # 不予受理
