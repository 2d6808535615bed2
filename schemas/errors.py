"""The connector's error tree.

Every failure that crosses a module boundary is one of these. Library
exceptions (zeep, httpx, aiokafka, SQLAlchemy) are translated into them at the
adapter boundary; only ``gateway/`` maps them to HTTP status codes::

    ConnectorError
    ├── TransientError            may succeed if tried again later
    │   ├── PlatformUnavailable   timeout, connection refused, 5xx, circuit open
    │   ├── BrokerUnavailable     Kafka did not acknowledge
    │   ├── StoreUnavailable      the database did not answer
    │   ├── Overloaded            this process is at its limit of requests in flight
    │   ├── RateLimited           a caller is over its rate (retry after ``retry_after_s``)
    │   └── RequestTimeout        the caller sent its request too slowly
    └── PermanentError            the same request will fail the same way again
        ├── InvalidInput          the caller's data is wrong (field + reason)
        ├── NotFound              the record does not exist (here or on a platform)
        ├── Conflict              the request contradicts an earlier one
        │   ├── StageOutOfOrder   a stage report out of the procedures' order (current_stage)
        │   └── PushOutOfOrder    a platform holds fewer stages than a push needs (last_seq)
        ├── Unauthorized          missing or bad credentials, bad signature
        ├── Forbidden             authenticated, but the client lacks the scope
        ├── PayloadTooLarge       a request body over its route's limit
        ├── UnsupportedMediaType  a request body that is not JSON
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
        self.reason = detail  # without the platform's name, e.g. "timed out (ReadTimeout)"


class BrokerUnavailable(TransientError):
    """Kafka did not acknowledge."""

    code = "broker_unavailable"


class StoreUnavailable(TransientError):
    """The database did not answer, or no pooled connection was free in time."""

    code = "store_unavailable"


class RateLimited(TransientError):
    """The caller is over its rate; it may try again after ``retry_after_s`` seconds."""

    code = "rate_limited"

    def __init__(self, detail: str, *, retry_after_s: int, **context: Any) -> None:
        super().__init__(detail, retry_after_s=retry_after_s, **context)
        self.retry_after_s = retry_after_s


class RequestTimeout(TransientError):
    """The caller did not send its request (headers or body) in time."""

    code = "request_timeout"


class Overloaded(TransientError):
    """This process is handling as many requests as it is configured to."""

    code = "overloaded"


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


class StageOutOfOrder(Conflict):
    """A stage report that does not follow the application's procedures.

    ``current_stage`` is where the application stands (None before the first
    report); ``expected`` the stages that may come next.
    """

    code = "stage_out_of_order"

    def __init__(
        self, detail: str, *, current_stage: str | None, expected: list[str], **context: Any
    ) -> None:
        super().__init__(detail, current_stage=current_stage, expected=expected, **context)
        self.current_stage = current_stage
        self.expected = expected


class PushOutOfOrder(Conflict):
    """A platform refused a push because it has not seen the ones before it.

    ``last_seq`` is the last sequence number the platform accepted for the case.
    """

    code = "out_of_order"

    def __init__(self, platform: str, detail: str, *, last_seq: int, **context: Any) -> None:
        super().__init__(f"{platform}: {detail}", platform=platform, last_seq=last_seq, **context)
        self.platform = platform
        self.last_seq = last_seq


class Unauthorized(PermanentError):
    """Missing or bad credentials or signature."""

    code = "unauthorized"


class Forbidden(PermanentError):
    """Authenticated, but the client's scopes do not include what the operation needs."""

    code = "forbidden"


class PayloadTooLarge(PermanentError):
    """The request body is larger than the route accepts."""

    code = "payload_too_large"


class UnsupportedMediaType(PermanentError):
    """The request body is not in a media type the route reads (JSON)."""

    code = "unsupported_media_type"


class PlatformRejected(PermanentError):
    """A platform refused the request for a reason that retrying will not change."""

    code = "platform_rejected"

    def __init__(
        self, platform: str, detail: str, *, platform_code: str = "", **context: Any
    ) -> None:
        super().__init__(f"{platform}: {detail}", platform=platform, **context)
        self.platform = platform
        self.platform_code = platform_code
