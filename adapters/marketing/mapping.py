"""The marketing system's names and codes, and the translation of ``MarketingNotice``.

The only module that knows the notice service's field names and its result codes
(JG); its fault codes are in ``errors.py``, the interface is ``marketing.wsdl``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from adapters.soap import UnexpectedResponse
from schemas.cases import MarketingNotice
from schemas.chinatime import in_china_time
from schemas.errors import FieldError

WSDL_PATH = Path(__file__).with_name("marketing.wsdl")
NAMESPACE = "http://yx.sgcc.sh/ws/notice"
BINDING = f"{{{NAMESPACE}}}NoticeSoapBinding"
SERVICE_PATH = "/ws/notice"
OPERATION = "ReceiveNotice"
RESPONSE = "ReceiveNoticeResponse"
FIELDS = ("TZID", "TZLX", "SQBH", "FSSJ", "NR")
"""ReceiveNotice's elements, in schema order."""

# JG 处理结果.
RECEIVED = "0"  # 已接收
DUPLICATE = "1"  # 重复通知（已接收）
REJECTED = "2"  # 拒收
RESULT_MESSAGES: dict[str, str] = {RECEIVED: "已接收", DUPLICATE: "重复通知，已接收"}


class Receipt(NamedTuple):
    """A ReceiveNoticeResponse: the result code (JG) and its message (XX)."""

    code: str
    message: str


def notice_request(notice: MarketingNotice) -> dict[str, str]:
    """ReceiveNotice parameters for one notice.

    ``FSSJ`` is the notice time in China Standard Time with its offset; ``NR``
    the payload as a compact JSON object. Raises ``ValueError`` naming the
    canonical field when the notice cannot be written.
    """
    payload = notice.model_dump(mode="json")["payload"]
    return {
        "TZID": notice.event_id,
        "TZLX": notice.kind,
        "SQBH": notice.application_id,
        "FSSJ": in_china_time(notice.occurred_at, "occurred_at").isoformat(),
        "NR": json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":")),
    }


def receipt_from_response(fields: object) -> Receipt:
    """ReceiveNoticeResponse (as a mapping) → ``Receipt``."""
    if not isinstance(fields, Mapping):
        raise UnexpectedResponse(f"no {RESPONSE} in the answer ({type(fields).__name__})")
    code = fields.get("JG")
    if code not in (RECEIVED, DUPLICATE, REJECTED):
        raise UnexpectedResponse(f"unknown 处理结果 JG {code!r}")
    return Receipt(code, str(fields.get("XX") or ""))


def parse_time(text: str) -> datetime:
    """An FSSJ value; ``ValueError`` if it is not an xsd:dateTime with an offset."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.utcoffset() is None:
        raise FieldError("FSSJ", f"no UTC offset in {text!r}")
    return moment
