"""China Standard Time (UTC+8, 北京时间), the clock of every platform and of the rules.

The one place that knows the offset and the platforms' ``yyyy-MM-dd HH:mm:ss``
format. A naive datetime is refused everywhere: it could be any clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from schemas.errors import FieldError

CHINA_STANDARD_TIME = timezone(timedelta(hours=8), "CST")
PLATFORM_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
"""How the platforms write a time: China Standard Time without an offset."""


def in_china_time(moment: datetime, field: str) -> datetime:
    """``moment`` on the China clock; ``FieldError`` naming ``field`` if it is naive."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise FieldError(field, "needs a time zone")
    return moment.astimezone(CHINA_STANDARD_TIME)


def format_platform_time(moment: datetime, field: str) -> str:
    """An aware datetime as the platforms write it (yyyy-MM-dd HH:mm:ss, China time)."""
    return in_china_time(moment, field).strftime(PLATFORM_TIME_FORMAT)


def parse_platform_time(text: object, field: str) -> datetime:
    """A platform time as an aware datetime; ``FieldError`` naming ``field`` if unreadable."""
    if not isinstance(text, str) or not text.strip():
        raise FieldError(field, "missing or not a string")
    try:
        return datetime.strptime(text, PLATFORM_TIME_FORMAT).replace(tzinfo=CHINA_STANDARD_TIME)
    except ValueError:
        raise FieldError(field, f"not yyyy-MM-dd HH:mm:ss: {text!r}") from None
