"""The connector's error tree.

Every failure that crosses a module boundary is one of these. Library
exceptions (zeep, httpx, aiokafka, SQLAlchemy) are translated into them at the
adapter boundary; only ``gateway/`` maps them to HTTP status codes::

    ConnectorError
    ├── TransientError            may succeed if tried again later
    │   ├── PlatformUnavailable   timeout, connection refused, 5xx, circuit open
    │   ├── BrokerUnavailable     Kafka did not acknowledge
    │   └── StoreUnavailable      the database did not answer
    └── PermanentError            the same request will fail the same way again
        ├── InvalidInput          the caller's data is wrong (field + reason)
        ├── NotFound              the record does not exist (here or on a platform)
        ├── Conflict              the request contradicts an earlier one
        ├── Unauthorized          missing or bad credentials, bad signature
        └── PlatformRejected      a platform refused the request (code + detail)

Retries (tenacity) are decided by type: ``TransientError`` only.

``FieldError`` stands apart: a ``ValueError`` that the mappings raise when a
platform's body or a canonical model cannot be read or written, carrying the
field and the reason as attributes; the boundary that catches it turns it into
``InvalidInput`` (or a platform's 4000) without reading its message.
"""

from __future__ import annotations

from typing import Any


class ConnectorError(Exception):
    """Base of every error the connector raises on purpose."""

    code: str = "connector_error"

    def __init__(self, detail: str, *, code: str | None = None, **context: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.context = context


class TransientError(ConnectorError):
    """May succeed later: retry with back-off."""

    code = "transient"


class PlatformUnavailable(TransientError):
    """A government or utility platform timed out, refused, or answered 5xx."""

    code = "platform_unavailable"

    def __init__(self, platform: str, detail: str, **context: Any) -> None:
        super().__init__(f"{platform}: {detail}", platform=platform, **context)
        self.platform = platform


class BrokerUnavailable(TransientError):
    """Kafka did not acknowledge."""

    code = "broker_unavailable"


class StoreUnavailable(TransientError):
    """The database did not answer."""

    code = "store_unavailable"


class PermanentError(ConnectorError):
    """Will fail the same way again: never retried."""

    code = "permanent"


class InvalidInput(PermanentError):
    """The caller's data is wrong; ``field`` names where (dotted path)."""

    code = "invalid_input"

    def __init__(self, field: str, reason: str, **context: Any) -> None:
        super().__init__(f"{field}: {reason}", field=field, **context)
        self.field = field
        self.reason = reason


class FieldError(ValueError):
    """A value that cannot be read or written, with the ``field`` it is in and why.

    A ``ValueError`` so that pydantic validators may raise it (pydantic keeps it
    as ``ctx["error"]``); its message is ``"field: reason"`` for people only.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NotFound(PermanentError):
    """The record does not exist."""

    code = "not_found"


class Conflict(PermanentError):
    """The request contradicts an earlier one (e.g. an idempotency key reused)."""

    code = "conflict"


class Unauthorized(PermanentError):
    """Missing or bad credentials or signature."""

    code = "unauthorized"


class PlatformRejected(PermanentError):
    """A platform refused the request for a reason that retrying will not change."""

    code = "platform_rejected"

    def __init__(
        self, platform: str, detail: str, *, platform_code: str = "", **context: Any
    ) -> None:
        super().__init__(f"{platform}: {detail}", platform=platform, **context)
        self.platform = platform
        self.platform_code = platform_code
