"""Text the connector accepts: no NUL or other control characters, and a length its columns hold.

One rule for the API's bodies and the platforms' callbacks alike, stated in the
JSON Schema (``pattern``, ``maxLength``) as well as enforced.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

#: No C0 control character (NUL, line breaks, tabs, escape, ...) and no DEL.
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"


def text(max_length: int, *, min_length: int = 1, **field: Any) -> Any:
    """A ``Field`` for one line of text of at most ``max_length`` characters."""
    return Field(min_length=min_length, max_length=max_length, pattern=PRINTABLE, **field)


def optional_text(max_length: int, **field: Any) -> Any:
    """Like ``text``, for an optional field (default None)."""
    return Field(None, min_length=1, max_length=max_length, pattern=PRINTABLE, **field)


_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _iso_text(value: Any) -> Any:
    """Dates and times come as ISO 8601 text (not numbers, nor digits read as Unix times)."""
    if isinstance(value, date) or (isinstance(value, str) and _ISO.match(value)):
        return value
    raise ValueError("expected an ISO 8601 date or date-time, e.g. 2026-11-26T10:00:00+08:00")


#: A date as ``YYYY-MM-DD`` text only.
IsoDate = Annotated[date, BeforeValidator(_iso_text)]
#: A date and time as ISO 8601 text only.
IsoDateTime = Annotated[datetime, BeforeValidator(_iso_text)]
