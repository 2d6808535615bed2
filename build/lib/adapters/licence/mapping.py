"""The 电子证照库's names and code tables, and their translation to canonical models.

This is the only module that knows the platform's field names (upper-case
pinyin initials) and its 登记状态 codes; its fault codes are in ``errors.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from pathlib import Path

from pydantic import ValidationError

from adapters.soap import UnexpectedResponse
from schemas.evidence import BusinessLicence, RegistrationStatus
from schemas.seed import SeedLicence

WSDL_PATH = Path(__file__).with_name("licence.wsdl")
NAMESPACE = "http://dzzz.sh.gov.cn/ws/licence"
BINDING = f"{{{NAMESPACE}}}LicenceSoapBinding"
SERVICE_PATH = "/ws/licence"
OPERATION = "QueryLicence"
RESPONSE = "QueryLicenceResponse"

BUSINESS_LICENCE_TYPE = "YYZZ"
"""ZZLXDM 证照类型代码 of the 营业执照."""

DEFAULT_ISSUING_AUTHORITY = "上海市市场监督管理局"

# 登记状态: platform code ↔ word on the licence ↔ canonical meaning.
STATUS_WORDS: dict[str, str] = {
    "01": "存续",
    "02": "在业",
    "03": "吊销",
    "04": "注销",
    "05": "迁出",
}
STATUS_CODES: dict[str, str] = {word: code for code, word in STATUS_WORDS.items()}
REGISTRATION_STATUS: dict[str, RegistrationStatus] = {
    "存续": RegistrationStatus.ACTIVE,
    "在业": RegistrationStatus.ACTIVE,
    "吊销": RegistrationStatus.REVOKED,
    "注销": RegistrationStatus.CANCELLED,
    "迁出": RegistrationStatus.MOVED_OUT,
}

PERMANENT_WORD = "长期"
"""营业期限至 of a licence without an end date."""


# --- request ---------------------------------------------------------------


def licence_request(uscc: str, *, system: str, purpose: str, serial: str) -> dict[str, str]:
    """QueryLicence parameters: the credential plus who asks, why, and under which serial."""
    return {"TYSHXYDM": uscc, "QQXT": system, "QQYY": purpose, "QQLSH": serial}


# --- response --------------------------------------------------------------


def licence_from_response(fields: object, *, uscc: str) -> BusinessLicence:
    """QueryLicenceResponse (as a mapping) → BusinessLicence; ``uscc`` is what was asked for."""
    if not isinstance(fields, Mapping):
        raise UnexpectedResponse(f"no QueryLicenceResponse in the answer ({type(fields).__name__})")
    if fields.get("TYSHXYDM") != uscc:
        raise UnexpectedResponse(f"asked for {uscc}, answered {fields.get('TYSHXYDM')}")
    if fields.get("ZZLXDM") != BUSINESS_LICENCE_TYPE:
        raise UnexpectedResponse(f"licence type {fields.get('ZZLXDM')!r} is not 营业执照")
    code = fields.get("DJZT")
    word = STATUS_WORDS.get(code) if isinstance(code, str) else None
    if word is None:
        raise UnexpectedResponse(f"unknown 登记状态 code {code!r}")
    try:
        return BusinessLicence.model_validate(
            {
                "uscc": uscc,
                "name": fields.get("QYMC"),
                "legal_representative": fields.get("FDDBR"),
                "address": fields.get("ZS"),
                "registration_status": REGISTRATION_STATUS[word],
                "licence_no": fields.get("ZZBH"),
                "issuing_authority": fields.get("FZJG"),
                "issued_on": fields.get("FZRQ"),
                "valid_from": fields.get("YYQXZ"),
                "valid_to": _valid_to(fields.get("YYQXZH")),
            }
        )
    except ValidationError as exc:
        raise UnexpectedResponse(f"licence fields do not fit: {exc}") from exc


def _valid_to(value: object) -> date | None:
    if value is None or isinstance(value, date):
        return value
    text = str(value).strip()
    if text in ("", PERMANENT_WORD):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise UnexpectedResponse(f"营业期限至 {text!r} is not a date") from exc


# --- simulator side --------------------------------------------------------


def response_fields(licence: SeedLicence) -> list[tuple[str, str]]:
    """A seed licence as QueryLicenceResponse fields, in schema order.

    Optional seed fields get deterministic defaults: the licence number is
    derived from the credential, the issuing authority is the city's market
    regulator, and the issue date is the start of the business term.
    """
    fields = [
        ("TYSHXYDM", licence.uscc),
        ("QYMC", licence.name),
        ("FDDBR", licence.legal_representative),
        ("ZS", licence.address),
        ("DJZT", STATUS_CODES[licence.status]),
        ("ZZBH", licence.licence_no or f"{BUSINESS_LICENCE_TYPE}{licence.uscc}"),
        ("ZZLXDM", BUSINESS_LICENCE_TYPE),
        ("FZJG", licence.issuing_authority or DEFAULT_ISSUING_AUTHORITY),
        ("FZRQ", (licence.issued_on or licence.valid_from).isoformat()),
        ("YYQXZ", licence.valid_from.isoformat()),
    ]
    if licence.valid_to is not None:
        fields.append(("YYQXZH", licence.valid_to.isoformat()))
    return fields
