"""Structured JSON logs with the request id and trace ids, and personal data masked.

Resident ID numbers (居民身份证号) and mobile numbers are masked in every log
line, whatever logger wrote it, so a careless ``log.info(body)`` cannot leak them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from gateway.tracing import current_ids

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

_DIGIT = "0-9\uff10-\uff19"  # ASCII and full-width digits
_SEP = r"[ \-\u2010-\u2015\uff0d]"  # space, hyphens, dashes, full-width hyphen
#: A run of 15 to 18 digits, maybe split by single spaces or hyphens, maybe ending in X:
#: a candidate resident ID, checked by ``_masked_id`` before it is masked.
_ID_CANDIDATE = re.compile(
    rf"(?<![{_DIGIT}A-Za-z\uff21-\uff3a\uff41-\uff5a])"
    rf"(?:[{_DIGIT}]{_SEP}?){{14,17}}[{_DIGIT}Xx\uff38\uff58]"
    rf"(?![{_DIGIT}A-Za-z\uff21-\uff3a\uff41-\uff5a])"
)
_ID_18 = re.compile(
    r"[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dX]"
)
_ID_15 = re.compile(r"[1-9]\d{5}\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}")
#: A mainland mobile number, maybe with +86 / 0086 and single spaces or hyphens.
_MOBILE = re.compile(
    rf"(?<![{_DIGIT}+])((?:(?:\+|\uff0b|00)86{_SEP}?)?)"
    rf"([1\uff11]{_SEP}?[3-9\uff13-\uff19](?:{_SEP}?[{_DIGIT}]){{9}})(?![{_DIGIT}])"
)
_FULL_WIDTH = str.maketrans("０１２３４５６７８９Ｘｘx", "0123456789XXX")
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _plain(text: str) -> str:
    """Digits only (full-width made ASCII, separators dropped), X upper case."""
    return re.sub(_SEP, "", text).translate(_FULL_WIDTH)


def _masked_id(match: re.Match[str]) -> str:
    number = _plain(match[0])
    if _ID_18.fullmatch(number) or _ID_15.fullmatch(number):
        return f"{number[:6]}{'*' * (len(number) - 7)}{number[-1]}"
    return match[0]


def _masked_mobile(match: re.Match[str]) -> str:
    number = _plain(match[2])
    if len(number) != 11 or number[1] not in "3456789":
        return match[0]
    return f"{match[1]}{number[:3]}****{number[-4:]}"


def mask(text: str) -> str:
    """Mask resident ID numbers (18 and 15 digits, spaced, hyphenated or full-width: keep
    the division and the check character) and mobile numbers (keep the first 3 and last 4).
    """
    text = _ID_CANDIDATE.sub(_masked_id, text)
    return _MOBILE.sub(_masked_mobile, text)


class MaskFilter(logging.Filter):
    """Masks a record before any handler formats it: message, arguments and traceback.

    Installed on every handler by ``configure_logging`` (uvicorn's loggers included),
    so a handler with a formatter of its own cannot print personal data either.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if rid := request_id.get():
            entry["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_text:
            entry["exc"] = record.exc_text
        elif record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        line = mask(json.dumps(entry, ensure_ascii=False, default=str))
        if ids := current_ids():
            # Added after masking: a hex id may hold a digit run shaped like a mobile number.
            line = f'{line[:-1]}, "trace_id": "{ids[0]}", "span_id": "{ids[1]}"}}'
        return line


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr, masked, from every logger (uvicorn's included)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    install_mask()
    logging.getLogger("aiokafka").setLevel(max(logging.getLevelName(level), logging.WARNING))


def install_mask() -> None:
    """Mask every log record as it is made, whatever logger and handler it goes to.

    A record factory masks message, traceback and stack before any handler sees
    them, so handlers configured later (uvicorn's ``dictConfig``) cannot print
    personal data either; the handlers known now also get ``MaskFilter``.
    Idempotent.
    """
    previous = logging.getLogRecordFactory()
    if not getattr(previous, "masks", False):
        mask_record = MaskFilter().filter

        def masked_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            mask_record(record)
            return record

        masked_record.masks = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(masked_record)
    loggers: list[logging.Logger | logging.PlaceHolder] = [logging.getLogger()]
    loggers += list(logging.Logger.manager.loggerDict.values())
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if not any(isinstance(f, MaskFilter) for f in handler.filters):
                handler.addFilter(MaskFilter())
